"""ImageNet-family image sources in their official on-disk layouts: `tiny_imagenet`.

Tiny-ImageNet (the cs231n release, `tiny-imagenet-200.zip` extracted under `data.root`):

    <root>/tiny-imagenet-200/wnids.txt                         one WordNet id per line: the classes
    <root>/tiny-imagenet-200/words.txt                         (optional) wnid <tab> names
    <root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG        500 training images per class
    <root>/tiny-imagenet-200/val/images/*.JPEG                 10,000 images, 50 per class
    <root>/tiny-imagenet-200/val/val_annotations.txt           file <tab> wnid <tab> box

Classes are the sorted wnids (the order of torchvision's ImageFolder on `train/`). The official validation set
is the test split (its test set has no labels; papers 000 and 003 report on the validation set); the
validation split is carved from the training images (`data.val_fraction`). Images are 64x64 RGB (a few of the
originals are grayscale: converted), normalised with ImageNet's statistics. With the decode cache (by default
when the decoded images fit in `data.decode_cache_max_mb`: the full set takes 1.4 GB) every image is decoded
once per run and the in-memory data path applies; without it images are decoded in the DataLoader workers.
"""

from __future__ import annotations

import os

from torchvision.datasets.utils import download_and_extract_archive

from kdrun.config.checks import check_flag, check_string
from kdrun.data.image_files import ImageFiles, decode_cache_applies, decoded
from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits
from kdrun.data.torchvision_sources import IMAGENET_MEAN, IMAGENET_STD, carve_pool, labelled_split, root_directory
from kdrun.errors import ConfigError

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_SIZE = 64
TINY_IMAGENET_LAYOUT = ("wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt "
                        "(the extracted tiny-imagenet-200.zip)")


def _check_tiny_imagenet(cfg) -> None:
    check_flag(cfg.get("download", False), "data.download", meaning="true: fetch the release zip (needs internet)")
    check_flag(cfg.get("verify_checksums", True), "data.verify_checksums",
               meaning="false: accept a downloaded zip whose MD5 differs from the release's")
    check_string(cfg.get("folder"), "data.folder", meaning="the extracted release's folder inside data.root")


def _tiny_directory(cfg) -> str:
    return os.path.join(root_directory(cfg), str(cfg.folder))


def _missing_layout(directory: str) -> list[str]:
    expected = ["wnids.txt", "train", os.path.join("val", "images"), os.path.join("val", "val_annotations.txt")]
    return [name for name in expected if not os.path.exists(os.path.join(directory, name))]


def _layout_error(directory: str, what: str) -> ConfigError:
    return ConfigError(f"tiny_imagenet: {what} in {directory}. Expected the official layout: {TINY_IMAGENET_LAYOUT}. "
                       f"Get it with data.download=true on a machine with internet access (into data.root), or "
                       f"extract tiny-imagenet-200.zip into data.root (data.folder names the extracted folder).")


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def tiny_imagenet_files(directory: str) -> tuple[list[str], ImageFiles, ImageFiles]:
    """(class wnids, training images, validation images) of an extracted release, checked file by file."""
    missing = _missing_layout(directory)
    if missing:
        raise _layout_error(directory, f"missing {', '.join(missing)}")
    wnids = sorted({line.split()[0] for line in _read_lines(os.path.join(directory, "wnids.txt"))})
    if not wnids:
        raise _layout_error(directory, "wnids.txt lists no classes")
    index = {wnid: k for k, wnid in enumerate(wnids)}
    paths, targets = [], []
    for wnid in wnids:
        folder = os.path.join(directory, "train", wnid, "images")
        images = sorted(name for name in os.listdir(folder) if name.lower().endswith((".jpeg", ".jpg", ".png"))) \
            if os.path.isdir(folder) else []
        if not images:
            raise _layout_error(directory, f"no training images for class {wnid} (looked in {folder})")
        paths += [os.path.join(folder, name) for name in images]
        targets += [index[wnid]] * len(images)
    names = _class_names(directory, wnids)
    train = ImageFiles(paths, targets, names, channels=3, size=TINY_IMAGENET_SIZE)
    val_paths, val_targets = [], []
    annotations = os.path.join(directory, "val", "val_annotations.txt")
    for number, line in enumerate(_read_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise _layout_error(directory, f"{annotations} line {number} ({line[:60]!r}) names no class of "
                                           f"wnids.txt (expected: file <tab> wnid <tab> box)")
        path = os.path.join(directory, "val", "images", fields[0])
        if not os.path.isfile(path):
            raise _layout_error(directory, f"{annotations} line {number} names {fields[0]}, which val/images lacks")
        val_paths.append(path)
        val_targets.append(index[fields[1]])
    if not val_paths:
        raise _layout_error(directory, f"{annotations} lists no images")
    return wnids, train, ImageFiles(val_paths, val_targets, names, channels=3, size=TINY_IMAGENET_SIZE)


def _class_names(directory: str, wnids: list[str]) -> list[str]:
    """The first name of each class from words.txt, where it is there; else the wnid."""
    words = os.path.join(directory, "words.txt")
    if not os.path.isfile(words):
        return list(wnids)
    names = {}
    for line in _read_lines(words):
        wnid, _, text = line.partition("\t")
        names[wnid] = text.split(",")[0].strip() or wnid
    return [names.get(wnid, wnid) for wnid in wnids]


@register_source("tiny_imagenet", options=_check_tiny_imagenet)
def load_tiny_imagenet(cfg) -> SourceSplits:
    directory = _tiny_directory(cfg)
    if cfg.download and _missing_layout(directory):
        try:
            download_and_extract_archive(TINY_IMAGENET_URL, download_root=root_directory(cfg),
                                         md5=TINY_IMAGENET_MD5 if cfg.verify_checksums else None)
        except (OSError, RuntimeError) as error:  # no network, or a zip whose MD5 is not the release's
            raise _layout_error(directory, f"downloading {TINY_IMAGENET_URL} failed ({type(error).__name__}: "
                                           f"{error})") from error
    wnids, train, test = tiny_imagenet_files(directory)
    if decode_cache_applies(cfg, len(train) + len(test), 3, TINY_IMAGENET_SIZE, "tiny_imagenet"):
        train, test = decoded(train, "tiny_imagenet train"), decoded(test, "tiny_imagenet val")
        in_memory = True
    else:
        in_memory = False
    pool, val = carve_pool(labelled_split(train, train.targets), cfg, "Tiny-ImageNet")
    return SourceSplits(train=pool, val=val, test=labelled_split(test, test.targets), num_classes=len(wnids),
                        input_shape=(3, TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE), image=True,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, samples_in_memory=in_memory,
                        class_names=tuple(train.classes))
