"""Paper 004's four-way split: the student trains on the distill part and never sees its labels."""

from __future__ import annotations

import numpy as np
import pytest

from support import compose_config, run_in_process
from kdrun.data.datamodule import WITHHELD_LABEL, DataSplits
from kdrun.errors import ConfigError
from kdrun.pipeline import run
from kdrun.config.seeds import resolve_seeds

DISTILL4 = ["data=gaussian_mixture", "data.n_train=600", "data.n_val=150", "data.n_test=300",
            "data.split=distill4", "teacher=mlp", "student=mlp"]
PURE_KD = ["loss.alpha=1.0"]


def splits_for(tmp_path, overrides):
    cfg = compose_config(tmp_path, overrides)
    return DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))


def test_distill4_partitions_the_pool_and_withholds_student_labels(tmp_path):
    splits = splits_for(tmp_path, DISTILL4 + PURE_KD + ["data.distill_fraction=0.75"])
    teacher, student = splits.teacher_indices, splits.student_indices
    assert len(teacher) == 150 and len(student) == 450
    assert not set(teacher) & set(student)
    assert len(splits.source.val) == 150  # dev
    seen = [batch[1] for batch in splits.training_loader("student", order_seed=0)]
    assert all((y == WITHHELD_LABEL).all() for y in seen)  # every label the student's loss could read
    teacher_labels = np.concatenate([batch[1].numpy() for batch in splits.training_loader("teacher", order_seed=0)])
    assert (teacher_labels >= 0).all()  # the teacher trains on real labels


def test_distill4_run_trains_the_student_without_labels(tmp_path):
    metrics, out = run_in_process(tmp_path, DISTILL4 + PURE_KD, name="distill4")
    assert metrics["student/train_size"] == 300 and metrics["teacher/train_size"] == 300
    assert metrics["student/test/agreement"] > 0.7
    predictions = np.load(out / "predictions.npz")
    assert (predictions["train_label"] >= 0).all()  # evaluation still reports the true labels


@pytest.mark.parametrize("overrides, fragment", [
    (["loss.alpha=0.5"], "withholds labels from the student, but loss kd uses them"),
    (["loss=ce"], "loss ce uses them"),
    (PURE_KD + ["data.kappa=0.5"], "data.kappa=0.5"),
    (PURE_KD + ["data.distill_fraction=1.0"], "data.distill_fraction=1.0"),
    (PURE_KD + ["data.split=fourway"], "data.split='fourway'"),
])
def test_distill4_refuses_label_losses_and_kappa(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError) as error:
        run(compose_config(tmp_path, DISTILL4 + overrides), tmp_path / "bad")
    assert fragment in str(error.value)
    assert not (tmp_path / "bad").exists()
