"""The in-memory data path yields the DataLoader path's batches and gives the same run."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from support import compose_config, run_in_process
from kdrun.data.datamodule import DataSplits
from kdrun.data.in_memory import in_memory_batches, training_batches, use_fast_path
from kdrun.errors import ConfigError
from kdrun.config.seeds import resolve_seeds


def _splits(tmp_path, overrides=()):
    cfg = compose_config(tmp_path, list(overrides))
    return cfg, DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))


def _epoch(loader, epoch):
    _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop does before each epoch
    return list(loader)


@pytest.mark.parametrize("split_preset", ["standard", "distill4"])
@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_in_memory_batches_equal_the_dataloader_batches(tmp_path, stage, split_preset):
    cfg, splits = _splits(tmp_path, [f"data.split={split_preset}"])
    assert use_fast_path(cfg.data, splits)
    loader = splits.training_loader(stage, order_seed=11, batch_size=50, drop_last=False)
    fast = training_batches(splits, stage, order_seed=11, batch_size=50, drop_last=False)
    assert len(fast) == len(loader)
    for epoch in (0, 1, 2):
        expected, got = _epoch(loader, epoch), _epoch(fast, epoch)
        assert len(got) == len(expected)
        for (x0, y0, i0), (x1, y1, i1) in zip(expected, got):
            assert torch.equal(i0, i1) and torch.equal(y0, y1) and torch.equal(x0, x1)
            assert x0.dtype == x1.dtype and y0.dtype == y1.dtype and i0.dtype == i1.dtype
    val_loader, val_fast = splits.loader("val"), in_memory_batches(splits, "val")
    for (x0, y0, i0), (x1, y1, i1) in zip(val_loader, val_fast):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)


def test_epochs_differ_and_replay_from_the_epoch_number(tmp_path):
    _, splits = _splits(tmp_path)
    fast = training_batches(splits, "student", order_seed=5, batch_size=64)
    first, second, first_again = _epoch(fast, 0), _epoch(fast, 1), _epoch(fast, 0)
    assert not torch.equal(first[0][2], second[0][2])
    assert all(torch.equal(a[2], b[2]) for a, b in zip(first, first_again))


def test_fast_path_run_matches_the_dataloader_run(tmp_path):
    fast, _ = run_in_process(tmp_path / "fast", ["data.fast_path=true"], name="fast")
    slow, _ = run_in_process(tmp_path / "slow", ["data.fast_path=false"], name="slow")
    assert fast["data/fast_path"] is True and slow["data/fast_path"] is False
    assert fast["student/batch_order_checksum"] == slow["student/batch_order_checksum"]
    for key in ("teacher/test/acc", "student/test/acc", "student/test/nll", "student/val/acc"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-6), key


def test_fast_path_true_where_it_cannot_apply_is_a_clear_error(tmp_path):
    cfg, splits = _splits(tmp_path, ["data.fast_path=true", "data.num_workers=1"])
    with pytest.raises(ConfigError, match="fast_path=true needs an in-memory source.*num_workers=1"):
        use_fast_path(cfg.data, splits)
    cfg.data.num_workers = 0
    cfg.data.fast_path = "maybe"
    with pytest.raises(ConfigError, match="allowed: auto, true, false"):
        use_fast_path(cfg.data, splits)
    cfg.data.fast_path = "auto"
    cfg.data.num_workers = 2
    assert use_fast_path(cfg.data, splits) is False  # auto falls back to the DataLoader


# --- image sources: torchvision's decoded arrays, gathered once, transformed per batch -------------

def _image_source(tmp_path, source, overrides=()):
    import numpy as np

    from dataset_files import write_cifar10, write_mnist

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    if source == "cifar10":
        write_cifar10(root, rng)
    else:
        write_mnist(root / "MNIST" / "raw", rng)
    return [f"data={source}", f"data.root={root}", "data.verify_checksums=false", "data.val_fraction=0.25",
            "data.batch_size=8", "data.augment=none", *overrides]  # cifar10.yaml augments by default


@pytest.mark.parametrize("source", ["cifar10", "mnist"])
def test_image_sources_batch_in_memory_with_the_dataloader_values(tmp_path, source):
    cfg, splits = _splits(tmp_path, _image_source(tmp_path, source))
    assert use_fast_path(cfg.data, splits)  # auto: no augmentation, samples decoded in memory
    for stage in ("teacher", "student"):
        loader = splits.training_loader(stage, order_seed=3)
        fast = training_batches(splits, stage, order_seed=3)
        for epoch in (0, 1):
            expected, got = _epoch(loader, epoch), _epoch(fast, epoch)
            assert len(expected) == len(got)
            for (x0, y0, i0), (x1, y1, i1) in zip(expected, got):
                assert x1.dtype == x0.dtype == torch.float32  # normalised floats, not the stored uint8
                assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)
    for split in ("val", "test"):
        for (x0, y0, i0), (x1, y1, i1) in zip(splits.loader(split), in_memory_batches(splits, split)):
            assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)
    assert splits.gathered["train"][0].dtype == torch.uint8  # held compactly, gathered once per run
    gathered = splits.gathered["train"][0]
    training_batches(splits, "student", order_seed=4)
    assert splits.gathered["train"][0] is gathered


def test_augmentation_and_image_folders_read_from_files_keep_the_dataloader(tmp_path):
    import numpy as np

    from dataset_files import write_image_folder

    cfg, splits = _splits(tmp_path, _image_source(tmp_path, "cifar10", ["data.augment=cifar_standard"]))
    assert use_fast_path(cfg.data, splits) is False
    cfg.data.fast_path = True
    with pytest.raises(ConfigError, match="data.augment=cifar_standard draws random inputs per sample"):
        use_fast_path(cfg.data, splits)

    folder = tmp_path / "folder"
    write_image_folder(folder, np.random.default_rng(0))
    folder_args = ["data=image_folder", f"data.train_dir={folder / 'train'}", f"data.test_dir={folder / 'test'}",
                   "data.val_fraction=0.25", "data.num_classes=3", "data.fast_path=true"]
    cfg, splits = _splits(tmp_path, [*folder_args, "data.decode_cache=false"])
    with pytest.raises(ConfigError, match="data.source=image_folder reads its samples from files one by one"):
        use_fast_path(cfg.data, splits)
    cfg, splits = _splits(tmp_path, folder_args)  # decoded once (decode_cache=auto): the in-memory path
    assert use_fast_path(cfg.data, splits) is True


def test_image_source_run_matches_on_both_paths(tmp_path):
    common = _image_source(tmp_path, "cifar10", ["teacher=cnn", "student=cnn", "teacher.epochs=1",
                                                 "student.epochs=2"])
    fast, _ = run_in_process(tmp_path / "fast", [*common, "data.fast_path=true"], name="fast")
    slow, _ = run_in_process(tmp_path / "slow", [*common, "data.fast_path=false"], name="slow")
    assert fast["data/fast_path"] is True and slow["data/fast_path"] is False
    assert fast["student/batch_order_checksum"] == slow["student/batch_order_checksum"]
    for key in ("student/test/acc", "student/test/nll", "student/train/nll", "teacher/test/acc"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-6), key
