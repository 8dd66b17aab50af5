"""Finite-view augmentation: each view is torchvision's crop and flip, torchvision draws exactly these views, the
stream of views is a pure function of (seed, epoch, sample), and the loader applies it (also in worker processes).
Pre-drawn views (data.view_pool) of unbounded presets: torchvision's draw under a per-(sample, view) seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from support import data_cfg
from kdrun.config.seeds import resolve_seeds
from kdrun.data.datamodule import DataSplits
from kdrun.data.views import CropFlipViews, PooledViews, ViewStream, student_views
from kdrun.errors import ConfigError


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


def _splits(root, **values) -> DataSplits:
    values = {"augment": "cifar_standard", "verify_checksums": False, "val_fraction": 0.25, **values}
    cfg = data_cfg("cifar10", root, **values)
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


def test_a_batch_view_equals_the_view_of_each_image():
    views = CropFlipViews(8, 2)
    images = torch.stack([_image(), _image().flip(0), _image() // 2])
    for view in range(views.count):
        expected = torch.stack([views.apply(image, view) for image in images])
        assert torch.equal(views.apply_batch(images, view), expected), view


@pytest.mark.parametrize("preset", ["cifar_rotation", "randaugment"])
def test_a_pooled_view_is_torchvisions_draw_under_its_own_seed_and_leaves_the_callers_generator_alone(preset):
    from kdrun.data.transforms import augmentation

    cfg = data_cfg("cifar10", augment=preset, view_pool=4, view_pool_seed=3)
    views = student_views(cfg, 8)
    assert isinstance(views, PooledViews) and views.count == 4
    image = _image()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    outcomes = {(index, view): views.apply(image, view, index) for index in (0, 1) for view in range(4)}
    assert torch.equal(torch.get_rng_state(), state)  # training's own random stream is not disturbed
    assert len({outcome.numpy().tobytes() for outcome in outcomes.values()}) == 8  # every (sample, view) its own
    assert all(torch.equal(views.apply(image, view, index), outcome) for (index, view), outcome in outcomes.items())
    # exactly what torchvision's preset draws under that seed: the distribution is the preset's
    seed = int(np.random.SeedSequence([3, 1, 2, 0x706F6F6C]).generate_state(1)[0])
    torch.manual_seed(seed)
    assert torch.equal(v2.Compose(augmentation(preset, 8, 4))(image), outcomes[(1, 2)])
    other_seed = student_views(data_cfg("cifar10", augment=preset, view_pool=4, view_pool_seed=4), 8)
    assert not torch.equal(other_seed.apply(image, 2, 1), outcomes[(1, 2)])
    assert views.describe()["seed"] == 3 and views.describe()["preset"] == preset
    with pytest.raises(ValueError, match="dataset index"):
        views.apply(image, 0)


def test_the_student_trains_on_the_pool_and_the_teacher_on_fresh_draws(cifar_root):
    splits = _splits(cifar_root, augment="cifar_rotation", view_pool=3)
    assert isinstance(splits.views, PooledViews) and splits.teacher_views is None
    stream = splits.view_stream(5)
    loader = splits.training_loader("student", order_seed=5)
    for x, _, index in loader:
        for row, sample in zip(x, index.tolist()):
            image, _ = splits.source.train.dataset[sample]
            view = int(stream.table(0)[sample])
            assert torch.equal(row, splits.eval_transform(splits.views.apply(image, view, sample)))
    teacher = splits.training_loader("teacher", order_seed=5)
    assert len(teacher.dataset[0]) == 3 and not hasattr(teacher.dataset, "stream")  # torchvision's own draws
    # a pooled cifar_standard keeps the pool too (V of its 162 views per sample); the teacher keeps all 162
    standard = _splits(cifar_root, view_pool=2)
    assert standard.views.count == 2 and standard.teacher_views == CropFlipViews(32, 4)


@pytest.mark.parametrize("values, message", [
    ({"view_pool": 0}, r"data.view_pool=0.*allowed"),
    ({"view_pool": 2.5}, r"data.view_pool=2.5"),
    ({"view_pool": 4, "augment": "none"}, r"data.view_pool=4 pre-draws views.*data.augment=none.*allowed"),
    ({"view_pool": 4, "view_pool_seed": -1}, r"data.view_pool_seed=-1"),
])
def test_bad_view_pool_settings_are_refused(cifar_root, values, message):
    with pytest.raises(ConfigError, match=message):
        _splits(cifar_root, **values)


def test_the_pool_changes_the_students_identity_only_when_set_and_never_the_teachers_key(tmp_path, cifar_root):
    from support import compose_config
    from kdrun.engine.identities import student_identity
    from kdrun.teachers.identity import teacher_identity

    def identities(*overrides):
        cfg = compose_config(tmp_path, ["data=cifar10", f"data.root={cifar_root}", "data.verify_checksums=false",
                                        "data.val_fraction=0.25", "data.augment=cifar_rotation", *overrides])
        seeds = resolve_seeds(cfg.seed, cfg.seeds)
        splits = DataSplits.build(cfg.data, seeds)
        return teacher_identity(cfg, splits), student_identity(cfg, splits, seeds, {"store_key": "k"}, False)

    teacher, student = identities()
    assert "view_pool" not in student["data"] and "view_pool_seed" not in student["data"]  # as before the option
    pooled_teacher, pooled_student = identities("data.view_pool=4")
    assert pooled_teacher == teacher and pooled_student["data"]["view_pool"] == 4 and pooled_student != student
    assert identities("data.view_pool=4", "data.view_pool_seed=1")[1] != pooled_student
