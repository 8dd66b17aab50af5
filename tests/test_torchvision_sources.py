"""Torchvision sources (kdrun.data.torchvision_sources) on tiny datasets in the real on-disk formats.

Nothing is mocked on the reading side: each fixture writes files the way the official releases
are laid out (idx files, Python 2 pickles, MATLAB .mat, class folders of PNGs), and the real
torchvision dataset classes parse them. Only `verify_checksums=false` is needed, because the
tiny files cannot match the MD5 sums of the official releases.
"""

from __future__ import annotations

import pickle
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import run_in_process
from kdrun.config.tree import config_dir
from kdrun.data.registry import load_source
from kdrun.errors import ConfigError

N_TRAIN, N_TEST = 40, 20  # every 10-class dataset below; 4 training images per class


@dataclass
class Written:
    """What a fixture wrote: images as uint8 (N, C, H, W) and labels as kdrun should read them."""

    root: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def data_cfg(name: str, root: Path, **overrides):
    """configs/data/<name>.yaml over the shared data settings of train.yaml, with paths.data_dir=root,
    as Hydra composes them under `data`."""
    shared = OmegaConf.load(config_dir() / "train.yaml").data
    own = OmegaConf.load(config_dir() / "data" / f"{name}.yaml")
    cfg = OmegaConf.create({"paths": {"data_dir": str(root)}, "data": OmegaConf.merge(shared, own)})
    cfg.data.verify_checksums = False
    for key, value in overrides.items():
        cfg.data[key] = value
    return cfg.data


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


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- checks shared by every dataset --------------------------------------------------------------


def check_splits(splits, written: Written, shape: tuple[int, ...], num_classes: int) -> None:
    n_train, n_test = len(written.train_y), len(written.test_y)
    assert len(splits.train) + len(splits.val) == n_train
    assert len(splits.test) == n_test
    assert splits.num_classes == num_classes and splits.input_shape == shape and splits.image
    assert len(splits.mean) == len(splits.std) == shape[0]
    pool_index = np.array(splits.train.dataset.indices)
    val_index = np.array(splits.val.dataset.indices)
    assert sorted(np.concatenate([pool_index, val_index]).tolist()) == list(range(n_train))
    assert set(written.train_y[val_index]) == set(range(num_classes))  # the carved validation is stratified
    for split, index, xs, ys in ((splits.train, pool_index, written.train_x, written.train_y),
                                 (splits.val, val_index, written.train_x, written.train_y),
                                 (splits.test, np.arange(n_test), written.test_x, written.test_y)):
        assert split.targets.dtype == np.int64
        np.testing.assert_array_equal(split.targets, ys[index])  # read from the dataset's label attribute
        for position in range(len(split)):
            x, y = split.dataset[position]
            assert type(y) is int and y == ys[index[position]]
            assert x.dtype == torch.uint8 and tuple(x.shape) == shape
            if position < 3 and xs[index[position]] is not None:
                np.testing.assert_array_equal(x.numpy(), xs[index[position]])


# --- each dataset, read by the real torchvision classes ------------------------------------------


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_idx_files(tmp_path, rng, name, folder):
    train_x, train_y, test_x, test_y = write_mnist(tmp_path / folder / "raw", rng)
    splits = load_source(data_cfg(name, tmp_path, val_fraction=0.25))
    check_splits(splits, Written(tmp_path, train_x, train_y, test_x, test_y), (1, 28, 28), 10)
    assert len(splits.val) == 10
    expected = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}[name]
    assert (splits.mean, splits.std) == expected


def test_cifar10_reads_python2_pickles(tmp_path, rng):
    written = write_cifar10(tmp_path, rng)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        assert {b"data", b"labels"} <= set(pickle.load(handle, encoding="bytes"))  # as the CIFAR page documents
    splits = load_source(data_cfg("cifar10", tmp_path, val_fraction=0.25))
    check_splits(splits, written, (3, 32, 32), 10)
    assert splits.mean == (0.4914, 0.4822, 0.4465) and splits.std == (0.2470, 0.2435, 0.2616)


def test_cifar100_reads_fine_labels(tmp_path, rng):
    written = write_cifar100(tmp_path, rng)
    splits = load_source(data_cfg("cifar100", tmp_path, val_fraction=0.5))
    check_splits(splits, written, (3, 32, 32), 100)
    assert splits.mean == (0.5071, 0.4865, 0.4409) and splits.std == (0.2673, 0.2564, 0.2762)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path, rng):
    written = write_svhn(tmp_path, rng)
    splits = load_source(data_cfg("svhn", tmp_path, val_fraction=0.25))
    check_splits(splits, written, (3, 32, 32), 10)  # expected labels are digits: 10 in the file -> 0
    assert 0 in splits.test.targets and 10 not in splits.test.targets
    zero = int(np.flatnonzero(written.test_y == 0)[0])
    assert splits.test.dataset[zero][1] == 0
    assert splits.mean == (0.4377, 0.4438, 0.4728) and splits.std == (0.1980, 0.2010, 0.1970)


def test_image_folder_reads_class_folders_resized_to_rgb(tmp_path, rng):
    written = write_image_folder(tmp_path, rng)
    splits = load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25))
    check_splits(splits, written, (3, 32, 32), 3)
    assert splits.mean == (0.485, 0.456, 0.406) and splits.std == (0.229, 0.224, 0.225)

    small = load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25, image_size=16,
                                 mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    assert small.input_shape == (3, 16, 16) and small.test.dataset[0][0].shape == (3, 16, 16)
    assert small.mean == (0.5, 0.5, 0.5) and small.std == (0.25, 0.25, 0.25)


def test_image_folder_defaults_and_config_errors(tmp_path, rng):
    write_image_folder(tmp_path, rng)
    cfg = data_cfg("image_folder", tmp_path, val_fraction=0.25)
    assert cfg.train_dir == f"{tmp_path}/train" and cfg.test_dir == f"{tmp_path}/test"
    with pytest.raises(ConfigError, match="num_classes=None .* 3 classes"):
        load_source(cfg)  # num_classes: null in the config: the message gives the count
    with pytest.raises(ConfigError, match="nothing to download"):
        load_source(data_cfg("image_folder", tmp_path, num_classes=3, download=True))
    (tmp_path / "test" / "frog").rename(tmp_path / "test" / "toad")
    with pytest.raises(ConfigError, match="class folders differ"):
        load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25))


# --- missing, corrupt and undownloadable files ---------------------------------------------------

EXPECTED_DIRS = {
    "mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python", "svhn": "", "image_folder": "train",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_DIRS))
def test_missing_files_name_the_directory_and_how_to_get_them(tmp_path, name):
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as error:
        load_source(data_cfg(name, root, verify_checksums=True, num_classes=load_num_classes(name)))
    message = str(error.value)
    assert str(root / EXPECTED_DIRS[name]).rstrip("/") in message
    if name == "image_folder":
        assert "data.train_dir" in message and "<class>" in message
    else:
        assert "not found" in message and "data.download=true" in message and "copy the files" in message


def load_num_classes(name: str):
    return 3 if name == "image_folder" else OmegaConf.load(config_dir() / "data" / f"{name}.yaml").num_classes


def test_one_missing_cifar_file_is_named(tmp_path, rng):
    write_cifar10(tmp_path, rng)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"missing: data_batch_3\)"):
        load_source(data_cfg("cifar10", tmp_path, val_fraction=0.25))


@pytest.mark.parametrize("name, write", [("cifar10", write_cifar10), ("svhn", write_svhn)])
def test_verify_checksums_refuses_files_that_are_not_the_release(tmp_path, rng, name, write):
    write(tmp_path, rng)
    with pytest.raises(ConfigError) as error:
        load_source(data_cfg(name, tmp_path, verify_checksums=True, val_fraction=0.25))
    message = str(error.value)
    assert "missing or corrupt" in message and "MD5" in message and "data.verify_checksums=false" in message
    assert str(tmp_path) in message


def test_unreadable_file_is_a_config_error(tmp_path, rng):
    write_cifar10(tmp_path, rng)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x00 not a pickle")
    with pytest.raises(ConfigError, match="could not be read as CIFAR-10 files"):
        load_source(data_cfg("cifar10", tmp_path, val_fraction=0.25))


@pytest.fixture
def no_network(monkeypatch):
    """urlopen fails as on this machine (only the transport is replaced, not any dataset code)."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                          ("svhn", "")])
def test_failed_download_is_a_config_error(tmp_path, no_network, name, folder):
    with pytest.raises(ConfigError) as error:
        load_source(data_cfg(name, tmp_path, download=True, verify_checksums=True))
    message = str(error.value)
    assert "downloading the dataset failed" in message and "network unreachable" in message
    assert str(tmp_path / folder).rstrip("/") in message and "copy the files" in message


def test_download_leaves_present_repacked_files_alone(tmp_path, rng, no_network):
    written = write_cifar10(tmp_path, rng)
    before = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    splits = load_source(data_cfg("cifar10", tmp_path, download=True, val_fraction=0.25))  # no network touched
    assert len(splits.test) == len(written.test_y)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes() == before


# --- through the whole pipeline ------------------------------------------------------------------


def test_cifar10_runs_end_to_end(tmp_path, rng):
    root = tmp_path / "data"
    write_cifar10(root, rng)
    metrics, out = run_in_process(tmp_path, [
        "data=cifar10", f"data.root={root}", "data.verify_checksums=false", "data.val_fraction=0.25",
        "teacher=cnn", "student=cnn", "teacher.epochs=1", "student.epochs=1",
    ], quick=False)
    assert metrics["teacher/train_size"] == metrics["student/train_size"] == N_TRAIN - 10
    assert 0.0 <= metrics["student/test/acc"] <= 1.0
    predictions = np.load(out / "predictions.npz")
    assert predictions["test_student_logits"].shape == (N_TEST, 10)
