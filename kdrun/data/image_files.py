"""Image files on disk as a dataset of uint8 tensors, and the decode cache the image sources share.

Sources whose images are files (image_folder, tiny_imagenet, imagenet) list (path, label) pairs; `ImageFiles`
decodes one with PIL when it is read, in the DataLoader's workers (`data.num_workers`). Where the decoded
images fit in `data.decode_cache_max_mb`, `decoded(...)` reads every image once into one uint8 tensor, so
epochs read memory instead of files and the in-memory data path applies (`data.decode_cache`).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from kdrun.config.checks import auto_switch
from kdrun.progress import progress

log = logging.getLogger("kdrun")

IMAGE_MODES = {1: "L", 3: "RGB"}  # channels -> the PIL mode images are converted to
TO_UINT8_TENSOR = v2.PILToTensor()  # PIL image -> uint8 tensor (C, H, W), values unchanged


class ImageFiles(Dataset):
    """(uint8 tensor (C, H, W), int label) per image file, converted to `channels` and, when `size` is set,
    resized to size x size (None keeps each file's own size: the loaders' transforms bring it to shape)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], classes: Sequence[str], channels: int = 3,
                 size: int | None = None):
        self.paths, self.targets, self.classes = list(paths), [int(t) for t in targets], list(classes)
        self.mode = IMAGE_MODES[channels]
        self.size = (size, size) if size is not None else None
        self.resize = v2.Resize(self.size, antialias=True) if size is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            x = TO_UINT8_TENSOR(image.convert(self.mode))
        if self.resize is not None and tuple(x.shape[1:]) != self.size:  # files of the right size: no work
            x = self.resize(x)
        return x, self.targets[index]


def decode_cache_applies(cfg, images: int, channels: int, size: int, title: str) -> bool:
    """Whether the images are decoded once into memory: `data.decode_cache` auto (within
    `data.decode_cache_max_mb`), true (whatever the size) or false."""
    megabytes = images * channels * size * size / 2**20
    budget = float(cfg.get("decode_cache_max_mb", 2048))
    mode = auto_switch(cfg, "decode_cache", "data")
    if mode == "auto" and megabytes > budget:
        log.info("%s: %d images need %.0f MB decoded, over data.decode_cache_max_mb=%g: decoding them "
                 "from their files at every epoch instead (raise the limit or set data.decode_cache=true)",
                 title, images, megabytes, budget)
    return mode == "true" or (mode == "auto" and megabytes <= budget)


class DecodedImages(TensorDataset):
    """Decoded image files: the images in memory, their `classes` and `targets` kept."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: list[str]):
        super().__init__(x, y)
        self.classes, self.targets = classes, y.tolist()

    def __getitem__(self, index):
        return self.tensors[0][index], self.targets[index]  # an int label, as the files on disk give


def decoded(files: Dataset, what: str) -> DecodedImages:
    """Every image of `files` (a dataset with `targets` and `classes`) decoded once, as one uint8 tensor."""
    images = [files[index][0] for index in progress(range(len(files)), f"decoding {what}", len(files))]
    return DecodedImages(torch.stack(images), torch.as_tensor(files.targets, dtype=torch.long), list(files.classes))
