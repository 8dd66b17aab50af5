"""Label noise: exact flip counts, where labels go, seeding, and only the training pool changes."""

from __future__ import annotations

import numpy as np
import pytest

from support import run_in_process
from kdrun.data.noise import apply_label_noise
from kdrun.errors import ConfigError

TARGETS = np.repeat(np.arange(10), 50)


def test_symmetric_noise_flips_exactly_the_fraction_to_other_classes():
    noisy, mask = apply_label_noise(TARGETS, 10, "symmetric", 0.3, seed=1)
    assert mask.sum() == 150
    assert (noisy[mask] != TARGETS[mask]).all() and (noisy[~mask] == TARGETS[~mask]).all()
    # flips spread over all the other classes
    assert len(np.unique(noisy[mask] - TARGETS[mask])) > 5
    again, again_mask = apply_label_noise(TARGETS, 10, "symmetric", 0.3, seed=1)
    assert (again == noisy).all() and (again_mask == mask).all()
    other, _ = apply_label_noise(TARGETS, 10, "symmetric", 0.3, seed=2)
    assert (other != noisy).any()


def test_class_dependent_noise_uses_the_pair_map_or_a_given_mapping():
    noisy, mask = apply_label_noise(TARGETS, 10, "class_dependent", 0.2, seed=0)
    assert mask.sum() == 100
    assert ((TARGETS[mask] + 1) % 10 == noisy[mask]).all()
    mapping = [9, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    noisy, mask = apply_label_noise(TARGETS, 10, "class_dependent", 0.2, seed=0, mapping=mapping)
    assert (np.asarray(mapping)[TARGETS[mask]] == noisy[mask]).all()


@pytest.mark.parametrize("kind, fraction, mapping, fragment", [
    ("gaussian", 0.1, None, "kind='gaussian'"),
    ("symmetric", 1.5, None, "fraction=1.5"),
    ("class_dependent", 0.1, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "mapping="),
    ("class_dependent", 0.1, [1, 2], "mapping="),
])
def test_bad_noise_settings_are_refused(kind, fraction, mapping, fragment):
    with pytest.raises(ConfigError) as error:
        apply_label_noise(TARGETS, 10, kind, fraction, seed=0, mapping=mapping)
    assert fragment in str(error.value)


def test_noisy_run_saves_mask_and_clean_labels_and_keys_the_teacher(tmp_path):
    clean, _ = run_in_process(tmp_path, name="clean")
    noisy, out = run_in_process(tmp_path, ["data.label_noise.kind=symmetric", "data.label_noise.fraction=0.2"],
                                name="noisy")
    assert noisy["teacher/key"] != clean["teacher/key"]  # the noise is part of the teacher's identity
    assert noisy["data/noisy_labels"] == round(0.2 * noisy["teacher/train_size"])
    predictions = np.load(out / "predictions.npz")
    mask, label, clean_label = predictions["train_noise_mask"], predictions["train_label"], predictions["train_clean_label"]
    assert mask.sum() == noisy["data/noisy_labels"]  # kappa = 1: the student sees the whole pool
    assert (label[mask] != clean_label[mask]).all() and (label[~mask] == clean_label[~mask]).all()
    assert "test_noise_mask" not in predictions  # test labels are never touched
