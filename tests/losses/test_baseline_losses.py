"""Paper 004's baselines (TS preset, label-smoothed teacher, focal, flooding, Tf-KD) against closed forms.

References are written out by hand in float64 (explicit exp / log / sums); gradients are checked
against hand-derived formulas and finite differences.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.losses import build_loss
from kdrun.losses import functional as KF
from kdrun.engine.loss_schedule import phase_specs
from support import compose_config, read_metrics, run_in_process, random_logits

B, K = 6, 4
DT = torch.float64
NEW_LOSS_FILES = ["temperature_scaling", "label_smoothed_teacher", "focal_kd", "flooding", "teacher_free_kd"]


def softmax(z):
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def ref_kl(p, q):
    """(1/B) sum_i sum_c p log(p / q), 0 log 0 = 0."""
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum() / p.shape[0]


def one_hot(y, k=K):
    out = torch.zeros(len(y), k, dtype=DT)
    out[torch.arange(len(y)), y] = 1.0
    return out


def load_loss_config(name):
    return OmegaConf.to_container(OmegaConf.load(config_dir() / "loss" / f"{name}.yaml"), resolve=True)


@pytest.fixture
def logits():
    return random_logits(B, K, seed=4, dtype=DT)


# --- temperature scaling: a preset of `kd` --------------------------------------------------------


@pytest.mark.parametrize("T", [0.5, 2.0, 5.0])
def test_temperature_scaling_preset_is_kl_of_both_scaled_without_t_squared(logits, T):
    zs, zt, y = logits
    cfg = load_loss_config("temperature_scaling")
    assert cfg["name"] == "kd" and cfg["alpha"] == 1.0 and cfg["t_squared"] is False
    loss, _ = build_loss({**cfg, "temperature": T})(zs, zt, (None, None, None))  # alpha = 1 reads no labels
    assert loss.item() == pytest.approx(ref_kl(softmax(zt / T), softmax(zs / T)).item(), rel=1e-10)


def test_temperature_scaling_preset_as_the_loss_group_and_as_a_schedule_phase(tmp_path):
    cfg = compose_config(tmp_path, ["loss=temperature_scaling"])
    expected = load_loss_config("temperature_scaling")
    [constant] = phase_specs(cfg.schedule, cfg.loss)
    assert constant.loss == expected
    # a phase names the preset by its file name and gets the preset's values
    schedule = OmegaConf.create({"name": "phases", "phases": [{"loss": "ce", "until": 0.5},
                                                              {"loss": "temperature_scaling"}]})
    kd_group = OmegaConf.create(load_loss_config("kd"))
    assert phase_specs(schedule, kd_group)[1].loss == expected


# --- label-smoothed teacher ------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_label_smoothed_teacher_is_kl_from_mixture_with_uniform(logits, delta, T):
    zs, zt, _ = logits
    smoothed = (1 - delta) * softmax(zt / T) + delta / K
    expected = ref_kl(smoothed, softmax(zs / T))
    assert KF.label_smoothed_teacher_kl(zs, zt, delta, T).item() == pytest.approx(expected.item(), rel=1e-10)


def test_label_smoothed_teacher_in_two_classes_is_papers_delta_over_two(logits):
    zs, zt, _ = logits
    zs, zt, delta = zs[:, :2], zt[:, :2], 0.15
    pt, ps = softmax(zt), softmax(zs)
    total = 0.0
    for i in range(B):  # paper 004, Eq. 23-24 written out for C = 2
        for c in range(2):
            p_ls = (1 - delta) * pt[i, c].item() + delta / 2
            total += p_ls * (math.log(p_ls) - math.log(ps[i, c].item()))
    assert KF.label_smoothed_teacher_kl(zs, zt, delta).item() == pytest.approx(total / B, rel=1e-10)


def test_label_smoothed_teacher_finite_for_an_underflowing_teacher_probability():
    zs = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    zt = torch.tensor([[200.0, 0.0, -200.0]])  # p_t,2 = 0 in float32
    loss = KF.label_smoothed_teacher_kl(zs, zt, 0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_label_smoothed_teacher_wrapper(logits):
    zs, zt, _ = logits
    loss_fn = build_loss({"name": "label_smoothed_teacher", "smoothing": 0.1, "temperature": 2.0})
    loss, parts = loss_fn(zs, zt, (None, None, None))
    assert loss.item() == pytest.approx(KF.label_smoothed_teacher_kl(zs, zt, 0.1, 2.0).item(), rel=1e-12)
    assert set(parts) == {"soft"} and loss_fn.needs_teacher and not loss_fn.needs_labels


# --- focal distillation ----------------------------------------------------------------------------


def ref_focal(zs, zt, gamma):
    pt, ps = softmax(zt), softmax(zs)
    neg_entropy = torch.where(pt > 0, pt * torch.log(pt), torch.zeros_like(pt)).sum()
    return (neg_entropy + (pt * (1 - ps) ** gamma * -torch.log(ps)).sum()) / zs.shape[0]


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 2.0, 5.0])
def test_focal_distillation_matches_eq_12(logits, gamma):
    zs, zt, _ = logits
    assert KF.focal_distillation(zs, zt, gamma).item() == pytest.approx(ref_focal(zs, zt, gamma).item(), rel=1e-10)


def test_focal_distillation_with_gamma_zero_is_kl(logits):
    zs, zt, _ = logits
    expected = ref_kl(softmax(zt), softmax(zs))
    assert KF.focal_distillation(zs, zt, 0.0).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_distillation_gradient_matches_hand_derivation(logits, gamma):
    zs, zt, _ = logits
    zs = zs.clone().requires_grad_(True)
    KF.focal_distillation(zs, zt, gamma).backward()
    # L_i = sum_c t_c w_c l_c, w_c = (1 - p_c)^gamma, l_c = -log p_c, dp_c/dz_j = p_c (delta_cj - p_j):
    # dL_i/dz_j = a_j - p_j sum_c a_c with a_c = t_c [gamma (1 - p_c)^(gamma - 1) p_c log p_c - w_c]
    p, t = softmax(zs.detach()), softmax(zt)
    a = t * (gamma * (1 - p) ** (gamma - 1) * p * torch.log(p) - (1 - p) ** gamma)
    expected = (a - p * a.sum(dim=-1, keepdim=True)) / B
    assert torch.allclose(zs.grad, expected, rtol=1e-10, atol=1e-12)


def test_focal_distillation_passes_finite_difference_check(logits):
    zs, zt, _ = logits
    zs = zs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: KF.focal_distillation(z, zt, 1.5), (zs,))


def test_focal_distillation_gradient_finite_for_a_confident_student_and_small_gamma():
    zs = torch.tensor([[120.0, 0.0, -5.0]], requires_grad=True)  # p_s,0 rounds to 1 in float32
    loss = KF.focal_distillation(zs, torch.tensor([[1.0, 0.0, 0.0]]), 0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


# --- flooding --------------------------------------------------------------------------------------


def test_flooded_value_is_mirrored_below_the_level():
    assert KF.flooded(torch.tensor(0.7), 0.2).item() == pytest.approx(0.7)
    assert KF.flooded(torch.tensor(0.05), 0.2).item() == pytest.approx(0.35)


@pytest.mark.parametrize("level, reversed_", [(0.0, False), (0.01, False), (100.0, True)])
def test_flooding_gradient_is_reversed_below_the_level_only(logits, level, reversed_):
    zs, zt, _ = logits
    base = {"name": "kd", "alpha": 1.0, "temperature": 1.0, "t_squared": False}
    plain_z, flood_z = zs.clone().requires_grad_(True), zs.clone().requires_grad_(True)
    plain, _ = build_loss(base)(plain_z, zt, (None, None, None))
    flooded, parts = build_loss({"name": "flooding", "level": level, "base": base})(flood_z, zt, (None, None, None))
    assert (plain.item() < level) == reversed_
    plain.backward()
    flooded.backward()
    sign = -1.0 if reversed_ else 1.0
    assert torch.allclose(flood_z.grad, sign * plain_z.grad, rtol=1e-12, atol=0)
    assert parts["base"].item() == pytest.approx(plain.item()) and "base_soft" in parts


def test_flooding_follows_the_base_loss_needs():
    with_labels = build_loss({"name": "flooding", "level": 0.1, "base": {"name": "ce", "label_smoothing": 0.0}})
    assert (with_labels.needs_teacher, with_labels.needs_labels) == (False, True)
    soft_only = build_loss(load_loss_config("flooding"))
    assert (soft_only.needs_teacher, soft_only.needs_labels) == (True, False)


def test_flooding_base_by_name_takes_that_loss_defaults():
    loss = build_loss({"name": "flooding", "level": 0.1, "base": "kd"})
    kd = load_loss_config("kd")
    assert (loss._base_loss.alpha, loss._base_loss.temperature) == (kd["alpha"], kd["temperature"])


# --- Tf-KD_reg -------------------------------------------------------------------------------------


def ref_virtual_teacher(y, a, T):
    """p_v: a on the label, (1 - a)/(C - 1) elsewhere; softened p_v^T proportional to p_v^(1/T)."""
    pv = torch.full((len(y), K), (1 - a) / (K - 1), dtype=DT)
    pv[torch.arange(len(y)), y] = a
    powered = pv ** (1 / T)
    return powered / powered.sum(dim=-1, keepdim=True)


def test_virtual_teacher_puts_correct_prob_on_the_label(logits):
    _, _, y = logits
    pv = KF.virtual_teacher_log_probs(y, K, 0.99, DT).exp()
    assert torch.allclose(pv, 0.99 * one_hot(y) + 0.01 / (K - 1) * (1 - one_hot(y)), rtol=1e-12)
    assert torch.allclose(pv.sum(dim=-1), torch.ones(B, dtype=DT))


@pytest.mark.parametrize("alpha, T, t_squared", [(0.1, 20.0, True), (0.5, 2.0, False), (1.0, 1.0, True)])
def test_teacher_free_kd_is_ce_plus_kl_to_softened_virtual_teacher(logits, alpha, T, t_squared):
    zs, _, y = logits
    ce = -(one_hot(y) * torch.log(softmax(zs))).sum() / B
    kl = ref_kl(ref_virtual_teacher(y, 0.99, T), softmax(zs / T)) * (T**2 if t_squared else 1.0)
    expected = (1 - alpha) * ce + alpha * kl
    assert KF.teacher_free_kd_loss(zs, y, alpha, 0.99, T, t_squared).item() == pytest.approx(expected.item(), rel=1e-10)


def test_teacher_free_kd_wrapper_ignores_the_teacher(logits):
    zs, _, y = logits
    loss_fn = build_loss(load_loss_config("teacher_free_kd"))
    assert (loss_fn.needs_teacher, loss_fn.needs_labels) == (False, True)
    loss, parts = loss_fn(zs, None, (None, y, None))
    assert set(parts) == {"label", "soft"}
    assert loss.item() == pytest.approx(KF.teacher_free_kd_loss(zs, y, 0.1, 0.99, 20.0, True).item(), rel=1e-12)


# --- configs and option checks ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW_LOSS_FILES)
def test_every_new_loss_file_builds(name, logits):
    cfg = load_loss_config(name)
    loss_fn = build_loss(cfg)
    assert loss_fn.name == cfg["name"]
    zs, zt, y = logits
    loss, _ = loss_fn(zs, zt, (None, y, None))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("cfg, key, bad", [
    ({"name": "label_smoothed_teacher", "smoothing": 1.5, "temperature": 1.0}, "smoothing", "1.5"),
    ({"name": "label_smoothed_teacher", "smoothing": -0.1, "temperature": 1.0}, "smoothing", "-0.1"),
    ({"name": "label_smoothed_teacher", "smoothing": 0.1, "temperature": 0.0}, "temperature", "0.0"),
    ({"name": "focal_kd", "gamma": -1.0}, "gamma", "-1.0"),
    ({"name": "focal_kd", "gamma": "big"}, "gamma", "big"),
    ({"name": "flooding", "level": -0.1, "base": "kd"}, "level", "-0.1"),
    ({"name": "flooding", "level": 0.1, "base": "nope"}, "base", "nope"),
    ({"name": "flooding", "level": 0.1, "base": 3}, "base", "3"),
    ({"name": "teacher_free_kd", "alpha": 0.1, "temperature": 2.0, "correct_prob": 1.0, "t_squared": True},
     "correct_prob", "1.0"),
    ({"name": "teacher_free_kd", "alpha": 1.2, "temperature": 2.0, "correct_prob": 0.9, "t_squared": True},
     "alpha", "1.2"),
    ({"name": "teacher_free_kd", "alpha": 0.1, "temperature": 2.0, "correct_prob": 0.9, "t_squared": "yes"},
     "t_squared", "yes"),
])
def test_bad_options_are_config_errors_naming_key_value_and_range(cfg, key, bad):
    with pytest.raises(ConfigError) as err:
        build_loss(cfg)
    message = str(err.value)
    assert f"{cfg['name']}.{key}=" in message and bad in message
    assert any(word in message for word in ("outside", "must", "allowed", "not a loss"))


def test_flooding_reports_an_error_inside_its_base_under_flooding_base():
    with pytest.raises(ConfigError) as err:
        build_loss({"name": "flooding", "level": 0.1, "base": {"name": "focal_kd", "gamma": -2.0}})
    assert "flooding.base" in str(err.value) and "gamma=-2.0" in str(err.value)


def test_focal_kd_trains_end_to_end(tmp_path):
    metrics, run_dir = run_in_process(tmp_path, ["loss=focal_kd", "teacher=mlp", "student=mlp", "data=gaussian_binary",
                                                 "data.n_train=200", "data.n_test=200", "data.n_val=100"])
    assert read_metrics(run_dir) == metrics
    assert 0.0 <= metrics["student/test/acc"] <= 1.0 and math.isfinite(metrics["student/test/nll"])
