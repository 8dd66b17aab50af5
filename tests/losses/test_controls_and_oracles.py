"""KD variants, paper 003's controls (RCD, SIDDO) and paper 001's oracle teachers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from support import compose_config, run_in_process
from kdrun.errors import ConfigError
from kdrun.losses import build_loss
from kdrun.losses import functional as F
from kdrun.models import build_model
from kdrun.engine.module import state_checksum
from kdrun.pipeline import run

SMALL_GAUSSIAN = ["data=gaussian_binary", "data.n_train=300", "data.n_val=100", "data.n_test=400",
                  "teacher=mlp", "student=mlp", "student.model.width=16"]


def logits_pair(batch=6, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


def grad(loss, wrt):
    return torch.autograd.grad(loss, wrt)[0]


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_cross_entropy_is_kl_plus_teacher_entropy(temperature):
    student, teacher, _ = logits_pair()
    p_t = torch.softmax(teacher / temperature, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    soft_ce = F.soft_cross_entropy(student, teacher, temperature)
    kl = F.kl_divergence_at_temperature(student, teacher, temperature)
    assert soft_ce.item() == pytest.approx((kl + entropy).item(), abs=1e-10)
    assert torch.allclose(grad(soft_ce, student), grad(kl, student), atol=1e-12)


def test_hard_label_distillation_is_cross_entropy_with_the_teachers_argmax():
    student, teacher, labels = logits_pair()
    loss, parts = build_loss({"name": "kd_hard", "alpha": 0.3})(student, teacher, (None, labels, None))
    expected = 0.7 * TF.cross_entropy(student, labels) + 0.3 * TF.cross_entropy(student, teacher.argmax(-1))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert set(parts) == {"label", "teacher_label"}


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9, 1.0])
def test_rcd_has_the_gradient_of_label_smoothing(alpha):
    """Paper 003 appendix B: RCD with weight alpha = cross-entropy with label smoothing alpha (T = 1)."""
    student, _, labels = logits_pair(classes=10)
    rcd = build_loss({"name": "rcd", "alpha": alpha, "temperature": 1.0, "t_squared": True})
    assert not rcd.needs_teacher
    loss, _ = rcd(student, None, (None, labels, None))
    smoothed = TF.cross_entropy(student, labels, label_smoothing=alpha)
    assert torch.allclose(grad(loss, student), grad(smoothed, student), atol=1e-12)
    # the values differ by alpha * H(uniform) = alpha * log K, a constant
    assert (smoothed - loss).item() == pytest.approx(alpha * np.log(10), abs=1e-10)


def test_rcd_is_kd_with_a_uniform_teacher_at_any_temperature():
    student, _, labels = logits_pair()
    settings = {"alpha": 0.5, "temperature": 4.0, "t_squared": True}
    rcd, _ = build_loss({"name": "rcd", **settings})(student, None, (None, labels, None))
    kd, _ = build_loss({"name": "kd", **settings})(student, torch.full((6, 5), 7.0, dtype=torch.float64), (None, labels, None))
    assert rcd.item() == pytest.approx(kd.item(), abs=1e-10)  # constant teacher logits are uniform


# --- paper 001's oracle teachers -------------------------------------------------------------------


def test_psi_alpha_keeps_the_boundary_and_stays_a_probability():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    for alpha in (1.0, 2.0, 5.0):
        corrected = F.psi_alpha(u, alpha)
        assert corrected.min() >= 0 and corrected.max() <= 1
        assert torch.equal(corrected > 0.5, u > 0.5) and corrected[50] == 0.5
        assert torch.all(corrected[1:] >= corrected[:-1])  # monotone
    assert torch.allclose(F.psi_alpha(u, 1.0), u)
    assert torch.all(F.psi_alpha(u[u < 0.5], 3.0) <= u[u < 0.5])  # over-confident: pushed away from 1/2
    printed = F.psi_alpha(torch.tensor([0.75, 1.0]), 1.0, "printed")
    assert printed.tolist() == [1.0, 1.0]  # 1/2 + (2u - 1) exceeds 1 as printed: clipped


def test_calibration_distortion_preserves_the_argmax_for_many_classes():
    probs = torch.softmax(torch.randn(50, 4, dtype=torch.float64), -1)
    distorted = F.calibration_distorted_probs(probs, 3.0)
    assert torch.allclose(distorted.sum(-1), torch.ones(50, dtype=torch.float64))
    assert torch.equal(distorted.argmax(-1), probs.argmax(-1))


def test_noisy_biased_teacher_is_eq16():
    p1 = torch.tensor([0.1, 0.5, 0.97], dtype=torch.float64)
    probs = torch.stack([1 - p1, p1], -1)
    noise = torch.randn(3, 2, dtype=torch.float64)
    out = F.noisy_biased_probs(probs, alpha=0.2, sigma=0.7, noise=noise)
    log_odds = torch.log(p1 / (1 - p1))
    expected = 0.8 * torch.sigmoid(log_odds + 0.49 * noise[:, 1]) + 0.1
    assert torch.allclose(out[:, 1], expected) and torch.allclose(out.sum(-1), torch.ones(3, dtype=torch.float64))
    no_noise = F.noisy_biased_probs(probs, alpha=0.2, sigma=0.0, noise=noise)
    assert torch.allclose(no_noise[:, 1], 0.8 * p1 + 0.1)


def test_noisy_oracle_is_fixed_per_example_and_per_seed(tmp_path):
    from kdrun.data.registry import load_source
    from kdrun.teachers.oracles import build_oracle_teacher

    cfg = compose_config(tmp_path, [*SMALL_GAUSSIAN, "teacher.oracle=noisy_biased", "teacher.oracle_options.sigma=1.0"])
    source = load_source(cfg.data)
    x = source.test.dataset.tensors[0][:8]
    teacher = build_oracle_teacher(cfg, source)
    first, again, shuffled = teacher(x), teacher(x), teacher(x.flip(0)).flip(0)
    assert torch.equal(first, again) and torch.allclose(first, shuffled)
    cfg.teacher.oracle_options.seed = 1
    assert not torch.allclose(first, build_oracle_teacher(cfg, source)(x))
    bayes = torch.as_tensor(source.test.oracle_probs[:8]).log().float()
    assert not torch.allclose(first, bayes, atol=1e-3)


def test_bayes_distillation_uses_p_star_as_the_teacher(tmp_path):
    metrics, out = run_in_process(tmp_path, [*SMALL_GAUSSIAN, "teacher.oracle=bayes", "loss.alpha=1.0"], name="bayes")
    assert metrics["teacher/source"] == "oracle bayes" and metrics["teacher/key"] is None
    assert metrics["teacher/params"] == 0
    assert metrics["teacher/test/acc"] == pytest.approx(metrics["bayes/test/acc"])
    assert metrics["teacher/test/nll"] == pytest.approx(metrics["bayes/test/nll"], rel=1e-4)
    assert not (tmp_path / "teacher_store").exists()  # nothing trained, nothing stored
    predictions = np.load(out / "predictions.npz")
    np.testing.assert_allclose(np.exp(predictions["test_teacher_logits"]), predictions["test_oracle_probs"], atol=1e-5)


@pytest.mark.parametrize("overrides,fragment", [
    (["teacher.oracle=bayes"], "does not know"),  # digits: no p*
    ([*SMALL_GAUSSIAN, "teacher.oracle=perfect"], "allowed: null"),
    ([*SMALL_GAUSSIAN, "teacher.oracle=calibration_distorted", "teacher.oracle_options.distortion=0.5"],
     "distortion=0.5"),
    ([*SMALL_GAUSSIAN, "teacher.oracle=noisy_biased", "teacher.oracle_options.bias=2"], "bias=2"),
])
def test_bad_oracle_settings_are_refused_before_training(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        run(compose_config(tmp_path, overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


# --- SIDDO: same initialisation, different data order ---------------------------------------------


def test_siddo_starts_from_the_teachers_initial_weights(tmp_path):
    overrides = ["experiment=siddo_demo", "teacher=mlp", "teacher.model.width=32", "teacher.epochs=1",
                 "student.epochs=1"]
    metrics, _ = run_in_process(tmp_path, overrides, name="siddo")
    cfg = compose_config(tmp_path, overrides)
    torch.manual_seed(cfg.teacher.seed)
    teacher_init = build_model(cfg.teacher.model, (1, 8, 8))
    assert metrics["student/init_checksum"] == state_checksum(teacher_init)
    own, _ = run_in_process(tmp_path, [*overrides, "student.init=own"], name="own")
    assert own["student/init_checksum"] != metrics["student/init_checksum"]
    assert own["student/batch_order_checksum"] == metrics["student/batch_order_checksum"]  # same seed, same order


@pytest.mark.parametrize("overrides,fragment", [
    (["experiment=siddo_demo", "seed=0"], "would retrain the teacher"),
    (["student.init=teacher", "seed=3"], "needs the teacher's architecture"),
    (["student.init=sometimes"], "allowed: own"),
])
def test_bad_student_init_is_refused(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        run(compose_config(tmp_path, overrides), tmp_path / "run")


def test_lemma_1_the_bayes_distilled_risk_has_the_lower_variance_for_a_fixed_student():
    """Paper 001, Lemma 1: for any fixed f, V[R*(f; S)] <= V[R(f; S)] over samples S ~ P^N, where R uses the
    one-hot labels and R* the Bayes probabilities p*; both are unbiased for the same risk. Monte Carlo over
    2,000 samples of N = 50 from the two-Gaussian problem, with a fixed logistic regression f."""
    import torch.nn.functional as TF

    from kdrun.losses import functional as F

    generator = torch.Generator().manual_seed(0)
    mean, dim, draws, n = 0.5, 10, 2000, 50
    theta = 2 * mean * torch.ones(dim, dtype=torch.float64)  # p*(y=1|x) = sigmoid(theta . x)
    weights = torch.randn(dim, dtype=torch.float64, generator=generator)  # the fixed student f
    y = torch.randint(0, 2, (draws, n), generator=generator)
    x = torch.randn(draws, n, dim, dtype=torch.float64, generator=generator) + mean * (2 * y[..., None] - 1)
    student = torch.stack([torch.zeros(draws, n, dtype=torch.float64), x @ weights], dim=-1)
    bayes = torch.stack([1 - torch.sigmoid(x @ theta), torch.sigmoid(x @ theta)], dim=-1)
    one_hot_risk = TF.cross_entropy(student.reshape(-1, 2), y.reshape(-1), reduction="none").reshape(draws, n).mean(1)
    bayes_risk = torch.stack([F.soft_cross_entropy(s, b.log(), 1.0) for s, b in zip(student, bayes)])
    assert abs(one_hot_risk.mean() - bayes_risk.mean()) < 4 * one_hot_risk.std() / draws ** 0.5  # same risk
    assert bayes_risk.var() < 0.95 * one_hot_risk.var()  # ... estimated with less variance (here 0.91 of it)
