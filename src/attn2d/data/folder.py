"""Image folders: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``PATH/val/``).

The layout is read by :class:`torchvision.datasets.ImageFolder` (class folders in sorted
order, files with an image extension); images are decoded by :func:`torchvision.io.decode_image`
(PIL for the few formats it does not read: BMP, PPM/PGM, TIFF), converted to grey or RGB,
and resized: shorter side to ``image_size``, then the centre square (a no-op for images of
that size already).

Loading a folder probes every file's header (size and colour mode, so that the default size
and channels are known before decoding), then decodes every image once: kept in memory when
it fits, or only checked and counted for the statistics when the images will be streamed.
Unreadable files are refused or skipped (``bad_images``) before training starts.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset

from .._base.errors import Attn2dError
from .._base.log import plural
from .memory import available_memory, is_out_of_memory, out_of_memory
from .split import Loader, Split, _as_list

log = logging.getLogger(__name__)

__all__ = ["ChannelStats", "FolderImages", "FolderLayout", "read_folder", "scan_folder"]

BAD_IMAGES = ("error", "skip")
# What torchvision.io.decode_image reads; other extensions ImageFolder lists go through PIL.
_TORCHVISION_FORMATS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".heic")
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


# Pixels converted to float64 at a time by ChannelStats (32 MiB): large images and large
# batches alike are counted in bounded memory.
_STATS_CHUNK = 1 << 22


class ChannelStats:
    """Per-channel mean and population standard deviation of uint8 images, in [0, 1].

    Sums are float64 over integer pixel values: exact for any realistic dataset size.
    """

    def __init__(self) -> None:
        self._sum: Tensor | None = None
        self._squares: Tensor | None = None
        self._count = 0

    def add(self, images: Tensor) -> None:
        """Count a (B, C, H, W) uint8 batch, a bounded chunk of pixels at a time."""
        b, c, h, w = images.shape
        if c * h * w <= _STATS_CHUNK:
            step = max(1, _STATS_CHUNK // max(1, c * h * w))
            parts = (images[i : i + step] for i in range(0, b, step))
        else:  # one image is larger than a chunk: a band of rows at a time
            rows = max(1, _STATS_CHUNK // (c * w))
            parts = (images[i : i + 1, :, r : r + rows] for i in range(b)
                     for r in range(0, h, rows))
        for part in parts:
            x = part.double()
            total, squares = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
            if self._sum is None:
                self._sum, self._squares = total, squares
            else:
                self._sum += total
                self._squares += squares
        self._count += b * h * w

    def add_tensor(self, images: Tensor) -> None:
        """Count a large (N, C, H, W) uint8 tensor (as :meth:`add`, which bounds memory)."""
        self.add(images)

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``; a channel with no variation gets std 1 (left unscaled)."""
        if self._sum is None:
            raise Attn2dError("attn2d.data: expected images to compute mean and std, got none")
        mean = self._sum / self._count
        var = (self._squares / self._count - mean * mean).clamp(min=0)
        std = torch.where(var > 0, var.sqrt() / 255, torch.ones_like(var))
        return tuple((mean / 255).tolist()), tuple(std.tolist())


def _read_mode(channels: int) -> torchvision.io.ImageReadMode:
    return torchvision.io.ImageReadMode.GRAY if channels == 1 else torchvision.io.ImageReadMode.RGB


def decode_file(path: str, size: int, channels: int) -> Tensor:
    """The image at ``path`` as uint8 (channels, size, size)."""
    from torchvision.transforms.v2 import functional as TF

    if Path(path).suffix.lower() in _TORCHVISION_FORMATS:
        with warnings.catch_warnings():
            # torchvision 0.29 announces a move of its decoders to TorchCodec, once per call.
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            image = torchvision.io.decode_image(path, mode=_read_mode(channels))
    else:
        from PIL import Image

        with Image.open(path) as picture:
            image = TF.pil_to_tensor(picture.convert("L" if channels == 1 else "RGB"))
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = TF.to_dtype(image, torch.uint8, scale=True)
    if image.shape[-2:] != (size, size):
        image = TF.center_crop(TF.resize(image, [size], antialias=True), [size, size])
    return image


@dataclass(frozen=True)
class _Failure:
    """What a careful read returns in place of an image it could not decode (picklable, so
    it crosses from a DataLoader worker as one line, not a worker's traceback)."""

    reason: str
    memory: bool  # the allocation failed: memory ran out, the file may be fine


class FolderImages(Dataset):
    """``(uint8 image (C, S, S), label)`` of a list of ``(path, label)`` samples.

    Args:
        samples: ``(path, label)`` pairs.
        size: side S of the square images returned.
        channels: 1 (grey) or 3 (RGB).
        careful: return a failure (its reason, and whether memory ran out) in place of the
            image instead of raising (for the loading pass that finds unreadable files).
    """

    def __init__(self, samples: list[tuple[str, int]], size: int, channels: int,
                 careful: bool = False) -> None:
        self.samples = samples
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.size = size
        self.channels = channels
        self.careful = careful

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor | _Failure, int]:
        path, label = self.samples[index]
        try:
            return decode_file(path, self.size, self.channels), label
        except Exception as error:
            memory = is_out_of_memory(error)
            if self.careful:
                first = (str(error).strip().splitlines() or [""])[0][:200]
                return _Failure(f"{type(error).__name__}: {first}".strip(), memory), label
            if memory:
                raise out_of_memory(path, self.size, self.channels * self.size ** 2,
                                    available_memory()) from None
            raise Attn2dError(f"attn2d.data: expected a readable image, got {path} "
                              f"({type(error).__name__}: {error})") from error


@dataclass(frozen=True, eq=False)  # one object per scan (cached), hashed by identity
class FolderLayout:
    """What the headers of a folder dataset say: classes, files, common size and channels."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    test_folder: str
    image_size: int
    channels: int


class _Refusals:
    """Unreadable files: refused at once (``"error"``) or collected and skipped (``"skip"``)."""

    def __init__(self, bad_images: str) -> None:
        if bad_images not in BAD_IMAGES:
            raise Attn2dError(f"attn2d.data: expected bad_images in {BAD_IMAGES}, got "
                              f"{bad_images!r}")
        self.skip = bad_images == "skip"
        self.skipped: list[str] = []

    def __call__(self, path: str, reason: str) -> None:
        if not self.skip:
            raise Attn2dError(f"attn2d.data: expected a readable image, got {path} ({reason}); "
                              "pass --bad-images skip to leave such files out")
        self.skipped.append(path)

    def warn(self) -> None:
        if self.skipped:
            log.warning("skipped %s, e.g. %s", plural(len(self.skipped), "unreadable image"),
                        self.skipped[0])


class _SplitFolder(torchvision.datasets.ImageFolder):
    """ImageFolder whose labels are the training split's class indices (a test folder may
    lack a class; it may not add one)."""

    def __init__(self, root: Path, train_classes: tuple[str, ...] | None) -> None:
        self.train_classes = train_classes
        super().__init__(str(root), loader=decode_file, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        try:
            present, _ = super().find_classes(directory)
        except FileNotFoundError:
            raise Attn2dError(f"attn2d.data: expected class folders in {directory}, got none"
                              ) from None
        if self.train_classes is None:
            return present, {name: i for i, name in enumerate(present)}
        unknown = [name for name in present if name not in self.train_classes]
        if unknown:
            raise Attn2dError(f"attn2d.data: expected the classes of {directory} among those "
                              f"of the training folder, got {unknown[0]!r} only in {directory}")
        return list(self.train_classes), {name: self.train_classes.index(name)
                                          for name in present}


def _read_split(root: Path, train_classes: tuple[str, ...] | None) -> _SplitFolder:
    split = _SplitFolder(root, train_classes)
    counts = Counter(label for _, label in split.samples)
    for name, label in split.class_to_idx.items():
        if counts[label] == 0:
            raise Attn2dError(f"attn2d.data: expected images in every class folder, got none "
                              f"in {root / name} (image files end in "
                              f"{', '.join(torchvision.datasets.folder.IMG_EXTENSIONS)})")
    return split


def _probe(path: str) -> tuple[tuple[int, int], bool]:
    from PIL import Image

    with Image.open(path) as picture:  # reads the header only
        return picture.size, picture.mode in _GREY_MODES


_SCANS: dict[tuple[str, int | None, int | None, str], FolderLayout] = {}


def scan_folder(root: Path, *, image_size: int | None = None, channels: int | None = None,
                bad_images: str = "error") -> FolderLayout:
    """Read a folder dataset's layout and image headers (once per process and options).

    Default ``image_size``: the images' side when every image has the same square size
    (else required). Default ``channels``: 1 when every image is grey, else 3.
    """
    key = (str(root.resolve()), image_size, channels, bad_images)
    if key in _SCANS:
        return _SCANS[key]
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise Attn2dError(f"attn2d.data: expected a folder dataset at {root}, got {what}")
    if not (root / "train").is_dir():
        raise Attn2dError(f"attn2d.data: expected {root / 'train'}/<class>/ image folders, got "
                          f"no train folder in {root}")
    test_folder = next((name for name in ("test", "val") if (root / name).is_dir()), None)
    if test_folder is None:
        raise Attn2dError(f"attn2d.data: expected {root / 'test'} or {root / 'val'} beside "
                          f"{root / 'train'}, got neither")
    refusals = _Refusals(bad_images)
    train = _read_split(root / "train", None)
    test = _read_split(root / test_folder, tuple(train.classes))
    sizes: Counter[tuple[int, int]] = Counter()
    all_grey = True
    kept: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for part, samples in (("train", train.samples), ("test", test.samples)):
        for path, label in samples:
            try:
                size, grey = _probe(path)
            except Exception as error:
                refusals(path, f"{type(error).__name__}: {error}")
                continue
            sizes[size] += 1
            all_grey &= grey
            kept[part].append((path, label))
    refusals.warn()
    if image_size is None:
        if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            seen = ", ".join(f"{w}x{h}" for (w, h), _ in sizes.most_common(3))
            raise Attn2dError(f"attn2d.data: expected --image-size for {root}, whose images "
                              f"are not all one square size, got sizes {seen}")
        image_size = next(iter(sizes))[0]
    layout = FolderLayout(root, tuple(train.classes), kept["train"], kept["test"], test_folder,
                          image_size, channels if channels is not None else 1 if all_grey else 3)
    _SCANS[key] = layout
    return layout


# Decoded images held at once by the loading pass (beside the kept tensor): 64, or fewer
# when they are large, so that a large --image-size decodes in bounded memory.
_DECODE_BATCH, _DECODE_BUDGET = 64, 256 << 20


def _decode_pass(samples: list[tuple[str, int]], size: int, channels: int, keep: bool,
                 stats: ChannelStats | None, refusals: _Refusals, num_workers: int) -> Split:
    """Decode every image once: kept in a tensor when ``keep``, else only checked and counted.
    Unreadable files go to ``refusals``; running out of memory is said as such."""
    per_image = channels * size * size
    batch_size = max(1, min(_DECODE_BATCH, _DECODE_BUDGET // per_image))
    loader = Loader(FolderImages(samples, size, channels, careful=True), batch_size=batch_size,
                    num_workers=num_workers, collate_fn=_as_list)
    good: list[int] = []
    position = 0
    try:
        images = torch.empty((len(samples), channels, size, size), dtype=torch.uint8) \
            if keep else None
        for batch in loader:
            decoded = []
            for image, _ in batch:
                if isinstance(image, _Failure):
                    if image.memory:
                        raise out_of_memory(samples[position][0], size, per_image,
                                            available_memory())
                    refusals(samples[position][0], image.reason)
                else:
                    if images is not None:
                        images[len(good)] = image
                    decoded.append(image)
                    good.append(position)
                position += 1
            if stats is not None and decoded:
                stats.add(torch.stack(decoded))
    except Exception as error:
        if isinstance(error, Attn2dError) or not is_out_of_memory(error):
            raise
        where = samples[min(position, len(samples) - 1)][0]
        raise out_of_memory(where, size, per_image, available_memory()) from None
    kept = [samples[i] for i in good]
    targets = torch.tensor([label for _, label in kept], dtype=torch.int64)
    if images is not None:
        return Split(images=images[: len(good)], targets=targets)
    return Split(dataset=FolderImages(kept, size, channels), targets=targets)


def _check_memory(layout: FolderLayout, in_memory: bool) -> None:
    """Refuse, before decoding, a size whose images cannot fit (see :mod:`.memory`)."""
    available = available_memory()
    if available is None:
        return
    per_image = layout.channels * layout.image_size ** 2
    # An image, its resizing and its copy into a batch; a decoding batch of them.
    working = per_image * (2 + max(1, min(_DECODE_BATCH, _DECODE_BUDGET // per_image)))
    if in_memory:
        working += (len(layout.train) + len(layout.test)) * per_image
    if working > available:
        what = (f"the {len(layout.train) + len(layout.test)} images of {layout.root}"
                + (" into memory (--in-memory)" if in_memory else ""))
        raise out_of_memory(what, layout.image_size, per_image, available)


@dataclass(frozen=True)
class FolderData:
    """A decoded folder dataset: its splits and the statistics of its training images."""

    layout: FolderLayout
    train: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]


_READS: dict[tuple[FolderLayout, bool], FolderData] = {}


def read_folder(layout: FolderLayout, *, in_memory: bool, bad_images: str = "error",
                num_workers: int = 0) -> FolderData:
    """Decode every image of ``layout`` once (per process): into uint8 tensors when
    ``in_memory``, else checked and streamed later; mean and std of the training images."""
    key = (layout, in_memory)
    if key not in _READS:
        _check_memory(layout, in_memory)
        refusals = _Refusals(bad_images)
        stats = ChannelStats()
        train = _decode_pass(layout.train, layout.image_size, layout.channels, in_memory, stats,
                             refusals, num_workers)
        test = _decode_pass(layout.test, layout.image_size, layout.channels, in_memory, None,
                            refusals, num_workers)
        refusals.warn()
        missing = sorted(set(range(len(layout.classes))) - set(train.labels().tolist()))
        if missing:
            raise Attn2dError(f"attn2d.data: expected images in every class folder, got only "
                              f"unreadable ones in "
                              f"{layout.root / 'train' / layout.classes[missing[0]]}")
        mean, std = stats.result()
        _READS[key] = FolderData(layout, train, test, mean, std)
    return _READS[key]
