"""Paper 000's deviation summaries: phi_s - phi_t by teacher-confidence quarter and by label noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from support import run_in_process
from kdrun.metrics import confidence_by_noise, confidence_deviations
from kdrun.metrics.per_sample import log_odds


def two_class_logits(phi: np.ndarray) -> np.ndarray:
    """Logits whose class 0 has log-odds exactly `phi` (two classes: phi = f_0 - f_1)."""
    return np.stack([phi, np.zeros_like(phi)], axis=1)


def test_quarter_gaps_by_hand():
    teacher_phi = np.array([5.0, 1.0, 7.0, 2.0, 3.0, 8.0, 4.0, 6.0])  # every row's top class is class 0
    shift = np.array([0.5, -2.0, 0.0, -1.0, 0.25, 1.0, 0.0, 0.5])
    result = confidence_deviations(two_class_logits(teacher_phi), two_class_logits(teacher_phi + shift))
    # quarters of the ranking by teacher phi: {1, 2}, {3, 4}, {5, 6}, {7, 8}
    gaps = {name: value for name, value in result.items() if name.startswith("phi_gap")}
    assert gaps == pytest.approx({"phi_gap_q1": (-2.0 - 1.0) / 2, "phi_gap_q2": (0.25 + 0.0) / 2,
                                  "phi_gap_q3": (0.5 + 0.5) / 2, "phi_gap_q4": (0.0 + 1.0) / 2,
                                  "phi_gap_q1_minus_q4": -1.5 - 0.5})


def test_a_student_equal_to_its_teacher_has_no_gap_and_quarters_follow_the_top_class():
    logits = np.random.default_rng(0).normal(size=(103, 5)) * 3
    result = confidence_deviations(logits, logits.copy())
    assert set(result) == {"phi_gap_q1", "phi_gap_q2", "phi_gap_q3", "phi_gap_q4", "phi_gap_q1_minus_q4",
                           "kl_q1", "kl_q2", "kl_q3", "kl_q4"}
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in result.values())
    # the gap is taken on the teacher's top class even where the student prefers another class
    student = logits.copy()
    rows = np.arange(len(logits))
    student[rows, logits.argmax(1)] -= 10.0
    expected = log_odds(student, logits.argmax(1)) - log_odds(logits, logits.argmax(1))
    order = np.argsort(log_odds(logits, logits.argmax(1)))
    assert confidence_deviations(logits, student)["phi_gap_q1"] == pytest.approx(
        expected[order[:26]].mean())  # array_split puts the extra samples first: 26, 26, 26, 25


def test_saturated_teacher_still_ranks_and_gives_finite_gaps():
    # float32 softmax gives p = 1 exactly for margins above ~17 nats; phi from the logits does not
    teacher_phi = np.array([20.0, 40.0, 60.0, 80.0])
    result = confidence_deviations(two_class_logits(teacher_phi), two_class_logits(teacher_phi - [1, 2, 3, 4]))
    gaps = {name: value for name, value in result.items() if name.startswith("phi_gap")}
    assert gaps == pytest.approx({"phi_gap_q1": -1.0, "phi_gap_q2": -2.0, "phi_gap_q3": -3.0, "phi_gap_q4": -4.0,
                                  "phi_gap_q1_minus_q4": 3.0})
    assert all(math.isfinite(result[f"kl_q{quarter}"]) for quarter in range(1, 5))


def test_noise_split_and_each_models_own_confidence():
    teacher_phi = np.array([0.5, 4.0, 1.0, 5.0, 6.0, 0.2])
    noisy = np.array([True, False, True, False, False, True])
    student_phi = teacher_phi + np.array([-1.0, 0.0, -3.0, 1.0, 0.5, -2.0])
    result = confidence_deviations(two_class_logits(teacher_phi), two_class_logits(student_phi), noisy)
    assert result["phi_gap_noisy"] == pytest.approx(-2.0)
    assert result["phi_gap_clean"] == pytest.approx(0.5)
    assert confidence_by_noise(two_class_logits(teacher_phi), noisy) == pytest.approx(
        {"phi_noisy": (0.5 + 1.0 + 0.2) / 3, "phi_clean": 5.0})
    # the model's own top class: a negative phi on class 0 means class 1 is on top, with phi = -phi_0
    flipped = confidence_by_noise(two_class_logits(-teacher_phi), noisy)
    assert flipped == pytest.approx({"phi_noisy": (0.5 + 1.0 + 0.2) / 3, "phi_clean": 5.0})


def test_kl_by_quarter_matches_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(3)
    teacher, student = rng.normal(size=(40, 4)) * 2, rng.normal(size=(40, 4))
    result = confidence_deviations(teacher, student)
    p_t = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
    p_s = np.exp(student) / np.exp(student).sum(1, keepdims=True)
    kl = entropy(p_t, p_s, axis=1)
    order = np.argsort(log_odds(teacher, teacher.argmax(1)))
    for quarter in range(4):
        assert result[f"kl_q{quarter + 1}"] == pytest.approx(kl[order[10 * quarter: 10 * quarter + 10]].mean())


def test_true_class_gaps_rank_by_the_teachers_confidence_on_the_true_class():
    teacher_phi = np.array([3.0, -2.0, 1.0, -4.0, 0.5, 2.0, -1.0, 4.0])  # phi of class 0, the true class
    shift = np.array([0.1, -1.0, 0.2, -3.0, 0.0, 0.3, -0.5, 1.0])
    labels = np.zeros(8, dtype=int)
    result = confidence_deviations(two_class_logits(teacher_phi), two_class_logits(teacher_phi + shift),
                                   true_labels=labels)
    # rising teacher phi on class 0: -4, -2 | -1, 0.5 | 1, 2 | 3, 4
    assert result["phi_gap_true_q1"] == pytest.approx((-3.0 - 1.0) / 2)
    assert result["phi_gap_true_q4"] == pytest.approx((0.1 + 1.0) / 2)
    assert result["phi_gap_true_q1_minus_q4"] == pytest.approx(-2.0 - 0.55)
    with pytest.raises(ValueError, match=r"true labels \(7,\) must hold one class per sample \(8\)"):
        confidence_deviations(two_class_logits(teacher_phi), two_class_logits(teacher_phi), true_labels=labels[:7])


@pytest.mark.parametrize("mask", [None, np.zeros(8, bool), np.ones(8, bool)])
def test_no_noise_split_without_both_groups(mask):
    logits = np.random.default_rng(1).normal(size=(8, 3))
    assert "phi_gap_noisy" not in confidence_deviations(logits, logits, mask)
    assert confidence_by_noise(logits, mask) == {}


def test_bad_shapes_are_named():
    logits = np.zeros((8, 3))
    with pytest.raises(ValueError, match=r"noise mask \(7,\) must hold one flag per sample \(8\)"):
        confidence_by_noise(logits, np.zeros(7, bool))
    with pytest.raises(ValueError, match=r"teacher logits \(8, 3\) and student logits \(8, 4\)"):
        confidence_deviations(logits, np.zeros((8, 4)))
    assert confidence_deviations(logits[:3], logits[:3]) == {}  # fewer samples than quarters


def test_a_run_with_label_noise_reports_the_summaries(tmp_path):
    metrics, _ = run_in_process(tmp_path, [
        "data=gaussian_binary", "data.n_train=300", "data.n_val=100", "data.n_test=200", "teacher=mlp",
        "student=mlp", "data.label_noise.kind=symmetric", "data.label_noise.fraction=0.25"])
    for split in ("train", "test"):
        for quarter in range(1, 5):
            assert math.isfinite(metrics[f"student/{split}/phi_gap_q{quarter}"])
    for role in ("teacher", "student"):
        assert math.isfinite(metrics[f"{role}/train/phi_noisy"]) and math.isfinite(metrics[f"{role}/train/phi_clean"])
        assert f"{role}/test/phi_noisy" not in metrics  # the test split has no flipped labels
    assert math.isfinite(metrics["student/train/phi_gap_noisy"])
    assert math.isfinite(metrics["student/test/kl_q1"]) and math.isfinite(metrics["student/train/phi_gap_true_q1"])
    assert "student/test/phi_gap_noisy" not in metrics
