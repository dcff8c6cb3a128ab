"""The built-in datasets read from disk through torchvision, as uint8 (N, C, H, W) tensors.

Where the files live: ``data_dir`` if given, else ``$ATTN2D_DATA_DIR``, else ``./data``.

- CIFAR-10 / CIFAR-100: ``cifar-10-batches-py/`` / ``cifar-100-python/`` (the python
  pickle format, fine labels for CIFAR-100).
- SVHN: ``train_32x32.mat`` and ``test_32x32.mat`` in ``<data_dir>/svhn/`` (or directly in
  ``<data_dir>``, where torchvision downloads them); label 10 is digit 0, as torchvision reads
  it.
- Fashion-MNIST needs no network: when ``<data_dir>/FashionMNIST/raw`` has no copy, the
  original IDX files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``) are decompressed there. Debian recompresses them,
  so torchvision's checksum of the ``.gz`` files would fail; the decompressed files are what
  torchvision reads with ``download=False`` (it checks that they exist, not their checksum).

Local files are read as given, without torchvision's md5 checks (which only fit the
official archives, not a re-packed copy or a test's small files); ``download=True`` goes
through torchvision's checked download first.

Faults end in one line naming their cause: no network for ``--download``, and a data
folder that cannot be written where files must be unpacked or downloaded (read-only, no
permission, a file in the path, a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import http.client
import os
import shutil
import socket
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision
from torch import Tensor

from .._base.errors import Attn2dError
from .._base.io import atomic_path

__all__ = ["read_builtin", "system_fashion_mnist"]

# Debian's dataset-fashion-mnist installs the original IDX files here.
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def system_fashion_mnist() -> Path:
    """Where the system's Fashion-MNIST files are: ``$ATTN2D_FASHION_MNIST``, else Debian's
    folder (the tests point the variable at an empty place, so no test reads the system's
    copy unknowingly)."""
    return Path(os.environ.get("ATTN2D_FASHION_MNIST", SYSTEM_FASHION_MNIST))
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _unchecked(reader: type, **lists: Any) -> type:
    """A subclass of a torchvision CIFAR reader whose file lists carry no md5."""
    attributes = {
        "train_list": [[name, None] for name, _ in reader.train_list],
        "test_list": [[name, None] for name, _ in reader.test_list],
        "meta": {**reader.meta, "md5": None},
        **lists,
    }
    return type(f"_Local{reader.__name__}", (reader,), attributes)


_LocalCIFAR10 = _unchecked(torchvision.datasets.CIFAR10)
_LocalCIFAR100 = _unchecked(torchvision.datasets.CIFAR100)


class _LocalSVHN(torchvision.datasets.SVHN):
    """torchvision's SVHN reader with the md5 of each split left out (presence checked)."""

    split_list: ClassVar = {split: [url, name, None] for split, (url, name, _) in
                            torchvision.datasets.SVHN.split_list.items()}


def _missing(what: str, root: Path, how: str) -> Attn2dError:
    return Attn2dError(f"attn2d.data: expected {what} under {root}, got nothing there; {how}")


_DOWNLOAD_HINT = "run with --download (needs a network) or unpack {} there"


def _read_cifar(root: Path, train: bool, download: bool, checked: type, local: type,
                folder: str, archive: str) -> tuple[Tensor, Tensor]:
    if download:
        checked(str(root), train=train, download=True)
    try:
        ds = local(str(root), train=train, download=False)
    except RuntimeError:
        raise _missing(f"{folder}/", root, _DOWNLOAD_HINT.format(archive)) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def _read_cifar10(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    return _read_cifar(root, train, download, torchvision.datasets.CIFAR10, _LocalCIFAR10,
                       "cifar-10-batches-py", "cifar-10-python.tar.gz")


def _read_cifar100(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    return _read_cifar(root, train, download, torchvision.datasets.CIFAR100, _LocalCIFAR100,
                       "cifar-100-python", "cifar-100-python.tar.gz")


def _read_svhn(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    split = "train" if train else "test"
    name = f"{split}_32x32.mat"
    # torchvision keeps SVHN's files directly in its root; attn2d's own place is svhn/.
    folder = root if (root / name).is_file() else root / "svhn"
    if download:
        torchvision.datasets.SVHN(str(folder), split=split, download=True)
    try:
        ds = _LocalSVHN(str(folder), split=split, download=False)
    except RuntimeError:
        raise _missing(f"svhn/{name}", root, _DOWNLOAD_HINT.format(name)) from None
    return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).to(torch.int64)


def _install_fashion_mnist(raw: Path, source: Path) -> bool:
    """Decompress the IDX ``.gz`` files of ``source`` into ``raw``; False if absent."""
    if not all((source / f"{name}.gz").is_file() for name in _FASHION_FILES):
        return False
    for name in _FASHION_FILES:
        if (raw / name).is_file():
            continue
        with (gzip.open(source / f"{name}.gz", "rb") as src, atomic_path(raw / name) as tmp,
              open(tmp, "wb") as dst):
            shutil.copyfileobj(src, dst)
    return True


def _read_fashion_mnist(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    raw = root / "FashionMNIST" / "raw"
    present = all((raw / name).is_file() for name in _FASHION_FILES)
    system = system_fashion_mnist()
    if not present and not _install_fashion_mnist(raw, system) and not download:
        raise _missing("FashionMNIST/raw/ (IDX files)", root,
                       f"install Debian's dataset-fashion-mnist (apt-get install "
                       f"dataset-fashion-mnist, files in {system}) or run with --download "
                       "(needs a network)")
    ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=download)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)


# What a write into the data folder fails with when the folder is unusable (an OSError of
# another kind, e.g. EIO, keeps its traceback).
_UNUSABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                       errno.EISDIR, errno.ENOSPC, errno.EDQUOT})
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
                   socket.gaierror, http.client.HTTPException)


def _no_network(name: str, root: Path, reason: object) -> Attn2dError:
    return Attn2dError(f"attn2d.data: expected to download {name} into {root} (--download), "
                       f"got no network ({reason}); copy its files there and leave out "
                       "--download")


@contextlib.contextmanager
def _faults(name: str, root: Path, download: bool) -> Iterator[None]:
    """Network and data-folder faults of reading ``name`` under ``root`` as one line."""
    try:
        yield
    except urllib.error.HTTPError as err:  # a network, but the file is not served
        raise Attn2dError(f"attn2d.data: expected to download {name} into {root}, got HTTP "
                          f"error {err.code} ({err.reason}) from {err.url}") from None
    except _NETWORK_ERRORS as err:
        if not download:
            raise
        raise _no_network(name, root, getattr(err, "reason", None) or err) from None
    except RuntimeError as err:
        # torchvision's MNIST readers gather each mirror's URLError into one RuntimeError.
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        if not (download and lines and lines[0].startswith("Error downloading")):
            raise
        raise _no_network(name, root, lines[-1].strip("<>")) from None
    except OSError as err:
        if err.errno not in _UNUSABLE:
            raise
        where = f" at {err.filename}" if err.filename else ""
        raise Attn2dError(f"attn2d.data: expected --data-dir {root} to be a folder where "
                          f"{name} can be unpacked, got {err.strerror.lower()}{where}"
                          ) from None


_READERS = {"cifar10": _read_cifar10, "cifar100": _read_cifar100, "svhn": _read_svhn,
            "fashion-mnist": _read_fashion_mnist}
_CACHE: dict[tuple[str, str, bool], tuple[Tensor, Tensor]] = {}


def read_builtin(name: str, root: Path, train: bool, download: bool = False
                 ) -> tuple[Tensor, Tensor]:
    """uint8 images (N, C, H, W) and int64 labels of a built-in dataset's split (canonical
    ``name``), read once per process."""
    key = (name, str(root.resolve()), train)
    if key not in _CACHE:
        with _faults(name, root, download):
            _CACHE[key] = _READERS[name](root, train, download)
    return _CACHE[key]
