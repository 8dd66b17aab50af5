"""Tiny-ImageNet in the release's own layout (tiny JPEG files the tests write): classes, splits, labels,
the decode cache, training end to end, and every missing file a clear error before training."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dataset_files import TINY_COLOURS, TINY_WNIDS, write_tiny_imagenet
from support import data_cfg, run_in_process
from kdrun.data import load_source
from kdrun.data.torchvision_sources import IMAGENET_MEAN, IMAGENET_STD
from kdrun.errors import ConfigError

CLASSES = len(TINY_WNIDS)


def tiny_cfg(root, **values):
    return data_cfg("tiny_imagenet", root, num_classes=CLASSES, val_fraction=0.25, **values)


def _colour_class(image: torch.Tensor) -> str:
    """The class whose flat colour an image shows."""
    mean = image.double().mean(dim=(1, 2)).numpy()
    return min(TINY_COLOURS, key=lambda wnid: np.abs(mean - np.array(TINY_COLOURS[wnid])).sum())


@pytest.mark.parametrize("decode_cache", ["auto", "false"])
def test_tiny_imagenet_reads_the_release_layout(tmp_path, decode_cache):
    write_tiny_imagenet(tmp_path)
    splits = load_source(tiny_cfg(tmp_path, decode_cache=decode_cache))
    assert splits.num_classes == CLASSES and splits.input_shape == (3, 64, 64)
    assert splits.samples_in_memory is (decode_cache == "auto")  # auto: decoded once, it fits
    assert splits.mean == IMAGENET_MEAN and splits.std == IMAGENET_STD
    # classes are the sorted wnids, named from words.txt
    assert splits.class_names == ("goldfish", "European fire salamander", "Egyptian cat", "reel")
    assert len(splits.train) + len(splits.val) == CLASSES * 6 and len(splits.val) == CLASSES * 6 // 4
    assert len(splits.test) == CLASSES * 3  # the official val set, labelled from val_annotations.txt
    wnids = sorted(TINY_WNIDS)
    for split in (splits.train, splits.val, splits.test):
        for position in range(len(split)):
            x, y = split.dataset[position]
            assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 64, 64)  # grayscale files read as RGB
            assert y == split.targets[position]
            if x[0].equal(x[1]) and x[1].equal(x[2]):
                continue  # the grayscale image of its class: no colour to check
            assert _colour_class(x) == wnids[y]


def test_a_tiny_imagenet_run_trains_teacher_and_student(tmp_path, shared_store):
    write_tiny_imagenet(tmp_path, train_per_class=8)
    overrides = ["data=tiny_imagenet", f"data.root={tmp_path}", f"data.num_classes={CLASSES}", "data.val_fraction=0.25",
                 "data.batch_size=8", "teacher=cnn", "teacher.model.width=0.25", "student=mlp",
                 "student.model.width=16", "teacher.epochs=2", "student.epochs=1"]
    metrics, run_dir = run_in_process(tmp_path, overrides, store=shared_store)
    assert metrics["student/test/acc"] >= 0 and (run_dir / "predictions.npz").is_file()
    assert metrics["teacher/test/acc"] > 0.5  # flat colours: the classes are easy


def test_missing_tiny_imagenet_files_are_named_with_the_layout(tmp_path):
    with pytest.raises(ConfigError, match=r"tiny_imagenet: missing wnids.txt, train.*in .*tiny-imagenet-200\. "
                                          r"Expected the official layout: wnids.txt, train/<wnid>/images"):
        load_source(tiny_cfg(tmp_path))
    folder = write_tiny_imagenet(tmp_path)
    shutil.rmtree(folder / "train" / "n04067472" / "images")
    with pytest.raises(ConfigError, match=r"no training images for class n04067472 \(looked in .*n04067472/images\)"):
        load_source(tiny_cfg(tmp_path))


def test_a_bad_annotation_line_is_named(tmp_path):
    folder = write_tiny_imagenet(tmp_path)
    annotations = folder / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(ConfigError, match=r"line 13 \('val_99.JPEG\\tn00000000.*names no class of wnids.txt"):
        load_source(tiny_cfg(tmp_path))
    annotations.write_text("val_99.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(ConfigError, match="names val_99.JPEG, which val/images lacks"):
        load_source(tiny_cfg(tmp_path))


def test_download_without_a_network_fails_clearly_and_writes_nothing_else(tmp_path, monkeypatch):
    import kdrun.data.imagenet_sources as sources

    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(sources, "download_and_extract_archive", offline)
    with pytest.raises(ConfigError, match=r"downloading http://cs231n.stanford.edu/tiny-imagenet-200.zip failed "
                                          r"\(OSError: no route to host\)"):
        load_source(tiny_cfg(tmp_path, download=True))
    assert list(tmp_path.iterdir()) == []


def test_image_files_resize_only_what_is_not_of_the_size(tmp_path, monkeypatch):
    from PIL import Image
    from kdrun.data.image_files import ImageFiles

    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "right.png")
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "small.png")
    files = ImageFiles([str(tmp_path / "right.png"), str(tmp_path / "small.png")], [0, 1], ["a", "b"], size=64)
    calls = []
    resize = files.resize
    monkeypatch.setattr(files, "resize", lambda x: calls.append(tuple(x.shape)) or resize(x))
    assert files[0][0].shape == files[1][0].shape == (3, 64, 64)
    assert calls == [(3, 30, 40)]  # the 64x64 file is not resized
