"""Paper 004's PTLoss: formulas, proxy teacher, Q-hat, subsumption identities, config loss and search."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.losses import build_loss
from kdrun.losses import functional as F
from support import run_in_process

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def float64():
    """Identities are checked to tight tolerances; the default dtype is restored afterwards."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _loss_config(**options):
    return {"name": "ptloss", "order": None, "epsilon": None, "epsilon_file": None, "temperature": 1.0, **options}


# --- the loss formula --------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [torch.zeros(3), torch.zeros(4, 3), torch.zeros(5, 4, 3)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_zero_coefficients_give_exactly_kl(epsilon, temperature):
    student, teacher = torch.randn(5, 4), torch.randn(5, 4) * 3
    expected = F.kl_divergence_at_temperature(student, teacher, temperature)
    assert torch.allclose(F.ptloss(student, teacher, epsilon, temperature), expected, atol=1e-12)


def test_ptloss_matches_the_written_out_sum():
    torch.manual_seed(0)
    student, teacher, eps = torch.randn(3, 4), torch.randn(3, 4), torch.rand(4, 2) * 11 - 1
    p, q = torch.softmax(teacher, -1), torch.softmax(student, -1)
    expected = 0.0
    for n in range(3):
        for c in range(4):
            expected += p[n, c] * (torch.log(p[n, c] / q[n, c]) + sum(eps[c, m] * (1 - q[n, c]) ** (m + 1)
                                                                       for m in range(2)))
    assert torch.allclose(F.ptloss(student, teacher, eps), expected / 3)
    # a shared (M,) vector equals the same row repeated for every class
    shared = torch.tensor([0.7, -0.3])
    assert torch.allclose(F.ptloss(student, teacher, shared), F.ptloss(student, teacher, shared.expand(4, 2)))


# --- proxy teacher -------------------------------------------------------------------------------------


def test_proxy_teacher_reproduces_the_binary_check_values():
    teacher = torch.tensor([[0.8, 0.2], [0.9, 0.1], [1.0, 0.0]])
    proxy, report = F.ptloss_proxy_teacher(teacher, torch.tensor([[1.0], [1.0]]))
    assert report.converged and report.max_residual < 1e-9
    assert torch.allclose(proxy[:, 0], torch.tensor([0.8685, 0.9430, 1.0]), atol=5e-5)
    assert torch.allclose(proxy.sum(-1), torch.ones(3))


def test_proxy_teacher_with_zero_coefficients_is_the_teacher():
    teacher = torch.softmax(torch.randn(6, 5) * 2, -1)
    proxy, report = F.ptloss_proxy_teacher(teacher, torch.zeros(3))
    assert report.converged and torch.allclose(proxy, teacher, atol=1e-12)


def _brute_force_minimiser(teacher, eps):
    """argmin_q l_PT-M(p_t, q) by L-BFGS on the logits, from the teacher's logits."""
    logits = torch.log(teacher).clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([logits], lr=1, max_iter=100, tolerance_grad=1e-13, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.ptloss_with_teacher_probs(logits, teacher, eps, reduction="none").sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return torch.softmax(logits.detach(), -1)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (3, 2), (1,)])
def test_proxy_teacher_is_the_ptloss_minimiser(shape):
    torch.manual_seed(len(shape) * 10 + shape[-1])
    teacher = torch.softmax(torch.randn(8, 3) * 2, -1)
    eps = torch.rand(shape) * 11 - 1  # the paper's range [-1, 10]
    proxy, report = F.ptloss_proxy_teacher(teacher, eps)
    assert report.converged
    brute = _brute_force_minimiser(teacher, eps)
    value = lambda q: F.ptloss_with_teacher_probs(torch.log(q), teacher, eps, reduction="none")  # noqa: E731
    assert (value(proxy) <= value(brute) + 1e-10).all()
    assert torch.allclose(proxy, brute, atol=1e-5)
    # and it satisfies the fixed-point form q = (p + h(q)) / (1 + sum h(q))
    m = torch.arange(1, eps.shape[-1] + 1)
    h = teacher * proxy * (m * eps * (1 - proxy).unsqueeze(-1) ** (m - 1)).sum(-1)
    assert torch.allclose(proxy, (teacher + h) / (1 + h.sum(-1, keepdim=True)), atol=1e-9)


def test_proxy_teacher_converges_over_the_search_range():
    torch.manual_seed(1)
    teacher = torch.softmax(torch.randn(100, 6) * 3, -1)
    for order in range(1, 6):
        for low, high in [(-1.0, 0.0), (-1.0, 10.0), (9.0, 10.0)]:
            proxy, report = F.ptloss_proxy_teacher(teacher, low + (high - low) * torch.rand(6, order))
            assert report.converged, (order, low, high, report)
            assert torch.allclose(proxy.sum(-1), torch.ones(100))


# --- quality score -------------------------------------------------------------------------------------


def test_quality_score_is_squared_mean_distance_plus_mean_squared_negative_entropy():
    proxy = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([0, 1])
    mean_distance = (0.0 + (0.5**2 + 0.5**2) ** 0.5) / 2
    negative_entropy = torch.tensor([0.0, torch.log(torch.tensor(0.5)).item()])  # 0 log 0 = 0
    expected = mean_distance**2 + (negative_entropy**2).mean()
    assert torch.allclose(F.ptloss_quality_score(proxy, labels), expected)


# --- App. A.1: PTLoss with per-example coefficients subsumes label smoothing and focal loss ------------


def test_label_smoothed_teacher_is_ptloss_with_teacher_dependent_coefficients():
    torch.manual_seed(2)
    classes, order, delta = 3, 60, 0.1
    teacher = torch.softmax(torch.randn(8, classes), -1)
    student = torch.randn(8, classes, requires_grad=True)
    m = torch.arange(1, order + 1)
    eps = (delta / m) * (1 / (classes * teacher.unsqueeze(-1)) - 1)  # (B, C, M); Eq. 27 with delta/C
    pt = F.ptloss_with_teacher_probs(student, teacher, eps)
    smoothed = (1 - delta) * teacher + delta / classes
    entropy_gap = (torch.xlogy(teacher, teacher).sum(-1) - torch.xlogy(smoothed, smoothed).sum(-1)).mean()
    ls = F.ptloss_with_teacher_probs(student, smoothed, torch.zeros(1)) + entropy_gap  # KL(p_ls || p_s) + const
    assert abs(pt.item() - ls.item()) < 1e-3
    grad_pt, = torch.autograd.grad(pt, student)
    grad_ls, = torch.autograd.grad(ls, student)
    assert torch.allclose(grad_pt, grad_ls, atol=1e-3)


def test_focal_loss_is_ptloss_with_student_dependent_coefficients():
    torch.manual_seed(3)
    order, gamma = 60, 2.0
    teacher = torch.softmax(torch.randn(8, 3), -1)
    student = torch.randn(8, 3)
    q = torch.softmax(student, -1)
    m = torch.arange(1, order + 1)
    eps = ((1 - q.unsqueeze(-1)) ** gamma - 1) / m  # Eq. 14
    focal = (torch.xlogy(teacher, teacher) + teacher * (1 - q) ** gamma * -torch.log(q)).sum(-1).mean()  # Eq. 12
    assert abs(F.ptloss_with_teacher_probs(student, teacher, eps).item() - focal.item()) < 1e-3


# --- the config loss -----------------------------------------------------------------------------------


def test_ptloss_config_loss_reads_coefficients_and_needs_no_labels():
    loss = build_loss(_loss_config(order=2, epsilon=[[1.0, 0.5], [0.0, 2.0], [3.0, -1.0]]))
    assert loss.needs_teacher and not loss.needs_labels
    student, teacher = torch.randn(4, 3).float(), torch.randn(4, 3).float()
    value, parts = loss(student, teacher, (None, None, None))
    assert set(parts) == {"kl", "perturbation"}
    assert torch.allclose(value, F.ptloss(student, teacher, loss.coefficients))
    plain = build_loss(_loss_config())  # no coefficients: plain KL
    assert torch.allclose(plain(student, teacher, None)[0], F.kl_divergence_at_temperature(student, teacher))


@pytest.mark.parametrize("options, message", [
    ({"order": 3, "epsilon": [1.0, 2.0]}, "ptloss.order=3"),
    ({"epsilon": [1.0], "epsilon_file": "x.json"}, "at most one"),
    ({"epsilon_file": "does/not/exist.json"}, "no such file"),
    ({"epsilon": [[1.0, 2.0], [1.0]]}, "different or zero length"),
    ({"epsilon": ["a"]}, "not a finite number"),
    ({"order": 0}, "ptloss.order=0"),
    ({"temperature": 0.0}, "temperature"),
])
def test_ptloss_config_errors_name_the_key_and_the_allowed_values(options, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(_loss_config(**options))


def test_ptloss_per_class_rows_must_match_the_classes():
    loss = build_loss(_loss_config(epsilon=[[1.0], [2.0]]))
    with pytest.raises(ConfigError, match="2 rows"):
        loss(torch.randn(4, 3).float(), torch.randn(4, 3).float(), None)


# --- the search command, end to end ----------------------------------------------------------------------

TINY = ["data=gaussian_mixture", "data.n_train=300", "data.n_val=120", "data.n_test=100", "data.split=distill4",
        "teacher=mlp", "student=mlp", "teacher.epochs=1", "student.epochs=1", "teacher.model.width=16",
        "student.model.width=16"]


def test_search_writes_candidates_and_coefficients_that_training_loads(tmp_path):
    from kdrun.search.ptloss import search

    torch.set_default_dtype(torch.float32)  # as in a real run
    overrides = [f"paths.output_root={tmp_path}", *TINY, "search.max_order=2", "search.trials=3",
                 "search.per_class=true", "search.dev_size=80"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="ptloss_search", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    result = search(cfg, tmp_path / "search")

    rows = list(csv.DictReader((tmp_path / "search" / "candidates.csv").open()))
    assert [(int(r["order"]), int(r["trial"])) for r in rows] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    for row in rows:
        assert len(json.loads(row["epsilon"])) == 3  # per class: one row per class
        assert all(-1.0 <= v <= 10.0 for r in json.loads(row["epsilon"]) for v in r)
    saved = json.loads((tmp_path / "search" / "ptloss_epsilon.json").read_text())
    assert saved["score"] == min(float(r["score"]) for r in rows if r["converged"] == "True")
    assert saved["order"] == len(saved["epsilon"][0]) and saved["dev_size"] == 80
    assert saved == {k: v for k, v in result.items() if k != "output"}

    metrics, _ = run_in_process(tmp_path, [*TINY, "loss=ptloss",
                                           f"loss.epsilon_file={tmp_path / 'search' / 'ptloss_epsilon.json'}"],
                                quick=False)
    assert metrics["teacher/source"] == "reused"  # the search trained the very teacher the run distils from
    assert 0.0 <= metrics["student/test/acc"] <= 1.0


def test_search_rejects_bad_options():
    from kdrun.search.ptloss import check_search_config

    with pytest.raises(ConfigError, match=r"search.range"):
        check_search_config({"max_order": 5, "order": None, "trials": 1, "dev_size": 1, "max_iterations": 1,
                             "range": [10, -1], "per_class": False})
    with pytest.raises(ConfigError, match=r"search.trials=0"):
        check_search_config({"max_order": 5, "order": None, "trials": 0, "dev_size": 1, "max_iterations": 1,
                             "range": [-1, 10], "per_class": False})
