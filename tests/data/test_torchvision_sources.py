"""Torchvision sources (kdrun.data.torchvision_sources) on tiny datasets in the real on-disk formats.

Nothing is mocked on the reading side: each fixture writes files the way the official releases
are laid out (idx files, Python 2 pickles, MATLAB .mat, class folders of PNGs), and the real
torchvision dataset classes parse them. Only `verify_checksums=false` is needed, because the
tiny files cannot match the MD5 sums of the official releases.
"""

from __future__ import annotations

import pickle
import re
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
import pytest
import torch
from omegaconf import OmegaConf

from dataset_files import (N_TEST, N_TRAIN, Written, write_cifar10, write_cifar100, write_image_folder, write_mnist,
                           write_svhn)
from support import data_cfg, run_in_process
from kdrun.config.tree import config_dir
from kdrun.data.registry import load_source
from kdrun.errors import ConfigError


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


@pytest.mark.parametrize("decode_cache", ["auto", "false"])
def test_image_folder_reads_class_folders_resized_to_rgb(tmp_path, rng, decode_cache):
    written = write_image_folder(tmp_path, rng)
    splits = load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25,
                                  decode_cache=decode_cache))
    check_splits(splits, written, (3, 32, 32), 3)  # the first image is RGB: every image is read as RGB
    assert splits.samples_in_memory == (decode_cache == "auto")  # decoded once, or from the files every epoch
    pool = torch.stack([splits.train.dataset[i][0] for i in range(len(splits.train))]).double() / 255
    assert splits.mean == tuple(round(float(v), 4) for v in pool.mean(dim=(0, 2, 3)))  # the images' statistics
    assert splits.std == tuple(round(float(v), 4) for v in pool.std(dim=(0, 2, 3), unbiased=False))

    small = load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25, image_size=16,
                                 mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], decode_cache=decode_cache))
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
    with pytest.raises(ConfigError, match=r"data.mean=\[0.5\] has 1 values but the images have 3 channel"):
        load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25, mean=[0.5]))
    for bad, fragment in (({"channels": 2}, "data.channels=2 is unknown; allowed: 1, 3"),
                          ({"decode_cache": "sometimes"}, "data.decode_cache='sometimes'"),
                          ({"decode_cache_max_mb": -1}, "data.decode_cache_max_mb=-1")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_source(data_cfg("image_folder", tmp_path, num_classes=3, **bad))
    (tmp_path / "test" / "frog").rename(tmp_path / "test" / "toad")
    with pytest.raises(ConfigError, match="class folders differ"):
        load_source(data_cfg("image_folder", tmp_path, num_classes=3, val_fraction=0.25))


def test_a_grayscale_folder_trains_as_one_channel_and_takes_the_in_memory_path(tmp_path, rng, shared_store):
    """MNIST as PNG files: 1 x 28 x 28, decoded once, batched in memory like the in-memory sources."""
    for split, per_class in (("train", 12), ("test", 4)):
        for label in range(3):
            folder = tmp_path / split / str(label)
            folder.mkdir(parents=True)
            for i in range(per_class):
                digit = np.zeros((28, 28), dtype=np.uint8)
                digit[4 + 6 * label: 10 + 6 * label, 8:20] = 255  # a bar whose height is the class
                noise = rng.integers(0, 40, size=(28, 28), dtype=np.uint8)
                Image.fromarray(digit | noise, mode="L").save(folder / f"{i:03d}.png")
    overrides = ["data=image_folder", f"data.root={tmp_path}", "data.num_classes=3", "data.image_size=28",
                 "data.val_fraction=0.25", "teacher=cnn", "student=mlp", "teacher.epochs=25", "student.epochs=5",
                 "data.batch_size=9"]
    metrics, _ = run_in_process(tmp_path, overrides, store=shared_store)
    splits = load_source(data_cfg("image_folder", tmp_path, num_classes=3, image_size=28, val_fraction=0.25))
    assert splits.input_shape == (1, 28, 28) and splits.train.dataset[0][0].shape == (1, 28, 28)
    assert len(splits.mean) == len(splits.std) == 1
    assert metrics["data/fast_path"] is True and metrics["teacher/test/acc"] > 0.6
    rgb = load_source(data_cfg("image_folder", tmp_path, num_classes=3, image_size=28, channels=3))
    assert rgb.input_shape == (3, 28, 28)  # data.channels=3 reads the grayscale files as RGB
    on_files = load_source(data_cfg("image_folder", tmp_path, num_classes=3, image_size=28, decode_cache_max_mb=0.001))
    assert not on_files.samples_in_memory  # over the memory bound: decoded from the files every epoch


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
