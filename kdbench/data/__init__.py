"""Datasets, splits and the in-memory batch stream."""

from kdbench.data.catalog import DATASETS, DatasetInfo, TensorData, dataset_info, dataset_names, load_dataset
from kdbench.data.loader import Batch, BatchStream, normalize
from kdbench.data.splits import train_val_indices

__all__ = [
    "DATASETS",
    "Batch",
    "BatchStream",
    "DatasetInfo",
    "TensorData",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "normalize",
    "train_val_indices",
]
