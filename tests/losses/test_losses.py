"""Loss formulas and their config wrappers, each checked against a closed form or identity.

Every reference value is computed here by hand in float64 (explicit exp / log / sums), never by
calling the function under test a second time.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from support import random_logits

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.losses import LOSSES, build_loss
from kdrun.losses import functional as KF

B, K = 5, 4
DT = torch.float64


# --- hand-written references (float64, explicit sums) -------------------------------------------


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    shifted = z - z.max(dim=-1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))


def one_hot(y: torch.Tensor, k: int = K) -> torch.Tensor:
    out = torch.zeros(len(y), k, dtype=DT)
    out[torch.arange(len(y)), y] = 1.0
    return out


def ref_ce(z, y, eps=0.0):
    """-(1/B) sum_i sum_k q_ik log p_ik with q = (1 - eps) y + eps / K."""
    q = (1.0 - eps) * one_hot(y, z.shape[-1]) + eps / z.shape[-1]
    return -(q * log_softmax(z)).sum() / z.shape[0]


def ref_kl(zs, zt, T):
    """(1/B) sum_i sum_k p_t (log p_t - log p_s) at temperature T; 0 log 0 = 0."""
    pt, log_pt, log_ps = softmax(zt / T), log_softmax(zt / T), log_softmax(zs / T)
    terms = torch.where(pt > 0, pt * (log_pt - log_ps), torch.zeros_like(pt))
    return terms.sum() / zs.shape[0]


@pytest.fixture
def logits():
    return random_logits(B, K, seed=0, dtype=DT)


# --- softmax_cross_entropy -----------------------------------------------------------------------


def test_cross_entropy_is_minus_log_softmax_of_label(logits):
    zs, _, y = logits
    expected = -sum(math.log(softmax(zs)[i, y[i]].item()) for i in range(B)) / B
    assert KF.softmax_cross_entropy(zs, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
def test_cross_entropy_with_label_smoothing_is_smoothed_target_ce(logits, eps):
    zs, _, y = logits
    # written out element by element: q_k = (1 - eps) [k == y] + eps / K
    total = 0.0
    p = softmax(zs)
    for i in range(B):
        for k in range(K):
            q = (1.0 - eps) * (1.0 if k == y[i] else 0.0) + eps / K
            total -= q * math.log(p[i, k].item())
    assert KF.softmax_cross_entropy(zs, y, label_smoothing=eps).item() == pytest.approx(total / B, rel=1e-12)


def test_cross_entropy_single_example_closed_form():
    z = torch.tensor([[0.0, math.log(3.0)]], dtype=DT)  # p = [1/4, 3/4]
    assert KF.softmax_cross_entropy(z, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    assert KF.softmax_cross_entropy(z, torch.tensor([0])).item() == pytest.approx(math.log(4.0))


# --- kl_divergence_at_temperature --------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kl_at_temperature_matches_sum_pt_log_ratio(logits, T):
    zs, zt, _ = logits
    total = 0.0
    for i in range(B):
        ps = softmax(zs[i] / T)
        pt = softmax(zt[i] / T)
        total += sum(pt[k].item() * (math.log(pt[k].item()) - math.log(ps[k].item())) for k in range(K))
    got = KF.kl_divergence_at_temperature(zs, zt, T)
    assert got.item() == pytest.approx(total / B, rel=1e-10)
    assert got.item() > 0


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kl_is_zero_for_equal_logits(logits, T):
    zs, _, _ = logits
    assert KF.kl_divergence_at_temperature(zs, zs.clone(), T).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_is_invariant_to_shifting_logits(logits):
    zs, zt, _ = logits
    # softmax is shift invariant, so the divergence must be too (per-row shifts)
    shift = torch.arange(B, dtype=DT).unsqueeze(1) * 7.0
    assert KF.kl_divergence_at_temperature(zs + shift, zt - shift, 2.0).item() == pytest.approx(
        ref_kl(zs, zt, 2.0).item(), rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kl_finite_when_teacher_probability_underflows(dtype):
    zt = torch.tensor([[1000.0, 0.0, 0.0], [0.0, -1000.0, 5.0]], dtype=dtype)
    zs = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -0.5]], dtype=dtype, requires_grad=True)
    got = KF.kl_divergence_at_temperature(zs, zt, 1.0)
    assert torch.isfinite(got)
    # reference: the underflowed teacher classes contribute 0 (0 log 0 = 0)
    assert got.item() == pytest.approx(ref_kl(zs.detach().to(DT), zt.to(DT), 1.0).item(), rel=1e-5)
    got.backward()
    assert torch.isfinite(zs.grad).all()


def test_kl_finite_when_teacher_is_one_hot_and_matches_student():
    z = torch.tensor([[1000.0, 0.0, 0.0]], dtype=DT)
    assert KF.kl_divergence_at_temperature(z, z.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-12)


# --- kd_terms / kd_loss --------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_terms_t_squared_multiplies_soft_term_by_T2(logits, T):
    zs, zt, y = logits
    label_on, soft_on = KF.kd_terms(zs, zt, y, T, t_squared=True)
    label_off, soft_off = KF.kd_terms(zs, zt, y, T, t_squared=False)
    kl = ref_kl(zs, zt, T).item()
    assert soft_off.item() == pytest.approx(kl, rel=1e-10)
    assert soft_on.item() == pytest.approx(T**2 * kl, rel=1e-10)
    # the label term is always at T = 1, with or without the factor
    assert label_on.item() == pytest.approx(ref_ce(zs, y).item(), rel=1e-12)
    assert label_off.item() == pytest.approx(ref_ce(zs, y).item(), rel=1e-12)


def test_kd_terms_without_targets_has_no_label_term(logits):
    zs, zt, _ = logits
    label, soft = KF.kd_terms(zs, zt, None, 2.0, True)
    assert label is None
    assert soft.item() == pytest.approx(4.0 * ref_kl(zs, zt, 2.0).item(), rel=1e-10)


@pytest.mark.parametrize("T,t_squared", [(1.0, True), (4.0, True), (4.0, False)])
def test_kd_loss_alpha_zero_is_cross_entropy(logits, T, t_squared):
    zs, zt, y = logits
    got = KF.kd_loss(zs, zt, y, alpha=0.0, temperature=T, t_squared=t_squared)
    assert got.item() == pytest.approx(ref_ce(zs, y).item(), rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_loss_alpha_one_needs_no_targets_and_is_T2_kl(logits, T):
    zs, zt, _ = logits
    got = KF.kd_loss(zs, zt, None, alpha=1.0, temperature=T, t_squared=True)
    assert got.item() == pytest.approx(T**2 * ref_kl(zs, zt, T).item(), rel=1e-10)
    got_int = KF.kd_loss(zs, zt, None, alpha=1, temperature=T, t_squared=False)
    assert got_int.item() == pytest.approx(ref_kl(zs, zt, T).item(), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("T,t_squared", [(1.0, True), (2.0, True), (4.0, False)])
def test_kd_loss_is_the_alpha_mixture(logits, alpha, T, t_squared):
    zs, zt, y = logits
    soft = ref_kl(zs, zt, T).item() * (T**2 if t_squared else 1.0)
    expected = (1 - alpha) * ref_ce(zs, y).item() + alpha * soft
    assert KF.kd_loss(zs, zt, y, alpha, T, t_squared).item() == pytest.approx(expected, rel=1e-10)


def test_kd_with_uniform_teacher_equals_label_smoothing_up_to_a_constant(logits):
    """Paper 003 notes §1.3: (1-a) CE(y,p) + a KL(u||p) = CE((1-a)y + a u, p) - a H(u)."""
    zs, _, y = logits
    a = 0.3
    uniform = torch.zeros(B, K, dtype=DT)
    got = KF.kd_loss(zs, uniform, y, a, 1.0, True).item()
    expected = ref_ce(zs, y, eps=a).item() - a * math.log(K)
    assert got == pytest.approx(expected, rel=1e-10)


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_kd_gradient_identity_at_T1(logits, alpha):
    """Paper 003 §5: dL/dz_s = ((1 - a)(p_s - y) + a (p_s - p_t)) / B for the batch mean."""
    zs, zt, y = logits
    zs = zs.clone().requires_grad_(True)
    loss = KF.kd_loss(zs, zt, y, alpha, temperature=1.0, t_squared=True)
    (grad,) = torch.autograd.grad(loss, zs)
    ps, pt = softmax(zs.detach()), softmax(zt)
    expected = ((1 - alpha) * (ps - one_hot(y)) + alpha * (ps - pt)) / B
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_kd_gradient_identity_alpha_one_without_targets(logits):
    zs, zt, _ = logits
    zs = zs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(KF.kd_loss(zs, zt, None, 1.0), zs)
    torch.testing.assert_close(grad, (softmax(zs.detach()) - softmax(zt)) / B, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_kd_gradient_on_incorrect_class_is_ps_minus_alpha_pt(logits, alpha):
    """Paper 003 §5: for y_k = 0 the gradient is p_k^s - a p_k^t (times 1/B)."""
    zs, zt, y = logits
    zs = zs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(KF.kd_loss(zs, zt, y, alpha), zs)
    ps, pt = softmax(zs.detach()), softmax(zt)
    wrong = one_hot(y) == 0
    torch.testing.assert_close(grad[wrong], ((ps - alpha * pt) / B)[wrong], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_soft_term_gradient_is_T_times_prob_difference(logits, T):
    """Hinton: d/dz_s [T^2 KL(p_t^T || p_s^T)] = T (p_s^T - p_t^T), here divided by B (batch mean)."""
    zs, zt, y = logits
    zs = zs.clone().requires_grad_(True)
    _, soft = KF.kd_terms(zs, zt, y, T, t_squared=True)
    (grad,) = torch.autograd.grad(soft, zs)
    expected = T * (softmax(zs.detach() / T) - softmax(zt / T)) / B
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [2.0, 4.0])
def test_soft_term_gradient_without_t_squared_is_divided_by_T(logits, T):
    zs, zt, y = logits
    zs = zs.clone().requires_grad_(True)
    _, soft = KF.kd_terms(zs, zt, y, T, t_squared=False)
    (grad,) = torch.autograd.grad(soft, zs)
    expected = (softmax(zs.detach() / T) - softmax(zt / T)) / (T * B)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_soft_term_student_gradient_sums_to_zero_over_classes(logits):
    """softmax is shift invariant, so each row of the student gradient sums to 0; the teacher's stays finite."""
    zs, zt, y = logits
    zs = zs.clone().requires_grad_(True)
    zt = zt.clone().requires_grad_(True)
    _, soft = KF.kd_terms(zs, zt, y, 3.0, t_squared=True)
    gs, gt = torch.autograd.grad(soft, (zs, zt))
    torch.testing.assert_close(gs.sum(dim=-1), torch.zeros(B, dtype=DT), atol=1e-12, rtol=0)
    assert torch.isfinite(gt).all()


# --- mse_logits ----------------------------------------------------------------------------------


def test_mse_logits_is_mean_of_squared_differences(logits):
    zs, zt, _ = logits
    total = sum((zs[i, k].item() - zt[i, k].item()) ** 2 for i in range(B) for k in range(K))
    assert KF.mse_logits(zs, zt).item() == pytest.approx(total / (B * K), rel=1e-12)
    assert KF.mse_logits(zs, zs.clone()).item() == 0.0


def test_mse_logits_gradient(logits):
    zs, zt, _ = logits
    zs = zs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(KF.mse_logits(zs, zt), zs)
    torch.testing.assert_close(grad, 2.0 * (zs.detach() - zt) / (B * K), rtol=1e-12, atol=1e-14)


def test_mix_weights():
    a, b = torch.tensor(2.0, dtype=DT), torch.tensor(10.0, dtype=DT)
    assert KF.mix(a, b, 0.25).item() == pytest.approx(0.75 * 2.0 + 0.25 * 10.0)
    assert KF.mix(a, b, 0.0).item() == 2.0
    assert KF.mix(a, b, 1.0).item() == 10.0


# --- build_loss and the wrappers -----------------------------------------------------------------


KD = {"name": "kd", "alpha": 0.5, "temperature": 2.0, "t_squared": True}


def test_every_registered_loss_has_a_config_file_and_every_file_builds():
    from omegaconf import OmegaConf

    from kdrun.config.tree import config_dir

    files = sorted((config_dir() / "loss").glob("*.yaml"))
    assert set(LOSSES) == {OmegaConf.load(path).name for path in files}
    for path in files:  # presets (e.g. temperature_scaling) name an existing loss
        build_loss(OmegaConf.to_container(OmegaConf.load(path)), where=path.stem)


def test_build_loss_from_dicts():
    ce = build_loss({"name": "ce", "label_smoothing": 0.1})
    kd = build_loss(dict(KD))
    mse = build_loss({"name": "mse_logits", "alpha": 1.0})
    assert (ce.name, ce.label_smoothing) == ("ce", 0.1)
    assert (kd.name, kd.alpha, kd.temperature, kd.t_squared) == ("kd", 0.5, 2.0, True)
    assert (mse.name, mse.alpha) == ("mse_logits", 1.0)


def test_build_loss_does_not_mutate_its_config():
    cfg = dict(KD)
    build_loss(cfg)
    assert cfg == KD


@pytest.mark.parametrize("name", ["ce", "kd", "mse_logits"])
def test_build_loss_from_every_yaml_default(name):
    cfg = OmegaConf.load(config_dir() / "loss" / f"{name}.yaml")
    loss = build_loss(cfg)
    assert loss.name == name


def test_needs_teacher_flags():
    assert build_loss({"name": "ce", "label_smoothing": 0.0}).needs_teacher is False
    assert build_loss(dict(KD)).needs_teacher is True
    assert build_loss({"name": "mse_logits", "alpha": 0.5}).needs_teacher is True


@pytest.mark.parametrize("name", ["nope", "KD", ""])
def test_build_loss_unknown_name(name):
    with pytest.raises(ConfigError) as err:
        build_loss({"name": name})
    msg = str(err.value)
    assert repr(name) in msg
    assert f"allowed: {', '.join(sorted(LOSSES))}" in msg
    assert msg.startswith("loss:")


def test_build_loss_missing_name():
    with pytest.raises(ConfigError, match=f"allowed: {', '.join(sorted(LOSSES))}"):
        build_loss({"alpha": 0.5})


def test_build_loss_unknown_option():
    with pytest.raises(ConfigError) as err:
        build_loss({**KD, "beta": 3})
    msg = str(err.value)
    assert "beta" in msg
    assert "alpha, t_squared, temperature" in msg


def test_build_loss_missing_option():
    with pytest.raises(ConfigError) as err:
        build_loss({"name": "kd", "alpha": 0.5})
    msg = str(err.value)
    assert "'kd'" in msg
    assert "t_squared" in msg and "temperature" in msg


@pytest.mark.parametrize("bad", [1.5, -0.1])
@pytest.mark.parametrize("base", [KD, {"name": "mse_logits"}])
def test_build_loss_alpha_outside_unit_interval(base, bad):
    with pytest.raises(ConfigError) as err:
        build_loss({**base, "alpha": bad})
    msg = str(err.value)
    assert f"alpha={bad}" in msg
    assert "[0, 1]" in msg


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_build_loss_temperature_not_positive(bad):
    with pytest.raises(ConfigError) as err:
        build_loss({**KD, "temperature": bad})
    msg = str(err.value)
    assert f"temperature={bad}" in msg
    assert "> 0" in msg


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_build_loss_label_smoothing_outside_unit_interval(bad):
    with pytest.raises(ConfigError) as err:
        build_loss({"name": "ce", "label_smoothing": bad})
    assert str(bad) in str(err.value) and "[0, 1]" in str(err.value)


def test_build_loss_error_names_the_config_key():
    with pytest.raises(ConfigError) as err:
        build_loss({**KD, "alpha": 1.5}, where="schedule.to")
    assert str(err.value).startswith("schedule.to: kd.alpha=1.5")


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0, 1])
def test_build_loss_alpha_bounds_are_allowed(alpha):
    build_loss({**KD, "alpha": alpha})
    build_loss({"name": "mse_logits", "alpha": alpha})


def _batch(y):
    return (torch.zeros(len(y), 3, dtype=DT), y, torch.arange(len(y)))


def test_ce_wrapper_call(logits):
    zs, _, y = logits
    loss, parts = build_loss({"name": "ce", "label_smoothing": 0.2})(zs, None, _batch(y))
    assert set(parts) == {"ce"}
    assert loss.item() == pytest.approx(ref_ce(zs, y, eps=0.2).item(), rel=1e-12)
    assert parts["ce"] is loss


def test_kd_wrapper_call(logits):
    zs, zt, y = logits
    loss, parts = build_loss({"name": "kd", "alpha": 0.25, "temperature": 3.0, "t_squared": True})(zs, zt, _batch(y))
    assert set(parts) == {"label", "soft"}
    assert parts["label"].item() == pytest.approx(ref_ce(zs, y).item(), rel=1e-12)
    assert parts["soft"].item() == pytest.approx(9.0 * ref_kl(zs, zt, 3.0).item(), rel=1e-10)
    assert loss.item() == pytest.approx(0.75 * parts["label"].item() + 0.25 * parts["soft"].item(), rel=1e-12)


def test_kd_wrapper_alpha_one_ignores_labels(logits):
    zs, zt, _ = logits
    batch = (torch.zeros(B, 3), None, torch.arange(B))  # no labels at all
    loss, parts = build_loss({"name": "kd", "alpha": 1.0, "temperature": 2.0, "t_squared": False})(zs, zt, batch)
    assert set(parts) == {"soft"}
    assert loss.item() == pytest.approx(ref_kl(zs, zt, 2.0).item(), rel=1e-10)


def test_mse_wrapper_call(logits):
    zs, zt, y = logits
    loss, parts = build_loss({"name": "mse_logits", "alpha": 0.4})(zs, zt, _batch(y))
    assert set(parts) == {"label", "mse"}
    mse = ((zs - zt) ** 2).mean().item()
    assert parts["mse"].item() == pytest.approx(mse, rel=1e-12)
    assert parts["label"].item() == pytest.approx(ref_ce(zs, y).item(), rel=1e-12)
    assert loss.item() == pytest.approx(0.6 * ref_ce(zs, y).item() + 0.4 * mse, rel=1e-12)


def test_mse_wrapper_alpha_one_ignores_labels(logits):
    zs, zt, _ = logits
    loss, parts = build_loss({"name": "mse_logits", "alpha": 1.0})(zs, zt, (None, None, None))
    assert set(parts) == {"mse"}
    assert loss.item() == pytest.approx(((zs - zt) ** 2).mean().item(), rel=1e-12)


@pytest.mark.parametrize("options, fragment", [
    ({"name": "kd", "alpha": "high", "temperature": 4.0, "t_squared": True}, "alpha=high"),
    ({"name": "kd", "alpha": None, "temperature": 4.0, "t_squared": True}, "alpha=None"),
    ({"name": "kd", "alpha": 0.5, "temperature": 4.0, "t_squared": "no"}, "t_squared='no'"),
    ({"name": "ce", "label_smoothing": "lots"}, "label_smoothing=lots"),
])
def test_non_numeric_options_are_config_errors(options, fragment):
    with pytest.raises(ConfigError) as error:
        build_loss(options)
    assert fragment in str(error.value)
