"""Unit tests for kdrun.data (sources, kappa subsets, DataSplits/loaders) and kdrun.config.seeds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import multivariate_normal

from support import data_cfg
from kdrun.data.datamodule import DataSplits, StageDataModule
from kdrun.data.registry import load_source
from kdrun.data.subsets import kappa_subsets, seeded_order
from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.config.seeds import Seeds, derive_seed, resolve_seeds

CONFIGS = config_dir() / "data"
DIGITS_TOTAL = 1797


@pytest.fixture(scope="module")
def digits():
    return load_source(data_cfg("digits"))


@pytest.fixture(scope="module")
def gaussian():
    return load_source(data_cfg("gaussian_binary"))


def split_arrays(split):
    x, y = split.dataset.tensors
    return x.numpy(), y.numpy()


def row_counter(x: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in x.reshape(len(x), -1))


# --------------------------------------------------------------------------------------------
# digits source
# --------------------------------------------------------------------------------------------

def test_digits_split_sizes_add_up(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == DIGITS_TOTAL
    assert len(digits.test) == 360  # test_fraction=0.2 of 1797, rounded up by sklearn
    assert len(digits.val) == 144  # val_fraction=0.1 of the remaining 1437
    assert len(digits.train) == 1293
    for split in (digits.train, digits.val, digits.test):
        assert len(split.dataset) == len(split.targets)
        assert split.oracle_probs is None
    assert digits.num_classes == 10
    assert tuple(digits.input_shape) == (1, 8, 8)


def test_digits_splits_are_disjoint_and_cover_the_dataset(digits):
    from sklearn.datasets import load_digits

    full = (load_digits().images / 16.0).astype(np.float32)
    parts = [split_arrays(s)[0] for s in (digits.train, digits.val, digits.test)]
    counters = [row_counter(x) for x in parts]
    # pairwise disjoint pixel rows
    for i in range(3):
        for j in range(i + 1, 3):
            assert not set(counters[i]) & set(counters[j])
    # together exactly the original multiset of images
    assert counters[0] + counters[1] + counters[2] == row_counter(full)


def test_digits_splits_are_stratified(digits):
    from sklearn.datasets import load_digits

    overall = np.bincount(load_digits().target, minlength=10) / DIGITS_TOTAL
    for split in (digits.train, digits.val, digits.test):
        counts = np.bincount(split.targets, minlength=10)
        assert np.all(np.abs(counts - overall * len(split)) <= 1.0 + 1e-9)
        # the tensor labels and the targets array agree
        assert np.array_equal(split_arrays(split)[1], split.targets)


def test_digits_images_are_scaled_and_shaped(digits):
    for split in (digits.train, digits.val, digits.test):
        x, y = split.dataset[0]
        assert x.shape == (1, 8, 8) and x.dtype == torch.float32
        assert y.dtype == torch.long
        xs = split_arrays(split)[0]
        assert xs.shape[1:] == (1, 8, 8)
        assert xs.min() >= 0.0 and xs.max() <= 1.0
    assert split_arrays(digits.train)[0].max() == 1.0


def test_digits_splits_depend_only_on_the_split_seed(digits):
    again = load_source(data_cfg("digits"))
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        assert np.array_equal(split_arrays(a)[0], split_arrays(b)[0])
        assert np.array_equal(a.targets, b.targets)
    other = load_source(data_cfg("digits", split_seed=1))
    assert not np.array_equal(split_arrays(other.test)[0], split_arrays(digits.test)[0])
    assert len(other.test) == len(digits.test)


@pytest.mark.parametrize("key,value", [("test_fraction", 0.0), ("test_fraction", 1.0), ("val_fraction", 1.5)])
def test_digits_rejects_bad_fractions(key, value):
    with pytest.raises(ConfigError, match=key):
        load_source(data_cfg("digits", **{key: value}))


def test_load_source_checks_name_and_num_classes():
    with pytest.raises(ConfigError, match="nosuch"):
        load_source(data_cfg("digits", source="nosuch"))
    with pytest.raises(ConfigError, match="num_classes=3"):
        load_source(data_cfg("digits", num_classes=3))


# --------------------------------------------------------------------------------------------
# gaussian_binary source
# --------------------------------------------------------------------------------------------

def test_gaussian_split_sizes_and_oracle_rows(gaussian):
    assert (len(gaussian.train), len(gaussian.val), len(gaussian.test)) == (1000, 500, 10000)
    assert gaussian.num_classes == 2 and tuple(gaussian.input_shape) == (10,)
    for split in (gaussian.train, gaussian.val, gaussian.test):
        probs = split.oracle_probs
        assert probs.shape == (len(split), 2)
        assert np.all(probs >= 0) and np.all(probs <= 1)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def scipy_posterior(x: np.ndarray, mean_scale: float) -> np.ndarray:
    """p(y=1|x) from the two class densities N(+-mu*1, I) with equal priors, via scipy."""
    dim = x.shape[1]
    log_pos = multivariate_normal(mean=np.full(dim, mean_scale), cov=np.eye(dim)).logpdf(x)
    log_neg = multivariate_normal(mean=np.full(dim, -mean_scale), cov=np.eye(dim)).logpdf(x)
    log_half = np.log(0.5)
    return np.exp(log_half + log_pos - np.logaddexp(log_half + log_pos, log_half + log_neg))


@pytest.mark.parametrize("mean_scale", [0.1, 0.5, 1.0, 2.0])
def test_gaussian_oracle_equals_scipy_posterior(mean_scale):
    source = load_source(data_cfg("gaussian_binary", mean_scale=mean_scale, n_train=300, n_val=50, n_test=400))
    for split in (source.train, source.val, source.test):
        x = split.dataset.tensors[0].numpy().astype(np.float64)
        expected = scipy_posterior(x, mean_scale)
        np.testing.assert_allclose(split.oracle_probs[:, 1], expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(split.oracle_probs[:, 0], 1.0 - expected, rtol=0, atol=1e-5)


def test_gaussian_class_means_and_labels():
    mu = 1.5
    source = load_source(data_cfg("gaussian_binary", mean_scale=mu))
    x = source.test.dataset.tensors[0].numpy()
    y = source.test.targets
    assert set(np.unique(y)) == {0, 1}
    assert abs(y.mean() - 0.5) < 0.03  # equal priors
    np.testing.assert_allclose(x[y == 1].mean(axis=0), mu, atol=0.1)
    np.testing.assert_allclose(x[y == 0].mean(axis=0), -mu, atol=0.1)
    np.testing.assert_allclose(x[y == 1].std(axis=0), 1.0, atol=0.1)


def test_gaussian_bayes_classifier_is_nearly_perfect_at_mean_scale_1(gaussian):
    # Bayes error = Phi(-mu * sqrt(dim)) = Phi(-3.16) ~ 0.0008
    bayes = gaussian.test.oracle_probs.argmax(axis=1)
    assert (bayes == gaussian.test.targets).mean() > 0.99


def test_gaussian_is_reproducible_and_rejects_bad_sizes():
    a = load_source(data_cfg("gaussian_binary", n_test=100))
    b = load_source(data_cfg("gaussian_binary", n_test=100))
    assert torch.equal(a.train.dataset.tensors[0], b.train.dataset.tensors[0])
    c = load_source(data_cfg("gaussian_binary", n_test=100, generator_seed=1))
    assert not torch.equal(a.train.dataset.tensors[0], c.train.dataset.tensors[0])
    for key in ("n_train", "n_val", "n_test", "dim"):
        with pytest.raises(ConfigError, match=rf"data\.{key}=0"):
            load_source(data_cfg("gaussian_binary", **{key: 0}))


# --------------------------------------------------------------------------------------------
# kappa subsets
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool_targets(digits):
    return digits.train.targets  # 1293 samples, 10 classes


def subsets(targets, teacher_size=None, kappa=1.0, student_size=None, pool_seed=0, subset_seed=0,
            stratified=False):
    return kappa_subsets(targets, 10, teacher_size=teacher_size, kappa=kappa, student_size=student_size,
                         pool_seed=pool_seed, subset_seed=subset_seed, stratified=stratified)


@pytest.mark.parametrize("stratified", [False, True])
def test_teacher_defaults_to_the_whole_pool(pool_targets, stratified):
    teacher, student = subsets(pool_targets, stratified=stratified)
    assert np.array_equal(teacher, np.arange(len(pool_targets)))
    assert np.array_equal(student, teacher)  # kappa = 1


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("teacher_size", [None, 500])
def test_sizes_and_nesting(pool_targets, stratified, teacher_size):
    kappas = [0.1, 0.25, 0.5, 1.0] + ([1.5, 2.0] if teacher_size is not None else [])
    n = len(pool_targets) if teacher_size is None else teacher_size
    previous, teacher_ref = None, None
    for kappa in kappas:
        teacher, student = subsets(pool_targets, teacher_size, kappa, subset_seed=7, stratified=stratified)
        assert len(teacher) == n and len(np.unique(teacher)) == n
        assert len(student) == round(kappa * n) and len(np.unique(student)) == len(student)
        assert np.all((student >= 0) & (student < len(pool_targets)))
        if teacher_ref is None:
            teacher_ref = teacher
        assert np.array_equal(teacher, teacher_ref)  # the teacher set does not move with kappa
        if kappa <= 1:
            assert set(student) <= set(teacher)
        else:
            assert set(teacher) < set(student)  # all of the teacher's samples, plus others
            assert len(set(student) - set(teacher)) == len(student) - n
        if previous is not None:
            assert set(previous) <= set(student)  # smaller kappa nested in larger
        previous = student


def test_kappa_one_with_smaller_teacher_is_exactly_the_teacher_set(pool_targets):
    teacher, student = subsets(pool_targets, teacher_size=300, kappa=1.0, subset_seed=3)
    assert np.array_equal(teacher, student)


@pytest.mark.parametrize("stratified", [False, True])
def test_subset_seed_moves_the_student_but_not_the_teacher(pool_targets, stratified):
    t0, s0 = subsets(pool_targets, 500, 0.5, subset_seed=0, stratified=stratified)
    t1, s1 = subsets(pool_targets, 500, 0.5, subset_seed=1, stratified=stratified)
    assert np.array_equal(t0, t1)
    assert not np.array_equal(s0, s1)
    # kappa > 1: the teacher part is forced, the extra samples differ
    t2, s2 = subsets(pool_targets, 500, 1.5, subset_seed=0, stratified=stratified)
    t3, s3 = subsets(pool_targets, 500, 1.5, subset_seed=1, stratified=stratified)
    assert np.array_equal(t2, t3) and np.array_equal(t0, t2)
    assert not np.array_equal(s2, s3)
    # the same seeds reproduce the same sets
    t4, s4 = subsets(pool_targets, 500, 0.5, subset_seed=0, stratified=stratified)
    assert np.array_equal(t0, t4) and np.array_equal(s0, s4)


def test_pool_seed_moves_the_teacher(pool_targets):
    t0, _ = subsets(pool_targets, 500, pool_seed=0)
    t1, _ = subsets(pool_targets, 500, pool_seed=1)
    assert not np.array_equal(t0, t1)


def assert_within_one(chosen_labels, reference_labels, num_classes=10):
    expected = len(chosen_labels) * np.bincount(reference_labels, minlength=num_classes) / len(reference_labels)
    got = np.bincount(chosen_labels, minlength=num_classes)
    deviation = np.abs(got - expected)
    assert deviation.max() <= 1.0 + 1e-9, (len(chosen_labels), got.tolist(), expected.round(2).tolist())


def _stratified_kappa_case(pool_targets, subset_seed):
    for teacher_size in (None, 600):
        kappas = (0.1, 0.25, 0.5, 1.0) + ((1.5, 2.0) if teacher_size else ())
        for kappa in kappas:
            teacher, student = subsets(pool_targets, teacher_size, kappa, subset_seed=subset_seed, stratified=True)
            assert_within_one(pool_targets[teacher], pool_targets)
            if kappa <= 1:
                assert_within_one(pool_targets[student], pool_targets[teacher])
            else:
                extra = np.setdiff1d(student, teacher)
                rest = np.setdiff1d(np.arange(len(pool_targets)), teacher)
                assert_within_one(pool_targets[extra], pool_targets[rest])


@pytest.mark.parametrize("subset_seed", [0, 1, 2, 3])
def test_stratified_draws_keep_class_proportions(pool_targets, subset_seed):
    _stratified_kappa_case(pool_targets, subset_seed)


def test_stratified_binary_order_every_prefix_within_one():
    rng = np.random.default_rng(5)
    targets = (rng.random(400) < 0.3).astype(np.int64)
    for seed in range(5):
        order = seeded_order(targets, seed, stratified=True)
        assert sorted(order.tolist()) == list(range(len(targets)))
        share = np.bincount(targets) / len(targets)
        counts = np.cumsum(np.eye(2)[targets[order]], axis=0)
        expected = np.arange(1, len(targets) + 1)[:, None] * share
        assert np.abs(counts - expected).max() <= 1.0 + 1e-9


def test_stratified_order_every_prefix_within_one_for_ten_classes(pool_targets):
    order = seeded_order(pool_targets, 1, stratified=True)
    share = np.bincount(pool_targets, minlength=10) / len(pool_targets)
    counts = np.cumsum(np.eye(10)[pool_targets[order]], axis=0)
    expected = np.arange(1, len(pool_targets) + 1)[:, None] * share
    assert np.abs(counts - expected).max() <= 1.0 + 1e-9


def test_unstratified_order_is_a_seeded_permutation(pool_targets):
    a = seeded_order(pool_targets, 4, stratified=False)
    assert sorted(a.tolist()) == list(range(len(pool_targets)))
    assert np.array_equal(a, seeded_order(pool_targets, 4, stratified=False))
    assert not np.array_equal(a, seeded_order(pool_targets, 5, stratified=False))


def test_student_size_gives_an_absolute_m(pool_targets):
    teacher, student = subsets(pool_targets, teacher_size=400, kappa=1.0, student_size=123, subset_seed=2)
    assert len(teacher) == 400 and len(student) == 123
    assert set(student) <= set(teacher)
    _, student_none_kappa = subsets(pool_targets, teacher_size=400, kappa=None, student_size=123, subset_seed=2)
    assert np.array_equal(student, student_none_kappa)
    _, bigger = subsets(pool_targets, teacher_size=400, kappa=None, student_size=700, subset_seed=2)
    assert len(bigger) == 700 and set(teacher) < set(bigger) and set(student) <= set(bigger)


@pytest.mark.parametrize("kappa", [0, 0.0, -0.5, -2])
def test_non_positive_kappa_is_rejected(pool_targets, kappa):
    with pytest.raises(ConfigError, match=rf"data\.kappa={kappa}\b") as info:
        subsets(pool_targets, kappa=kappa)
    assert str(kappa) in str(info.value)


def test_kappa_too_small_for_one_sample_per_class(pool_targets):
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, teacher_size=100, kappa=0.05)  # M = 5 < 10 classes
    message = str(info.value)
    assert "0.05" in message and "M=5" in message and "10 classes" in message
    with pytest.raises(ConfigError, match="0.0001"):
        subsets(pool_targets, kappa=0.0001)  # M = 0


def test_kappa_beyond_the_pool_names_the_pool_size(pool_targets):
    pool = len(pool_targets)
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, kappa=1.5)  # N = whole pool
    assert "1.5" in str(info.value) and str(pool) in str(info.value)
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, teacher_size=500, kappa=3.0)  # M = 1500 > 1293
    assert "3.0" in str(info.value) and str(pool) in str(info.value)
    # the boundary itself is allowed
    _, student = subsets(pool_targets, teacher_size=431, kappa=3.0)
    assert len(student) == pool


@pytest.mark.parametrize("teacher_size", [1294, 5000, 0, -3])
def test_teacher_size_outside_the_pool(pool_targets, teacher_size):
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, teacher_size=teacher_size)
    assert f"data.teacher_size={teacher_size}" in str(info.value)
    assert str(len(pool_targets)) in str(info.value)


def test_kappa_and_student_size_together_are_rejected(pool_targets):
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, kappa=0.5, student_size=200)
    assert "0.5" in str(info.value) and "200" in str(info.value)


@pytest.mark.parametrize("student_size", [0, -1])
def test_non_positive_student_size_is_rejected(pool_targets, student_size):
    with pytest.raises(ConfigError, match=rf"data\.student_size={student_size}"):
        subsets(pool_targets, student_size=student_size)


@pytest.mark.parametrize("student_size", [5, 5000])
def test_out_of_range_student_size_error_names_student_size(pool_targets, student_size):
    with pytest.raises(ConfigError) as info:
        subsets(pool_targets, student_size=student_size)
    assert f"student_size={student_size}" in str(info.value)


# --------------------------------------------------------------------------------------------
# DataSplits + loaders
# --------------------------------------------------------------------------------------------

SEEDS = Seeds(master=0, init=1, data_order=2, subset=3)


@pytest.fixture(scope="module")
def splits():
    cfg = data_cfg("digits", teacher_size=600, kappa=0.5, batch_size=32)
    return DataSplits.build(cfg, SEEDS)


def test_build_uses_the_config_and_the_subset_seed(splits, pool_targets):
    assert splits.num_classes == 10 and splits.batch_size == 32 and splits.num_workers == 0
    teacher, student = kappa_subsets(pool_targets, 10, 600, 0.5, None, 0, SEEDS.subset, False)
    assert np.array_equal(splits.teacher_indices, teacher)
    assert np.array_equal(splits.student_indices, student)
    assert splits.steps_per_epoch("teacher") == -(-600 // 32)
    assert splits.steps_per_epoch("student") == -(-300 // 32)
    assert len(splits.teacher_indices_digest()) == 64


def test_loader_batches_carry_the_sample_index(splits):
    x_all, y_all = splits.source.train.dataset.tensors
    seen = []
    for x, y, index in splits.loader("train", splits.student_indices, order_seed=11):
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y) == len(index)
        assert torch.equal(x, x_all[index])
        assert torch.equal(y, y_all[index])
        seen.extend(index.tolist())
    assert sorted(seen) == splits.student_indices.tolist()


def test_unshuffled_loader_over_a_whole_split(splits):
    indices = torch.cat([batch[2] for batch in splits.loader("test")])
    assert indices.tolist() == list(range(len(splits.source.test)))
    x_test = splits.source.test.dataset.tensors[0]
    x, _, index = next(iter(splits.loader("test")))
    assert torch.equal(x, x_test[index])


def loader_order(splits, seed):
    return torch.cat([batch[2] for batch in splits.loader("train", splits.teacher_indices, order_seed=seed)]).tolist()


def test_order_seed_fixes_the_shuffle(splits):
    a, b, c = loader_order(splits, 5), loader_order(splits, 5), loader_order(splits, 6)
    assert a == b
    assert a != c
    assert sorted(a) == sorted(c) == splits.teacher_indices.tolist()
    assert a != sorted(a)  # actually shuffled


def test_stage_datamodule_picks_the_stage_subset(splits):
    teacher = torch.cat([b[2] for b in StageDataModule(splits, "teacher", 1).train_dataloader()])
    student = torch.cat([b[2] for b in StageDataModule(splits, "student", 1).train_dataloader()])
    assert sorted(teacher.tolist()) == splits.teacher_indices.tolist()
    assert sorted(student.tolist()) == splits.student_indices.tolist()
    val = torch.cat([b[2] for b in StageDataModule(splits, "student", 1).val_dataloader()])
    assert val.tolist() == list(range(len(splits.source.val)))


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------

def test_derived_seeds_are_distinct_and_deterministic():
    a = resolve_seeds(0, None)
    assert a.master == 0
    assert len({a.init, a.data_order, a.subset}) == 3
    for value in (a.init, a.data_order, a.subset):
        assert isinstance(value, int) and 0 <= value < 2**31
    assert resolve_seeds(0, {}) == a
    assert resolve_seeds(0, {"init": None, "data_order": None, "subset": None}) == a
    b = resolve_seeds(1, None)
    assert (b.init, b.data_order, b.subset) != (a.init, a.data_order, a.subset)
    assert b.init != a.init and b.data_order != a.data_order and b.subset != a.subset
    assert a.init == derive_seed(0, "init")


def test_explicit_seed_overrides_win_including_zero():
    derived = resolve_seeds(42, None)
    s = resolve_seeds(42, {"init": 0, "data_order": 7})
    assert s.init == 0 and s.data_order == 7
    assert s.subset == derived.subset
    s2 = resolve_seeds(42, OmegaConf.create({"init": None, "data_order": None, "subset": 0}))
    assert s2.subset == 0 and s2.init == derived.init and s2.data_order == derived.data_order
