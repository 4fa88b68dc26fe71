"""``load_data``: find a dataset locally (or download it when allowed) and build its bundle."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pareco.data import cifar, fashion_mnist, imagenet
from pareco.data.bundle import DataBundle
from pareco.data.errors import DataError
from pareco.data.locate import ENV_VAR, cache_dir, search_dirs
from pareco.data.small import build_small_bundle

log = logging.getLogger(__name__)

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagenet")


@dataclass(frozen=True)
class _Source:
    title: str
    find: Callable[[Path], Any]                 # folder -> location, or None if absent
    build: Callable[..., DataBundle]            # (location, **options) -> bundle
    download: Callable[[Path], None] | None     # cache folder -> None; None: not downloadable
    package: str | None = None                  # Debian package that installs the dataset


def _small(read: Callable[[Any], Any], spec: Any) -> Callable[..., DataBundle]:
    return lambda location, **kw: build_small_bundle(read(location), spec, **kw)


_SOURCES = {
    "fashion-mnist": _Source(fashion_mnist.SPEC.title, fashion_mnist.find,
                             _small(fashion_mnist.read, fashion_mnist.SPEC),
                             fashion_mnist.download, package="dataset-fashion-mnist"),
    **{v: _Source(cifar.SPECS[v].title, partial(cifar.find, v),
                  _small(partial(cifar.read, v), cifar.SPECS[v]), partial(cifar.download, v))
       for v in ("cifar10", "cifar100")},
    "imagenet": _Source(imagenet.TITLE, imagenet.find, imagenet.build_bundle, None),
}


def load_data(name: str, *, data_dir: str | os.PathLike | None = None, download: bool = True,
              val_size: int | float | None = None, subset: int | None = None, seed: int = 0,
              image_size: int | None = None, augment: dict | None = None) -> DataBundle:
    """Load dataset ``name`` (one of :data:`DATASETS`) as a :class:`DataBundle`.

    Lookup order: ``data_dir``, ``$PARECO_DATA``, the Debian package folder (Fashion-MNIST:
    /usr/share/datasets/fashion-mnist), the user cache (``$XDG_CACHE_HOME/pareco/data``); if none
    holds the data and ``download`` is true, download it into the cache through torchvision
    (not possible for ImageNet).

    - ``subset``: keep only the first ``subset`` training images (before the validation split).
    - ``val_size``: validation images carved from the training set with the fixed ``seed``: an
      int count, a float fraction, or ``None`` for ``min(5000, 10%)``.
    - ``image_size``: side in pixels of the yielded images (default: 28, 32 or 224).
    - ``augment``: overrides of the training augmentation; Fashion-MNIST/CIFAR: ``crop_padding``
      (px), ``flip``; ImageNet: ``crop_scale``, ``flip``, ``color_jitter``, ``lighting``.

    Raises :class:`DataError` (one sentence naming the problem and the options) on a bad
    argument, missing, incomplete or corrupt data, or a failed download.
    """
    if name not in _SOURCES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataError(f"seed must be an integer, got {seed!r}")
    source = _SOURCES[name]
    location = _locate(name, source, data_dir, download)
    return source.build(location, val_size=val_size, subset=subset, seed=int(seed),
                        image_size=image_size, augment=augment)


def _locate(name: str, source: _Source, data_dir: str | os.PathLike | None,
            download: bool) -> Any:
    folders = search_dirs(name, data_dir)
    for folder in folders:
        location = source.find(folder)
        if location is not None:
            log.info("%s: using %s", source.title, folder)
            return location
    searched = ", ".join(str(f) for f in folders)
    if download and source.download is not None:
        cache = cache_dir()
        log.info("%s: not found in %s; downloading into %s", source.title, searched, cache)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            source.download(cache)
        except Exception as e:  # network, disk, or server failure: all mean "no data"
            raise DataError(f"{source.title} was not found ({searched}) and downloading it into "
                            f"{cache} failed ({type(e).__name__}: {e}); "
                            f"{_options(source, suggest_download=False)}") from e
        location = source.find(cache)
        if location is None:
            raise DataError(f"{source.title} download into {cache} left no usable files; "
                            f"{_options(source, suggest_download=False)}")
        return location
    raise DataError(f"{source.title} was not found in {searched}; "
                    f"{_options(source, suggest_download=True)}")


def _options(source: _Source, *, suggest_download: bool) -> str:
    options = ["pass its folder with --data-dir DIR (data_dir=...)", f"set ${ENV_VAR} to it"]
    if source.package:
        options.append(f"install the Debian package (apt-get install {source.package})")
    if source.download is None:
        options[-1] += f" ({source.title} cannot be downloaded automatically)"
    elif suggest_download:
        options.append("allow download (download=True, i.e. drop --no-download)")
    return "options: " + ", ".join(options[:-1]) + ", or " + options[-1]
