"""Tiny datasets written in the real on-disk formats the torchvision sources read (idx files, CIFAR's
Python-2 pickles, SVHN's .mat files, class folders of images), for the tests that load them."""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

N_TRAIN, N_TEST = 40, 20  # every 10-class dataset below; 4 training images per class


@dataclass
class Written:
    """What a fixture wrote: images as uint8 (N, C, H, W) and labels as kdrun should read them."""

    root: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def balanced_labels(n: int, classes: int, rng) -> np.ndarray:
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    return labels


# --- writers: the official formats ---------------------------------------------------------------


def write_mnist(raw: Path, rng) -> tuple[np.ndarray, ...]:
    """The four uncompressed idx files: big-endian magic 2051 (images, uint8, 3 dims) / 2049 (labels)."""
    raw.mkdir(parents=True)
    arrays = []
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = balanced_labels(n, 10, rng).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())
        arrays += [images[:, None], labels.astype(np.int64)]
    return tuple(arrays)


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING/BINSTRING), as the CIFAR files were written by
    Python 2's cPickle: read back as b'data' with encoding='bytes' and as 'data' with 'latin1'."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, obj) -> None:
    with open(path, "wb") as handle:
        Py2Pickler(handle, protocol=2).dump(obj)


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_keys: dict, name: bytes) -> dict:
    """A batch dict with the real keys: b'data' (N x 3072 uint8, rows R then G then B planes), labels as list."""
    return {
        b"batch_label": name,
        b"data": images.reshape(len(images), 3 * 32 * 32),
        **{key: [int(v) for v in values] for key, values in label_keys.items()},
        b"filenames": [b"img_%05d.png" % i for i in range(len(images))],
    }


def write_cifar10(root: Path, rng) -> Written:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x = rng.integers(0, 256, size=(N_TRAIN, 3, 32, 32), dtype=np.uint8)
    train_y = balanced_labels(N_TRAIN, 10, rng)
    for batch in range(5):  # five training batches, as in the release
        part = slice(batch * N_TRAIN // 5, (batch + 1) * N_TRAIN // 5)
        write_py2_pickle(folder / f"data_batch_{batch + 1}", cifar_batch(
            train_x[part], train_y[part], {b"labels": train_y[part]}, b"training batch %d of 5" % (batch + 1)))
    test_x = rng.integers(0, 256, size=(N_TEST, 3, 32, 32), dtype=np.uint8)
    test_y = balanced_labels(N_TEST, 10, rng)
    write_py2_pickle(folder / "test_batch", cifar_batch(test_x, test_y, {b"labels": test_y}, b"testing batch 1 of 1"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_py2_pickle(folder / "batches.meta", {b"num_cases_per_batch": N_TRAIN // 5, b"label_names": names,
                                               b"num_vis": 3072})
    return Written(root, train_x, train_y, test_x, test_y)


def write_cifar100(root: Path, rng, per_class_train: int = 2, per_class_test: int = 1) -> Written:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        n = 100 * per_class
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        fine = balanced_labels(n, 100, rng)
        write_py2_pickle(folder / split, cifar_batch(x, fine, {b"fine_labels": fine, b"coarse_labels": fine // 5},
                                                     split.encode()))
        written[split] = (x, fine)
    write_py2_pickle(folder / "meta", {b"fine_label_names": [b"class_%02d" % c for c in range(100)],
                                       b"coarse_label_names": [b"super_%02d" % c for c in range(20)]})
    return Written(root, *written["train"], *written["test"])


def write_svhn(root: Path, rng) -> Written:
    """train_32x32.mat / test_32x32.mat: X is 32x32x3xN uint8, y is Nx1 with 10 standing for digit 0."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = []
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x_hwcn = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        digits = balanced_labels(n, 10, rng)
        file_labels = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # 1..10 as in the release
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x_hwcn, "y": file_labels})
        arrays += [np.stack([x_hwcn[:, :, :, i].transpose(2, 0, 1) for i in range(n)]), digits]
    assert 10 in scipy.io.loadmat(root / "train_32x32.mat")["y"]  # the files really hold label 10
    return Written(root, *arrays)


FOLDER_CLASSES = ["cat", "dog", "frog"]  # sorted: ImageFolder's class indices 0, 1, 2


def write_image_folder(root: Path, rng, train_per_class: int = 4, test_per_class: int = 2) -> Written:
    """<root>/{train,test}/<class>/*.png; per class one image is 48x24 and one is grayscale (both are
    resized / converted), the rest are 32x32 RGB and kept as written (index order: sorted file names)."""
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        xs, ys = [], []
        for label, name in enumerate(FOLDER_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                path = root / split / name / f"{i:03d}.png"
                if i == 1 and split == "train":
                    Image.fromarray(rng.integers(0, 256, size=(24, 48, 3), dtype=np.uint8)).save(path)
                    xs.append(None)  # resized: pixels not compared
                elif i == 2 and split == "train":
                    gray = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
                    Image.fromarray(gray, mode="L").save(path)
                    xs.append(np.stack([gray] * 3))  # loaded as RGB: three equal channels
                else:
                    rgb = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                    Image.fromarray(rgb).save(path)
                    xs.append(rgb.transpose(2, 0, 1))
                ys.append(label)
        arrays[split] = (np.array(xs, dtype=object), np.array(ys))
    return Written(root, *arrays["train"], *arrays["test"])


# Tiny-ImageNet's wnids for the tests' few classes (real ImageNet synsets), written unsorted as the release is
TINY_WNIDS = ["n02124075", "n01443537", "n04067472", "n01629819"]
TINY_COLOURS = {"n01443537": (200, 30, 30), "n01629819": (30, 200, 30), "n02124075": (30, 30, 200),
                "n04067472": (200, 200, 30)}  # a flat colour per class: a JPEG of it decodes within a few levels


def write_tiny_imagenet(root: Path, train_per_class: int = 6, val_per_class: int = 3) -> Path:
    """<root>/tiny-imagenet-200 in the release's layout: wnids.txt, words.txt, train/<wnid>/images/<wnid>_<i>.JPEG
    (and the <wnid>_boxes.txt the release has), val/images/val_<i>.JPEG with val/val_annotations.txt, and a
    test/images folder without labels. 64x64 JPEGs; one training image per class is grayscale, as some of the
    release's are. Returns the release folder."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "test" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in TINY_WNIDS))
    (folder / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
                                      "n02124075\tEgyptian cat\nn04067472\treel\nn09999999\tnot a class\n")

    def image(wnid: str, gray: bool = False) -> Image.Image:
        pixels = np.zeros((64, 64, 3), dtype=np.uint8) + np.array(TINY_COLOURS[wnid], dtype=np.uint8)
        picture = Image.fromarray(pixels)
        return picture.convert("L") if gray else picture

    for wnid in TINY_WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(train_per_class):
            image(wnid, gray=i == 0).save(images / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    lines, number = [], 0
    for i in range(val_per_class):
        for wnid in TINY_WNIDS:
            image(wnid).save(folder / "val" / "images" / f"val_{number}.JPEG", format="JPEG", quality=95)
            lines.append(f"val_{number}.JPEG\t{wnid}\t0\t0\t63\t63\n")
            number += 1
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    image(TINY_WNIDS[0]).save(folder / "test" / "images" / "test_0.JPEG", format="JPEG")
    return folder
