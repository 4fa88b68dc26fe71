"""Datasets for training, calibration, validation and reporting, found locally or downloaded.

    >>> data = load_data("fashion-mnist", subset=2000, val_size=200)
    >>> image, label = data.train[0]          # float32 1 x 28 x 28, normalized; int label
    >>> len(data.train), len(data.val)
    (1800, 200)

Supported: :data:`DATASETS`. The lookup order, split rules and augmentation options are
documented on :func:`load_data`; every user-facing failure is a :class:`DataError`.
"""

from pareco.data.bundle import DataBundle
from pareco.data.errors import DataError
from pareco.data.load import DATASETS, load_data

__all__ = ["DATASETS", "DataBundle", "DataError", "load_data"]
