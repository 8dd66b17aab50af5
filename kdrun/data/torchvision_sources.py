"""Torchvision image datasets as kdrun sources: mnist, fashion_mnist, cifar10, cifar100, svhn, image_folder.

The files are read by torchvision's own dataset classes. Every split yields (x, y) with x a
uint8 tensor (C, H, W), un-normalised, and y an int; `SourceSplits.mean`/`std` carry the
per-channel statistics of the training set so the loaders can normalise (kdrun.data.transforms).

The validation split is a seeded, class-stratified fraction of the official training set;
the official test set is the test split. Nothing is downloaded unless data.download=true.
Missing or unreadable files stop the run with a ConfigError naming the directory torchvision
looks in and how to fill it.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

from kdrun.data.image_files import IMAGE_MODES, TO_UINT8_TENSOR, decode_cache_applies, decoded
from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits, Split, carve_validation
from kdrun.errors import ConfigError
from kdrun.config.checks import (auto_switch, check_choice, check_flag, check_list, check_number, check_string,
                                 check_whole_number)

log = logging.getLogger("kdrun")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- data.verify_checksums=false ---------------------------------------------------------------
# torchvision checks the MD5 sums of the CIFAR and SVHN files against the official release, so
# re-packed files (or the tiny files of the tests) are refused. These subclasses replace only
# that check by "the file exists"; every line that reads and parses the files is torchvision's.


class CIFAR10FilesOnly(datasets.CIFAR10):
    """CIFAR-10 whose integrity check asks only that the files exist."""

    # _load_meta checks the meta file with check_integrity(path, md5); md5=None means "exists".
    meta = {**datasets.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return all(check_integrity(os.path.join(self.root, self.base_folder, name))
                   for name, _ in self.train_list + self.test_list)


class CIFAR100FilesOnly(datasets.CIFAR100):
    """CIFAR-100 whose integrity check asks only that the files exist."""

    meta = {**datasets.CIFAR100.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return all(check_integrity(os.path.join(self.root, self.base_folder, name))
                   for name, _ in self.train_list + self.test_list)


class SVHNFilesOnly(datasets.SVHN):
    """SVHN whose integrity check asks only that the split's .mat file exists."""

    def _check_integrity(self) -> bool:
        return check_integrity(os.path.join(self.root, self.filename))


# --- shared loading -----------------------------------------------------------------------------


def root_directory(cfg) -> str:
    return os.path.abspath(os.path.expanduser(str(cfg.root)))


def labelled_split(dataset: Dataset, labels) -> Split:
    return Split(dataset=dataset, targets=np.asarray(labels, dtype=np.int64).reshape(-1))


def carve_pool(pool: Split, cfg, title: str) -> tuple[Split, Split]:
    try:
        return carve_validation(pool, cfg.val_fraction, cfg.split_seed)
    except ConfigError:
        raise
    except ValueError as error:  # scikit-learn: too few samples per class for a stratified split
        raise ConfigError(
            f"data.val_fraction={cfg.val_fraction}: cannot hold out a class-stratified validation split "
            f"from the {len(pool)} {title} training images ({error})"
        ) from error


def _load_official(cfg, title: str, directory: str, files: list[str], checksummed: bool,
                   make: Callable[[bool, bool], Dataset]) -> tuple[Dataset, Dataset]:
    """(train, test) datasets from `make(train, download)`, with torchvision's errors as ConfigError.

    `directory` is where torchvision looks for `files`; `checksummed` says whether torchvision
    checks their MD5 sums here. All three only serve the error messages.
    """
    download = bool(cfg.download)
    if download and not cfg.verify_checksums and not _missing(directory, files):
        download = False  # torchvision would re-fetch files whose MD5 differs, overwriting re-packed ones
    try:
        return make(True, download), make(False, download)
    except (RuntimeError, OSError) as error:  # not found / MD5 mismatch / URLError and other network errors
        missing = _missing(directory, files)
        how = (f"Get them with data.download=true on a machine with internet access (it downloads into "
               f"data.root={root_directory(cfg)}), or copy the files ({', '.join(files)}) into {directory}.")
        if download and (missing or isinstance(error, OSError)):
            message = (f"{title}: downloading the dataset failed ({type(error).__name__}: {error}); files missing "
                       f"from {directory}: {', '.join(missing) or 'none'}. {how}")
        elif missing:
            message = f"{title}: dataset files not found in {directory} (missing: {', '.join(missing)}). {how}"
        elif checksummed and isinstance(error, RuntimeError):
            message = (f"{title}: torchvision refused the files in {directory} as missing or corrupt: they are all "
                       f"present but do not match the MD5 sums of the official release ({error}). For re-packed "
                       f"or test files set data.verify_checksums=false; otherwise delete them. {how}")
        else:
            message = _unreadable(title, directory, error)
        raise ConfigError(message) from error
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError) as error:
        raise ConfigError(_unreadable(title, directory, error)) from error


def _missing(directory: str, files: list[str]) -> list[str]:
    return [name for name in files if not os.path.isfile(os.path.join(directory, name))]


def _unreadable(title: str, directory: str, error: Exception) -> str:
    return (f"{title}: the files in {directory} could not be read as {title} files ({type(error).__name__}: "
            f"{error}). Replace them with the original release (data.download=true on a machine with internet "
            f"access downloads it) or copy intact files there.")


# --- the sources --------------------------------------------------------------------------------


def _check_file_options(cfg) -> None:
    """Whether a torchvision source fetches and checks its files (data.root is any directory)."""
    check_flag(cfg.get("download", False), "data.download", meaning="true: fetch missing files (needs internet)")
    check_flag(cfg.get("verify_checksums", True), "data.verify_checksums",
               meaning="false accepts files that differ from the official release")



def _check_image_folder(cfg) -> None:
    _check_file_options(cfg)
    check_whole_number(cfg.get("image_size"), "data.image_size", minimum=1,
                       meaning="images are resized to it, square")
    for key in ("train_dir", "test_dir"):
        check_string(cfg.get(key), f"data.{key}", meaning="one sub-folder of images per class")
    channels = cfg.get("channels")
    if channels is not None:
        check_choice(channels, "data.channels", tuple(IMAGE_MODES), meaning="1: grayscale, 3: RGB; null: as the "
                     "first training image is")
    for key, low_inclusive in (("mean", True), ("std", False)):
        values = check_list(cfg.get(key), f"data.{key}", allow_none=True,
                            meaning="one value per channel; null: the training images' statistics") or []
        for index, value in enumerate(values):
            check_number(value, f"data.{key}[{index}]", low=0, low_inclusive=low_inclusive,
                         meaning="a per-channel normalisation statistic")
    auto_switch(cfg, "decode_cache", "data")
    check_number(cfg.get("decode_cache_max_mb", 2048), "data.decode_cache_max_mb", low=0,
                 meaning="decode_cache=auto keeps the decoded images in memory up to this size")


def _mnist_like(cfg, title: str, cls: type[datasets.MNIST], mean: float, std: float) -> SourceSplits:
    # MNIST's raw files carry no checksums in torchvision (its downloads are checked either way),
    # so verify_checksums changes nothing here.
    root = root_directory(cfg)
    directory = os.path.join(root, cls.__name__, "raw")
    files = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    train, test = _load_official(
        cfg, title, directory, files, False,
        lambda is_train, download: cls(root, train=is_train, transform=TO_UINT8_TENSOR, download=download))
    pool, val = carve_pool(labelled_split(train, train.targets.numpy()), cfg, title)
    return SourceSplits(train=pool, val=val, test=labelled_split(test, test.targets.numpy()), num_classes=10,
                        input_shape=(1, 28, 28), image=True, mean=(mean,), std=(std,))


@register_source("mnist", options=_check_file_options)
def load_mnist(cfg) -> SourceSplits:
    """MNIST: 60,000 train / 10,000 test 28x28 grayscale digits."""
    return _mnist_like(cfg, "MNIST", datasets.MNIST, 0.1307, 0.3081)


@register_source("fashion_mnist", options=_check_file_options)
def load_fashion_mnist(cfg) -> SourceSplits:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 grayscale clothing images."""
    return _mnist_like(cfg, "FashionMNIST", datasets.FashionMNIST, 0.2860, 0.3530)


def _cifar(cfg, title: str, checked: type[datasets.CIFAR10], files_only: type[datasets.CIFAR10],
           num_classes: int, mean, std) -> SourceSplits:
    root = root_directory(cfg)
    directory = os.path.join(root, checked.base_folder)
    files = [name for name, _ in checked.train_list + checked.test_list] + [checked.meta["filename"]]
    cls = checked if cfg.verify_checksums else files_only
    train, test = _load_official(
        cfg, title, directory, files, bool(cfg.verify_checksums),
        lambda is_train, download: cls(root, train=is_train, transform=TO_UINT8_TENSOR, download=download))
    pool, val = carve_pool(labelled_split(train, train.targets), cfg, title)
    return SourceSplits(train=pool, val=val, test=labelled_split(test, test.targets), num_classes=num_classes,
                        input_shape=(3, 32, 32), image=True, mean=tuple(mean), std=tuple(std))


@register_source("cifar10", options=_check_file_options)
def load_cifar10(cfg) -> SourceSplits:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, 10 classes."""
    return _cifar(cfg, "CIFAR-10", datasets.CIFAR10, CIFAR10FilesOnly, 10,
                  (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_source("cifar100", options=_check_file_options)
def load_cifar100(cfg) -> SourceSplits:
    """CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 fine classes."""
    return _cifar(cfg, "CIFAR-100", datasets.CIFAR100, CIFAR100FilesOnly, 100,
                  (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@register_source("svhn", options=_check_file_options)
def load_svhn(cfg) -> SourceSplits:
    """SVHN (cropped digits): 73,257 train / 26,032 test 32x32 colour images; label 10 is read as digit 0.

    The 531,131 'extra' images are not used.
    """
    root = root_directory(cfg)
    files = [datasets.SVHN.split_list[split][1] for split in ("train", "test")]
    cls = datasets.SVHN if cfg.verify_checksums else SVHNFilesOnly
    train, test = _load_official(
        cfg, "SVHN", root, files, bool(cfg.verify_checksums),
        lambda is_train, download: cls(root, split="train" if is_train else "test", transform=TO_UINT8_TENSOR,
                                       download=download))
    pool, val = carve_pool(labelled_split(train, train.labels), cfg, "SVHN")
    return SourceSplits(train=pool, val=val, test=labelled_split(test, test.labels), num_classes=10,
                        input_shape=(3, 32, 32), image=True,
                        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))


@register_source("image_folder", options=_check_image_folder)
def load_image_folder(cfg) -> SourceSplits:
    """Images in class sub-folders (train_dir/<class>/*.png, test_dir/<class>/*.png), resized to
    image_size x image_size, in `data.channels` (1 or 3; by default as the first training image is).
    Classes are the sorted sub-folder names; test_dir must have the same. With the decode cache the
    images are decoded once, into uint8 tensors (so they take the in-memory path); without it they
    are decoded from their files at every epoch. Normalisation statistics default to the training
    images' own."""
    if cfg.download:
        raise ConfigError("data.download=true: image_folder has nothing to download; copy the class folders into "
                          f"data.train_dir={cfg.train_dir!r} and data.test_dir={cfg.test_dir!r}")
    size = cfg.image_size
    train, test = _image_folder(cfg, "train_dir", size, None), None
    channels = cfg.get("channels") or _channels_of(train)
    train = _image_folder(cfg, "train_dir", size, channels)
    test = _image_folder(cfg, "test_dir", size, channels)
    if train.classes != test.classes:
        raise ConfigError(
            f"image_folder: the class folders differ between data.train_dir ({', '.join(train.classes)}) and "
            f"data.test_dir ({', '.join(test.classes)}); both need the same class sub-folders"
        )
    in_memory = decode_cache_applies(cfg, len(train) + len(test), channels, size, "image_folder")
    if in_memory:
        train, test = decoded(train, "data.train_dir"), decoded(test, "data.test_dir")
    pool, val = carve_pool(labelled_split(train, train.targets), cfg, "image_folder")
    mean, std = _statistics(cfg, pool, channels)
    return SourceSplits(train=pool, val=val, test=labelled_split(test, test.targets), num_classes=len(train.classes),
                        input_shape=(channels, size, size), image=True, mean=mean, std=std,
                        samples_in_memory=in_memory)


def _image_folder(cfg, key: str, size: int, channels: int | None) -> datasets.ImageFolder:
    """The folder `data.<key>` read by torchvision's ImageFolder, its images converted to `channels`."""
    directory = os.path.abspath(os.path.expanduser(str(cfg[key])))
    mode = IMAGE_MODES.get(channels)

    def load(path: str):
        with Image.open(path) as image:
            return image.convert(mode) if mode else image.copy()

    transform = v2.Compose([v2.Resize((size, size), antialias=True), TO_UINT8_TENSOR]) if mode else None
    try:
        return datasets.ImageFolder(directory, transform=transform, loader=load)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise ConfigError(
            f"image_folder: no images found for data.{key}={directory} ({error}). Expected one sub-folder per "
            f"class holding the images, e.g. {directory}/<class>/xxx.png; set data.{key} or data.root."
        ) from error


def _channels_of(folder: datasets.ImageFolder) -> int:
    """data.channels=null: grayscale (1) when the first training image is, else RGB (3)."""
    image, _ = folder[0]
    return 1 if image.mode in ("1", "L", "I", "I;16", "F") else 3


def _statistics(cfg, pool: Split, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`data.mean` / `data.std` as given, or (null) the per-channel statistics of the training pool's images."""
    given = {key: cfg.get(key) for key in ("mean", "std")}
    for key, values in given.items():
        if values is not None and len(values) != channels:
            raise ConfigError(f"data.{key}={list(values)} has {len(values)} values but the images have {channels} "
                              f"channel(s); allowed: {channels} values, or null: the training images' statistics")
    if given["mean"] is not None and given["std"] is not None:
        return tuple(float(v) for v in given["mean"]), tuple(float(v) for v in given["std"])
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for index in range(len(pool.dataset)):
        x = pool.dataset[index][0].to(torch.float64) / 255.0
        total += x.sum(dim=(1, 2))
        squares += (x * x).sum(dim=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    computed = (tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))
    return (tuple(float(v) for v in given["mean"]) if given["mean"] is not None else computed[0],
            tuple(float(v) for v in given["std"]) if given["std"] is not None else computed[1])
