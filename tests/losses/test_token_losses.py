"""Token-level objectives: every logit loss applied per window position, and the sequence-KD divergences."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.losses import LOSSES, FeatureLoss, build_loss
from kdrun.losses import functional as KF
from kdrun.losses.positions import per_position
from kdrun.metrics import js_divergence

WINDOWS, T, V = 3, 5, 7
# losses whose batches are not (inputs, one class per row): retrieval (multi-label relevance) and feature losses
NOT_PER_POSITION = {"generalized_softmax_ce", "double_distillation", "feature_matching"}


def loss_configs():
    names = []
    for path in sorted((config_dir() / "loss").glob("*.yaml")):
        name = OmegaConf.load(path).name
        if name not in NOT_PER_POSITION:
            names.append(path.stem)
    return names


def token_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(WINDOWS, T, V, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(WINDOWS, T, V, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (WINDOWS, T), generator=generator)
    tokens = torch.randint(0, V, (WINDOWS, T), generator=generator)
    return student, teacher, (tokens, labels, torch.arange(WINDOWS))


@pytest.mark.parametrize("config", loss_configs())
def test_every_logit_loss_is_the_mean_over_positions(config):
    """The token-level loss of a batch of windows = the mean of each window's loss over its positions."""
    loss = build_loss(OmegaConf.to_container(OmegaConf.load(config_dir() / "loss" / f"{config}.yaml")))
    assert not isinstance(loss, FeatureLoss)
    student, teacher, batch = token_batch()
    flat_student, flat_teacher, flat_batch = per_position(student, teacher if loss.needs_teacher else None, batch)
    assert flat_student.shape == (WINDOWS * T, V) and flat_batch[1].shape == (WINDOWS * T,)
    whole, _ = loss(flat_student, flat_teacher, flat_batch)
    per_window = [loss(student[i], teacher[i] if loss.needs_teacher else None,
                       (batch[0][i:i + 1], batch[1][i], batch[2][i:i + 1]))[0] for i in range(WINDOWS)]
    assert whole.item() == pytest.approx(torch.stack(per_window).mean().item(), rel=1e-6, abs=1e-9)


def test_classifier_outputs_pass_unchanged():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    batch = (torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert per_position(student, teacher, batch) == (student, teacher, batch)


def softmax(z):
    return torch.exp(z - torch.logsumexp(z, -1, keepdim=True))


def test_reverse_kl_by_explicit_sums():
    student, teacher, _ = token_batch(1)
    zs, zt = student.reshape(-1, V), teacher.reshape(-1, V)
    for temperature in (1.0, 3.0):
        ps, pt = softmax(zs / temperature), softmax(zt / temperature)
        expected = (ps * (ps.log() - pt.log())).sum() / len(zs)
        assert KF.reverse_kl_at_temperature(zs, zt, temperature).item() == pytest.approx(expected.item(), rel=1e-10)


def test_generalized_jsd_limits_and_midpoint():
    student, teacher, _ = token_batch(2)
    zs, zt = student.reshape(-1, V), teacher.reshape(-1, V)
    forward = KF.kl_divergence_at_temperature(zs, zt).item()
    reverse = KF.reverse_kl_at_temperature(zs, zt).item()
    assert KF.generalized_jsd(zs, zt, 0.0).item() == pytest.approx(forward)
    assert KF.generalized_jsd(zs, zt, 1.0).item() == pytest.approx(reverse)
    # JSD_0.5 is the symmetric JS divergence the functional-similarity metrics report (implemented apart)
    assert KF.generalized_jsd(zs, zt, 0.5).item() == pytest.approx(js_divergence(zs, zt), rel=1e-9)
    # near the ends the interpolation approaches beta x forward and (1 - beta) x reverse KL
    assert KF.generalized_jsd(zs, zt, 1e-5).item() / 1e-5 == pytest.approx(forward, rel=1e-3)
    assert KF.generalized_jsd(zs, zt, 1 - 1e-5).item() / 1e-5 == pytest.approx(reverse, rel=1e-3)
    assert KF.generalized_jsd(zs, zs, 0.3).item() == pytest.approx(0.0, abs=1e-12)


def test_divergence_losses_train_the_student_toward_the_teacher():
    assert {"reverse_kl", "generalized_jsd"} <= set(LOSSES.names())
    torch.manual_seed(0)
    teacher = torch.randn(32, V)
    for name, extra in (("reverse_kl", {}), ("generalized_jsd", {"beta": 0.5})):
        loss = build_loss({"name": name, "alpha": 1.0, "temperature": 1.0, "t_squared": True, **extra})
        student = torch.zeros(32, V, requires_grad=True)
        optimizer = torch.optim.Adam([student], lr=0.1)
        start = None
        for _ in range(300):
            value, parts = loss(student, teacher, (None, torch.zeros(32, dtype=torch.long), None))
            start = start if start is not None else value.item()
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        assert value.item() < 0.05 * start and set(parts) == {"reverse_kl" if name == "reverse_kl" else "jsd"}
