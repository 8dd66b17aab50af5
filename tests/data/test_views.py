"""Finite-view augmentation: each view is torchvision's crop and flip, torchvision draws exactly these views, the
stream of views is a pure function of (seed, epoch, sample), and the loader applies it (also in worker processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from dataset_files import write_cifar10
from support import data_cfg
from kdrun.config.seeds import resolve_seeds
from kdrun.data.datamodule import DataSplits
from kdrun.data.views import CropFlipViews, ViewStream


def _image(size: int = 8) -> torch.Tensor:
    # every pixel distinct, so two different views can never look alike
    return torch.arange(3 * size * size, dtype=torch.int32).reshape(3, size, size).remainder(251).to(torch.uint8) + 1


def test_each_view_is_torchvisions_crop_and_flip_with_those_parameters():
    views, image = CropFlipViews(size=8, padding=2), _image()
    crop, flip = v2.RandomCrop(8, padding=2), v2.RandomHorizontalFlip(p=1.0)
    for view in range(views.count):
        top, left, flipped = views.params(view)
        params = crop.make_params([image])
        params.update(top=top, left=left)  # torchvision's own crop, at the view's offsets
        expected = crop.transform(image, params)
        expected = flip(expected) if flipped else expected
        assert torch.equal(views.apply(image, view), expected), view
    assert views.count == 5 * 5 * 2
    assert CropFlipViews(32, 4).count == 162  # CIFAR's standard augmentation
    with pytest.raises(ValueError, match="outside 0..49"):
        views.params(50)


def test_torchvision_draws_exactly_these_views_each_about_equally_often():
    views, image = CropFlipViews(size=8, padding=1), _image()
    outcomes = {views.apply(image, view).numpy().tobytes(): view for view in range(views.count)}
    assert len(outcomes) == views.count  # all distinct
    augment = v2.Compose([v2.RandomCrop(8, padding=1), v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    draws = 3600
    counts = np.zeros(views.count, dtype=int)
    for _ in range(draws):
        counts[outcomes[augment(image).numpy().tobytes()]] += 1  # KeyError: a view outside the set
    expected = draws / views.count  # 200 each: a binomial's 5 sigma is about 70
    assert counts.min() > expected - 70 and counts.max() < expected + 70, counts


def test_the_view_stream_is_a_pure_function_of_seed_epoch_and_sample():
    stream = ViewStream(seed=5, pool_size=20000, count=162)
    table = stream.table(3).clone()
    assert torch.equal(ViewStream(5, 20000, 162).table(3), table)  # another process, the same views
    assert not torch.equal(stream.table(4), table)  # a new epoch, new views
    assert not torch.equal(ViewStream(6, 20000, 162).table(3), table)  # another seed, other views
    assert torch.equal(stream.views(3, torch.tensor([7, 0, 7])), table[[7, 0, 7]])
    counts = torch.bincount(table, minlength=162).float()
    assert table.min() >= 0 and table.max() < 162
    assert (counts - 20000 / 162).abs().max() < 5 * (20000 / 162) ** 0.5  # uniform over the views


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, np.random.default_rng(0))
    return root


def _splits(root, **values) -> DataSplits:
    cfg = data_cfg("cifar10", root, augment="cifar_standard", verify_checksums=False, val_fraction=0.25, **values)
    return DataSplits.build(cfg, resolve_seeds(0, None))


@pytest.mark.parametrize("workers", [0, 1])
def test_the_training_loader_gives_each_sample_its_streams_view(cifar_root, workers):
    splits = _splits(cifar_root, num_workers=workers)
    assert splits.views == CropFlipViews(32, 4)
    loader = splits.training_loader("student", order_seed=11)
    stream = splits.view_stream(11)
    for epoch in (0, 2):
        loader.sampler.set_epoch(epoch)
        for x, _, index in loader:
            for row, sample in zip(x, index.tolist()):
                image, _ = splits.source.train.dataset[sample]
                expected = splits.eval_transform(splits.views.apply(image, int(stream.table(epoch)[sample])))
                assert torch.equal(row, expected)
    # the epoch's batches are replayed exactly by a new loader (a resumed run): same order, same views
    first = [x for x, _, _ in loader]
    again = splits.training_loader("student", order_seed=11)
    again.sampler.set_epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, (x for x, _, _ in again)))


def test_presets_with_unbounded_parameters_keep_torchvisions_draws(cifar_root):
    assert _splits(cifar_root).views is not None
    assert DataSplits.build(data_cfg("cifar10", cifar_root, augment="cifar_rotation", verify_checksums=False,
                                     val_fraction=0.25), resolve_seeds(0, None)).views is None
    assert DataSplits.build(data_cfg("cifar10", cifar_root, augment="none", verify_checksums=False,
                                     val_fraction=0.25), resolve_seeds(0, None)).views is None
