"""Paper 001's retrieval objectives (eq. 12, eq. 13) against explicit sums, identities and autograd.

References are written out in float64 as the (B, L, L) double sum of eq. 13, element by element,
never by calling the function under test a second time.
"""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from omegaconf import OmegaConf

from support import random_logits

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.losses import build_loss
from kdrun.losses import functional as KF

B, L = 4, 5
DT = torch.float64
PSIS = ["uniform", "one_minus_prob", "one_minus_sigmoid_logit"]
SELF_WEIGHTS = ["psi", "one"]


@pytest.fixture
def logits():
    return random_logits(B, L, seed=1, dtype=DT)


# --- explicit references -----------------------------------------------------------------------


def ref_psi(zt, psi, a=1.0, normalize=False):
    """The negative weights w(y'|x) as plain numbers."""
    if psi == "uniform":
        w = torch.ones_like(zt)
    elif psi == "one_minus_prob":
        w = 1.0 - torch.exp(zt) / torch.exp(zt).sum(-1, keepdim=True)
    else:
        w = 1.0 - 1.0 / (1.0 + torch.exp(-a * zt))
    return w / w.sum(-1, keepdim=True) if normalize else w


def ref_double_distillation(zs, w, q, self_weight):
    """(1/B) sum_n sum_y q[n, y] log sum_{y'} w'[n, y, y'] exp(f[n, y'] - f[n, y]) via an explicit (B, L, L) tensor."""
    n, k = zs.shape
    weights = w[:, None, :].expand(n, k, k).clone()  # [n, y, y']
    if self_weight == "one":
        idx = torch.arange(k)
        weights[:, idx, idx] = 1.0
    diff = zs[:, None, :] - zs[:, :, None]  # f_{y'} - f_y at [n, y, y']
    inner = torch.log((weights * torch.exp(diff)).sum(-1))
    return (q * inner).sum() / n


def softmax(z):
    return torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)


def one_hot(y, k=L):
    out = torch.zeros(len(y), k, dtype=DT)
    out[torch.arange(len(y)), y] = 1.0
    return out


# --- generalized_softmax_cross_entropy ---------------------------------------------------------


def test_generalized_ce_with_uniform_weights_is_cross_entropy_minus_log_L(logits):
    zs, _, y = logits
    log_w = torch.full_like(zs, -math.log(L))
    ce = -sum(math.log(softmax(zs)[i, y[i]].item()) for i in range(B)) / B
    assert KF.generalized_softmax_cross_entropy(zs, y, log_w).item() == pytest.approx(ce - math.log(L), rel=1e-12)


def test_generalized_ce_matches_explicit_sum_with_zero_weights(logits):
    zs, _, y = logits
    w = torch.rand(B, L, generator=torch.Generator().manual_seed(2), dtype=DT)
    w[0, (y[0] + 1) % L] = 0.0  # a zero weight is log-weight -inf
    expected = sum(math.log(sum(w[i, j].item() * math.exp(zs[i, j].item() - zs[i, y[i]].item()) for j in range(L)))
                   for i in range(B)) / B
    z = zs.clone().requires_grad_()
    value = KF.generalized_softmax_cross_entropy(z, y, torch.log(w))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    assert torch.isfinite(z.grad).all()


# --- double_distillation_loss against the (B, L, L) double sum ---------------------------------


@pytest.mark.parametrize("psi,self_weight,normalize", list(itertools.product(PSIS, SELF_WEIGHTS, [False, True])))
def test_double_distillation_matches_explicit_double_sum_values_and_gradients(logits, psi, self_weight, normalize):
    zs, zt, _ = logits
    a, temperature = 0.7, 2.0
    q = softmax(zt / temperature)
    z_ref = zs.clone().requires_grad_()
    expected = ref_double_distillation(z_ref, ref_psi(zt, psi, a, normalize), q, self_weight)
    expected.backward()
    z = zs.clone().requires_grad_()
    value = KF.double_distillation_loss(z, zt, psi=psi, a=a, normalize=normalize, positive_self_weight=self_weight,
                                        temperature=temperature)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("psi,self_weight", list(itertools.product(PSIS, SELF_WEIGHTS)))
def test_double_distillation_with_onehot_positives_matches_double_sum(logits, psi, self_weight):
    zs, zt, y = logits
    z_ref = zs.clone().requires_grad_()
    expected = ref_double_distillation(z_ref, ref_psi(zt, psi), one_hot(y), self_weight)
    expected.backward()
    z = zs.clone().requires_grad_()
    value = KF.double_distillation_loss(z, zt, y, psi=psi, positive_self_weight=self_weight, positive_weights="onehot")
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-9, atol=1e-12)


def test_uniform_psi_is_soft_target_cross_entropy(logits):
    zs, zt, _ = logits
    # w = 1, self weight psi: sum_y p_t(y) (logsumexp(f) - f_y) = H(p_t, softmax(f))
    expected = -(softmax(zt) * torch.log(softmax(zs))).sum() / B
    assert KF.double_distillation_loss(zs, zt, psi="uniform").item() == pytest.approx(expected.item(), rel=1e-12)


def test_onehot_positives_equal_generalized_ce_with_teacher_weights(logits):
    zs, zt, y = logits
    log_w = KF.psi_log_weights(zt, "one_minus_sigmoid_logit", a=1.0)
    dd = KF.double_distillation_loss(zs, zt, y, positive_weights="onehot")
    assert dd.item() == pytest.approx(KF.generalized_softmax_cross_entropy(zs, y, log_w).item(), rel=1e-12)


@pytest.mark.parametrize("psi", PSIS)
def test_normalizing_shifts_value_by_mean_log_z_and_keeps_gradient(logits, psi):
    zs, zt, _ = logits
    log_z = torch.log(ref_psi(zt, psi).sum(-1)).mean()
    grads, values = [], []
    for normalize in (False, True):
        z = zs.clone().requires_grad_()
        value = KF.double_distillation_loss(z, zt, psi=psi, normalize=normalize)
        value.backward()
        values.append(value.item())
        grads.append(z.grad)
    assert values[0] - values[1] == pytest.approx(log_z.item(), rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_sigmoid_psi_log_weights_are_log_one_minus_sigmoid(logits):
    _, zt, _ = logits
    expected = torch.log(1.0 - torch.sigmoid(2.5 * zt))
    torch.testing.assert_close(KF.psi_log_weights(zt, "one_minus_sigmoid_logit", a=2.5), expected)


def test_self_weight_one_is_bounded_below_by_zero_when_weights_at_most_one(logits):
    zs, zt, _ = logits
    # a confident positive has Psi weight near 0; printed form goes negative, the standard-CE form cannot
    zt = zt.clone()
    zt[:, 0] = 30.0
    zs = zs.clone()
    zs[:, 0] = 50.0
    assert KF.double_distillation_loss(zs, zt, positive_self_weight="psi").item() < 0
    assert KF.double_distillation_loss(zs, zt, positive_self_weight="one").item() >= 0


# --- chunking and scale ------------------------------------------------------------------------


@pytest.mark.parametrize("self_weight,positives", list(itertools.product(SELF_WEIGHTS, ["teacher_prob", "onehot"])))
def test_chunked_equals_unchunked_value_and_gradient(self_weight, positives):
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(7, 11, generator=g, dtype=DT), torch.randn(7, 11, generator=g, dtype=DT)
    y = torch.randint(0, 11, (7,), generator=g)
    results = []
    for chunk in (None, 1, 3, 7, 100):
        z = zs.clone().requires_grad_()
        value = KF.double_distillation_loss(z, zt, y, positive_self_weight=self_weight, positive_weights=positives,
                                            chunk_size=chunk)
        value.backward()
        results.append((value.detach(), z.grad))
    for value, grad in results[1:]:
        torch.testing.assert_close(value, results[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("self_weight", SELF_WEIGHTS)
def test_many_labels_run_quickly(self_weight):
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(4, 200_000, generator=g).requires_grad_()
    zt = torch.randn(4, 200_000, generator=g)
    start = time.perf_counter()
    value = KF.double_distillation_loss(zs, zt, positive_self_weight=self_weight, chunk_size=2)
    value.backward()
    assert time.perf_counter() - start < 5.0
    assert torch.isfinite(value) and torch.isfinite(zs.grad).all()


# --- numerical stability -----------------------------------------------------------------------


@pytest.mark.parametrize("psi,self_weight,positives",
                         list(itertools.product(PSIS, SELF_WEIGHTS, ["teacher_prob", "onehot"])))
@pytest.mark.parametrize("dtype", [torch.float32, DT])
def test_large_logits_give_finite_values_and_gradients(psi, self_weight, positives, dtype):
    g = torch.Generator().manual_seed(5)
    zs = (torch.randint(0, 2, (B, L), generator=g) * 2.0 - 1.0).to(dtype) * 1e3
    zt = (torch.randint(0, 2, (B, L), generator=g) * 2.0 - 1.0).to(dtype) * 1e3
    y = zs.argmax(-1)  # the dominant term is the positive itself: the cancellation-prone case
    for normalize in (False, True):
        z = zs.clone().requires_grad_()
        value = KF.double_distillation_loss(z, zt, y, psi=psi, normalize=normalize, positive_self_weight=self_weight,
                                            positive_weights=positives)
        value.backward()
        assert torch.isfinite(value), (psi, self_weight, positives, normalize)
        assert torch.isfinite(z.grad).all(), (psi, self_weight, positives, normalize)


def test_self_weight_one_has_no_cancellation_when_positive_dominates():
    # f_y beats the rest by 40 nats: log(S - w_y e^{f_y}) by subtraction would be lost to rounding
    zs = torch.tensor([[40.0, 0.0, -1.0]], dtype=DT)
    w = torch.tensor([[0.5, 0.25, 0.125]], dtype=DT)
    rest = math.log(0.25 * math.exp(0.0) + 0.125 * math.exp(-1.0))
    expected = math.log1p(math.exp(rest - 40.0))
    value = KF.generalized_softmax_cross_entropy(zs, torch.tensor([0]), torch.log(w), positive_self_weight="one")
    assert value.item() == pytest.approx(expected, rel=1e-12)


# --- config wrappers ---------------------------------------------------------------------------


def loss_config(name, **overrides):
    cfg = OmegaConf.to_container(OmegaConf.load(config_dir() / "loss" / f"{name}.yaml"))
    cfg.update(overrides)
    return cfg


def test_double_distillation_wrapper_matches_function_and_needs(logits):
    zs, zt, y = logits
    loss = build_loss(loss_config("double_distillation", a=0.5, temperature=2.0))
    assert loss.needs_teacher and not loss.needs_labels
    value, parts = loss(zs, zt, (None, y, None))
    expected = KF.double_distillation_loss(zs, zt, psi="one_minus_sigmoid_logit", a=0.5, temperature=2.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert set(parts) == {"double_distillation"}
    assert build_loss(loss_config("double_distillation", positive_weights="onehot")).needs_labels


def test_generalized_ce_wrapper_uniform_needs_no_teacher_and_is_ce(logits):
    zs, _, y = logits
    loss = build_loss(loss_config("generalized_softmax_ce", psi="uniform", normalize_neg_weights=True))
    assert loss.needs_labels and not loss.needs_teacher
    value, _ = loss(zs, None, (None, y, None))
    ce = -sum(math.log(softmax(zs)[i, y[i]].item()) for i in range(B)) / B
    assert value.item() == pytest.approx(ce - math.log(L), rel=1e-12)
    assert build_loss(loss_config("generalized_softmax_ce")).needs_teacher


@pytest.mark.parametrize("name", ["double_distillation", "generalized_softmax_ce"])
@pytest.mark.parametrize("key,bad,words", [
    ("psi", "one_minus_logit", ["psi", "one_minus_logit", "one_minus_sigmoid_logit"]),
    ("a", 0.0, ["a=0.0", "> 0"]),
    ("a", -1, ["a=-1", "> 0"]),
    ("chunk_size", 0, ["chunk_size=0", ">= 1"]),
    ("chunk_size", 2.5, ["chunk_size=2.5", "integer"]),
    ("positive_self_weight", "zero", ["positive_self_weight", "zero", "psi, one"]),
    ("normalize_neg_weights", "yes", ["normalize_neg_weights", "true or false"]),
])
def test_bad_options_name_key_value_and_allowed(name, key, bad, words):
    with pytest.raises(ConfigError) as error:
        build_loss(loss_config(name, **{key: bad}))
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("key,bad,words", [
    ("temperature", 0.0, ["temperature=0.0", "> 0"]),
    ("positive_weights", "labels", ["positive_weights", "labels", "teacher_prob, onehot"]),
])
def test_bad_double_distillation_options(key, bad, words):
    with pytest.raises(ConfigError) as error:
        build_loss(loss_config("double_distillation", **{key: bad}))
    for word in words:
        assert word in str(error.value)


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["double_distillation", "generalized_softmax_ce"])
def test_end_to_end_run(tmp_path, loss_name):
    from support import run_in_process

    metrics, out = run_in_process(tmp_path, [f"loss={loss_name}", "teacher=mlp", "student=mlp", "data=gaussian_binary",
                                             "data.n_train=200", "data.n_val=100", "data.n_test=200"])
    assert (out / "metrics.json").is_file()
    # the student trained on this loss and was evaluated: finite test log-loss, steps taken
    assert metrics["student/steps"] > 0 and math.isfinite(metrics["student/test/nll"])
