"""Metrics: closed forms, scipy/sklearn references, hand-made examples, and the keys a run writes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from support import read_metrics, run_in_process
from kdrun.errors import ConfigError
from kdrun.evaluation.evaluate import EvaluationOptions, collect_outputs
from kdrun.metrics import (activation_distance, auroc, bias_variance_decomposition, classification_metrics,
                           conditional_agreement, js_divergence, kl_divergence, linear_cka, mse_to_bayes,
                           precision_at_k, rank_disagreement, similarity_metrics, top_k_accuracy)
from kdrun.models import ZooModel


def logits_of(probs) -> torch.Tensor:
    return torch.as_tensor(probs, dtype=torch.float64).log()


def random_case(n=200, k=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=generator, dtype=torch.float64) * 2
    other = torch.randn(n, k, generator=generator, dtype=torch.float64) * 2
    return logits, other, torch.randint(0, k, (n,), generator=generator)


# ---- one model ----

def test_auroc_matches_sklearn_binary_and_one_vs_rest():
    logits, _, labels = random_case(k=2)
    probs = logits.softmax(-1).numpy()
    assert auroc(logits, labels) == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-6)
    logits, _, labels = random_case(k=4, seed=1)
    probs = logits.softmax(-1).numpy()
    for average in ("macro", "weighted"):
        expected = roc_auc_score(labels, probs, multi_class="ovr", average=average)
        assert auroc(logits, labels, average) == pytest.approx(expected, abs=1e-6)


def test_precision_at_k_by_hand_single_and_multi_label():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 0])  # in the top 2 of the first input, last of the second
    assert precision_at_k(logits, labels, 1) == 0.0
    assert precision_at_k(logits, labels, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(0.5)
    label_sets = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0]])
    assert precision_at_k(logits, label_sets, 2) == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert precision_at_k(logits, label_sets, 1) == pytest.approx(0.5)


def test_single_label_precision_at_k_is_top_k_accuracy_over_k():
    logits, _, labels = random_case(k=10, seed=2)
    for k in (1, 3, 5):
        assert precision_at_k(logits, labels, k) == pytest.approx(top_k_accuracy(logits, labels, k) / k)
    assert precision_at_k(logits, labels, 1) == pytest.approx(float((logits.argmax(-1) == labels).double().mean()))


def test_classification_metrics_keys_skip_k_not_below_the_class_count():
    logits, _, labels = random_case(k=2)
    metrics = classification_metrics(logits, labels, precision_ks=(1, 5))
    assert set(metrics) == {"acc", "nll", "ece", "auroc", "precision@1", "top1_acc"}


# ---- student against teacher ----

def test_kl_and_js_match_scipy():
    student, teacher, _ = random_case(n=50, k=5, seed=3)
    p_s, p_t = student.softmax(-1).numpy(), teacher.softmax(-1).numpy()
    assert kl_divergence(teacher, student) == pytest.approx(entropy(p_t, p_s, axis=1).mean())
    assert kl_divergence(student, teacher) == pytest.approx(entropy(p_s, p_t, axis=1).mean())
    assert js_divergence(student, teacher) == pytest.approx((jensenshannon(p_t, p_s, axis=1) ** 2).mean())


def test_label_smoothed_student_against_one_hot_teacher_reproduces_the_check_values():
    # K = 10: a student fitted to 0.19 on the teacher's class and 0.09 elsewhere, a one-hot teacher
    student = logits_of([[0.19] + [0.09] * 9])
    teacher = torch.tensor([[0.0] + [-1e4] * 9], dtype=torch.float64)
    assert activation_distance(student, teacher) == pytest.approx(math.sqrt(0.81 ** 2 + 9 * 0.09 ** 2))
    assert activation_distance(student, teacher) == pytest.approx(0.854, abs=5e-4)
    assert js_divergence(student, teacher) == pytest.approx(0.432, abs=5e-4)


def test_js_stays_finite_where_float32_softmax_underflows():
    teacher = torch.tensor([[0.0, -200.0, -200.0]])  # exp(-200) is 0 in float32
    student = torch.tensor([[-200.0, 0.0, -200.0]])
    assert teacher.softmax(-1)[0, 1] == 0
    assert js_divergence(student, teacher) == pytest.approx(math.log(2), abs=1e-9)  # disjoint supports
    assert math.isfinite(kl_divergence(student, teacher))
    assert js_divergence(teacher, teacher) == pytest.approx(0.0, abs=1e-12)


def test_rank_disagreement_by_hand_and_near_uniform_value():
    teacher = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert rank_disagreement(teacher, teacher) == 0.0
    assert rank_disagreement(torch.tensor([[4.0, 2.0, 3.0, 1.0]]), teacher) == pytest.approx(2 / 4)
    assert rank_disagreement(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), teacher) == pytest.approx(1.0)
    # K = 10, a near-uniform student that keeps the teacher's top class: the other 9 in random
    # order match 1 position in expectation, so RD ≈ (10 - 2) / 10
    generator = torch.Generator().manual_seed(0)
    n, k = 4000, 10
    teacher = torch.arange(k, 0, -1, dtype=torch.float64).repeat(n, 1)
    student = torch.rand(n, k, generator=generator, dtype=torch.float64) * 0.01
    student[:, 0] = 1.0
    assert rank_disagreement(student, teacher) == pytest.approx(0.80, abs=0.01)


def test_agreement_split_by_teacher_correctness():
    labels = torch.tensor([0, 1, 2, 0])
    teacher = torch.eye(3)[[0, 1, 0, 1]] * 5  # right, right, wrong, wrong
    student = torch.eye(3)[[0, 2, 0, 2]] * 5  # agrees on inputs 0 and 2
    assert conditional_agreement(student, teacher, labels, True) == pytest.approx(1 / 2)
    assert conditional_agreement(student, teacher, labels, False) == pytest.approx(1 / 2)
    assert math.isnan(conditional_agreement(student[:2], teacher[:2], labels[:2], False))
    metrics = similarity_metrics(student, teacher, labels)
    assert metrics["agreement"] + metrics["prediction_disagreement"] == pytest.approx(1.0)
    assert metrics["agreement_incorrect_minus_correct"] == pytest.approx(0.0)
    # a student that copies the teacher's mistakes only: A_incorrect 1, A_correct 0
    copier = torch.eye(3)[[1, 0, 0, 1]] * 5
    assert similarity_metrics(copier, teacher, labels)["agreement_incorrect_minus_correct"] == pytest.approx(1.0)
    # the paired difference of two students on this metric is Delta_incorrect - Delta_correct
    kd, control = similarity_metrics(copier, teacher, labels), similarity_metrics(student, teacher, labels)
    delta_incorrect = kd["agreement_teacher_incorrect"] - control["agreement_teacher_incorrect"]
    delta_correct = kd["agreement_teacher_correct"] - control["agreement_teacher_correct"]
    assert kd["agreement_incorrect_minus_correct"] - control["agreement_incorrect_minus_correct"] == pytest.approx(
        delta_incorrect - delta_correct)
    assert math.isnan(similarity_metrics(student[:2], teacher[:2], labels[:2])["agreement_incorrect_minus_correct"])


# ---- representations ----

def direct_linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2

    k, l = a @ a.T, b @ b.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("width", [6, 80])  # narrower and wider than the 40 inputs: both code paths
def test_linear_cka_matches_the_kernel_formula_and_its_invariances(width):
    generator = torch.Generator().manual_seed(width)
    a = torch.randn(40, width, generator=generator, dtype=torch.float64)
    b = a[:, :5] @ torch.randn(5, width + 3, generator=generator, dtype=torch.float64) \
        + torch.randn(40, width + 3, generator=generator, dtype=torch.float64)
    value = linear_cka(a, b)
    assert value == pytest.approx(direct_linear_cka(a.numpy(), b.numpy()))
    assert 0 < value < 1
    assert linear_cka(a, a) == pytest.approx(1.0)
    rotation, _ = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
    assert linear_cka(a @ rotation, b) == pytest.approx(value)
    assert linear_cka(3.7 * a, 0.2 * b) == pytest.approx(value)
    assert linear_cka(a + 5.0, b) == pytest.approx(value)  # centring removes offsets


def test_collect_outputs_features_give_the_same_logits_in_one_pass():
    torch.manual_seed(0)
    model = ZooModel(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU()), torch.nn.Linear(8, 2))
    x = torch.randn(10, 3)
    loader = DataLoader(TensorDataset(x, torch.zeros(10, dtype=torch.long), torch.arange(10)), batch_size=4)
    outputs = collect_outputs(model, loader, feature_samples=6)
    assert torch.allclose(outputs.logits, model(x).detach())
    assert outputs.features.shape == (6, 8)
    assert collect_outputs(model, loader).features is None


# ---- against p* ----

def test_mse_to_bayes_binary_conventions():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    bayes = np.array([[0.6, 0.4], [0.5, 0.5]])
    scalar = ((0.2 - 0.4) ** 2 + (0.6 - 0.5) ** 2) / 2
    assert mse_to_bayes(probs, bayes, "scalar") == pytest.approx(scalar)
    assert mse_to_bayes(probs, bayes, "vector") == pytest.approx(2 * scalar)


def test_bias_variance_decomposition_adds_up_exactly():
    rng = np.random.default_rng(0)
    bayes = rng.dirichlet(np.ones(3), size=20)
    draws = rng.dirichlet(np.ones(3), size=(7, 20))
    parts = bias_variance_decomposition(draws, bayes)
    assert parts["mse"] == pytest.approx(parts["bias2"] + parts["variance"], rel=1e-12)
    assert parts["mse"] == pytest.approx(np.mean([mse_to_bayes(d, bayes) for d in draws]))
    # by hand: one input, draws 0.2 and 0.6 on class 1 around p* = 0.5, scalar convention
    two = np.array([[[0.8, 0.2]], [[0.4, 0.6]]])
    parts = bias_variance_decomposition(two, np.array([[0.5, 0.5]]), binary="scalar")
    assert parts == pytest.approx({"mse": (0.09 + 0.01) / 2, "bias2": 0.01, "variance": 0.04})
    same = bias_variance_decomposition(np.stack([bayes, bayes]), bayes)
    assert same == pytest.approx({"mse": 0.0, "bias2": 0.0, "variance": 0.0})


def test_evaluation_options_reject_unknown_keys_and_values():
    assert EvaluationOptions.from_config(None) == EvaluationOptions()
    for bad in ({"bins": 3}, {"auroc_average": "micro"}, {"mse_binary": "both"}, {"precision_at_k": [0]}):
        with pytest.raises(ConfigError):
            EvaluationOptions.from_config(bad)


# ---- a run writes them ----

SMALL_GAUSSIAN = ["data=gaussian_binary", "data.n_train=300", "data.n_val=100", "data.n_test=400",
                  "student=mlp", "evaluation.cka_samples=300"]


def test_run_writes_the_new_metrics_with_sane_values(tmp_path):
    metrics, out = run_in_process(tmp_path, [*SMALL_GAUSSIAN, "teacher=mlp"])
    assert read_metrics(out) == pytest.approx(metrics)
    assert not any(isinstance(value, float) and math.isnan(value) for value in metrics.values())  # strict JSON
    for split in ("train", "test"):
        for role in ("teacher", "student"):
            for name in ("acc", "nll", "ece", "auroc", "precision@1", "top1_acc", "mse_to_bayes"):
                assert math.isfinite(metrics[f"{role}/{split}/{name}"]), (role, split, name)
            assert f"{role}/{split}/precision@5" not in metrics  # k >= K = 2
            assert 0.5 < metrics[f"{role}/{split}/auroc"] <= 1
        for name in ("kl_teacher_student", "kl_student_teacher", "activation_distance", "js_divergence",
                     "rank_disagreement", "prediction_disagreement"):
            assert metrics[f"student/{split}/{name}"] >= 0
        assert metrics[f"student/{split}/js_divergence"] <= math.log(2)
        # with two classes, rank order and top-1 differ together
        assert metrics[f"student/{split}/rank_disagreement"] == pytest.approx(
            metrics[f"student/{split}/prediction_disagreement"])
    assert 0 < metrics["student/test/cka"] <= 1 + 1e-9
    assert "student/train/cka" not in metrics
    assert metrics["teacher/test/mse_to_bayes"] < 0.5
    assert "bayes/test/auroc" in metrics


def test_oracle_teacher_has_zero_mse_to_bayes_and_no_cka(tmp_path):
    metrics, _ = run_in_process(tmp_path, [*SMALL_GAUSSIAN, "teacher.oracle=bayes", "evaluation.mse_binary=scalar"])
    assert metrics["teacher/test/mse_to_bayes"] == pytest.approx(0.0, abs=1e-8)
    assert metrics["teacher/test/auroc"] == pytest.approx(metrics["bayes/test/auroc"], abs=1e-6)
    assert "student/test/cka" not in metrics
