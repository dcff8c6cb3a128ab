"""Datasets for the harness: built-in ones read through torchvision, image folders, and the
user's own Dataset objects, served as batches built on the training device.

- :func:`load_data` turns a run's :class:`DataSpec` into :class:`Data`: training batches
  (:class:`TrainBatches`) and evaluation batches (:class:`EvalBatches`) for validation and
  test. Datasets that fit are held on the training device as uint8 and batched, augmented
  and normalised there a whole batch at a time; larger ones stream through a DataLoader.
- :func:`data_from_datasets` does the same for the user's own Dataset objects.
- :func:`get_dataset` gives per-image access (pictures), :func:`dataset_info` what a model
  needs to know, :func:`canonical_dataset` the one name of every alias.

Every random choice is a hash of ``(seed, epoch[, index])`` (see :mod:`attn2d.data.augment`),
so a run is reproducible whatever the device, the number of processes or loader workers, and
wherever it was interrupted. ``docs/data.md`` describes the datasets and the contract.
"""

from .augment import Normalize
from .batches import EvalBatches, TrainBatches
from .catalog import DATASETS, DatasetInfo, canonical_dataset, default_data_dir
from .load import (
    IN_MEMORY_LIMIT_BYTES,
    Data,
    DataSpec,
    data_from_datasets,
    dataset_info,
    denormalize,
    get_dataset,
    load_data,
)
from .samples import ImageDataset
from .split import stratified_subset

__all__ = [
    "DATASETS",
    "IN_MEMORY_LIMIT_BYTES",
    "Data",
    "DataSpec",
    "DatasetInfo",
    "EvalBatches",
    "ImageDataset",
    "Normalize",
    "TrainBatches",
    "canonical_dataset",
    "data_from_datasets",
    "dataset_info",
    "default_data_dir",
    "denormalize",
    "get_dataset",
    "load_data",
    "stratified_subset",
]
