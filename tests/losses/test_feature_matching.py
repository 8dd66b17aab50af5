"""Feature-map matching (FitNets): formula, hooks, projections, the random-teacher control, runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.losses.feature_taps import FeatureTap, random_copy
from kdrun.losses import build_loss
from kdrun.losses import functional as F
from kdrun.models import build_model
from kdrun.engine.module import DistillationModule
from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec
from support import read_metrics, run_in_process

DIGITS_SHAPE = (1, 8, 8)
OPTIMIZER = {"name": "adam", "lr": 0.01, "weight_decay": 0.0}


def cnn(width: float = 1.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model({"name": "cnn", "num_classes": 10, "width": width}, DIGITS_SHAPE)


def feature_loss(layers, control: str = "none", weight: float = 1.0) -> dict:
    return {"name": "feature_matching", "weight": weight, "layers": layers, "control": control, "control_seed": 0}


def module_for(loss_cfg: dict, student: nn.Module, teacher: nn.Module) -> DistillationModule:
    from omegaconf import OmegaConf

    schedule = LossSchedule([PhaseSpec(loss_cfg, None, 0, "loss")], total_steps=10)
    return DistillationModule(student, teacher, schedule, OmegaConf.create(OPTIMIZER), 10, "student",
                              input_shape=DIGITS_SHAPE)


def test_formula_is_the_elementwise_mean_square():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.tensor([[[[0.0, 2.0], [5.0, 1.0]]]])
    assert F.feature_matching_loss(s, t).item() == pytest.approx((1 + 0 + 4 + 9) / 4)
    label = torch.tensor(0.5)
    assert F.label_plus_hints(label, [torch.tensor(1.0), torch.tensor(2.0)], 10.0).item() == pytest.approx(30.5)
    with pytest.raises(ValueError, match="shapes differ"):
        F.feature_matching_loss(s, t[..., :1])


@pytest.mark.parametrize("name, depth", [("features.4", 5), ("features.1", 2)])
def test_tap_captures_the_named_module_output(name, depth):
    # features.1 is a BatchNorm followed by ReLU(inplace=True): the capture must keep the pre-ReLU map.
    model = cnn().eval()
    tap = FeatureTap(model, [name], "student", detach=False)
    x = torch.randn(4, *DIGITS_SHAPE)
    with torch.no_grad():
        expected = model.features[:depth](x).clone()  # the same submodules, run by hand
        model(x)
    (captured,) = tap.collect([name])
    assert torch.equal(captured, expected)
    if name == "features.1":
        assert (captured < 0).any()
    with pytest.raises(RuntimeError, match="no student forward captured"):
        tap.collect([name])  # consumed: a stale capture is never reused


def test_projection_trains_and_teacher_stays_frozen():
    teacher, student = cnn(1.0, seed=1), cnn(0.5, seed=2)
    module = module_for(feature_loss([{"student": "features.10", "teacher": "features.10"}, "features"]),
                        student, teacher)
    projection = module.feature_matchers[0].projections["0"]
    assert isinstance(projection, nn.Conv2d) and (projection.in_channels, projection.out_channels) == (30, 60)
    assert isinstance(module.feature_matchers[0].projections["1"], nn.Linear)
    optimizer = module.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in module.feature_matchers.parameters()} <= optimised
    assert not optimised & {id(p) for p in teacher.parameters()}

    module.train()
    assert not teacher.training
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    projection_before = projection.weight.detach().clone()
    x, y = torch.randn(8, *DIGITS_SHAPE), torch.randint(0, 10, (8,))
    logits = student(x)
    with torch.no_grad():
        teacher_logits = teacher(x)
    loss, parts, _ = module.schedule(0, logits, teacher_logits, (x, y, torch.arange(8)))
    assert set(parts) == {"feature_matching/label", "feature_matching/feature"}
    optimizer.zero_grad()
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(projection.weight, projection_before)
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_unknown_layer_name_is_a_config_error_listing_names():
    with pytest.raises(ConfigError, match=r"no module 'features\.99'.*available.*features\.0"):
        module_for(feature_loss([{"student": "features.99", "teacher": "features.4"}]), cnn(0.5), cnn())


@pytest.mark.parametrize("layers, match", [([], "non-empty"), ([{"student": "a"}], r"layers\[0\]")])
def test_malformed_layers_are_config_errors(layers, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(feature_loss(layers))


def test_random_teacher_is_fresh_frozen_and_reproducible():
    teacher = cnn(seed=3)
    first, second = random_copy(teacher, 0), random_copy(teacher, 0)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first.features[0].weight, teacher.features[0].weight)
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    loss = build_loss(feature_loss(["features.4"], control="random_teacher"))
    assert not loss.needs_teacher


LAYER = "loss.layers=[{student:features.10,teacher:features.10}]"
TINY = ["teacher=cnn", "student=cnn", "student.model.width=0.5", "teacher.epochs=1", "student.epochs=1"]


def test_end_to_end_feature_matching(tmp_path):
    metrics, out = run_in_process(tmp_path, ["loss=feature_matching", "loss.weight=10", LAYER, *TINY], quick=False)
    assert (out / "metrics.json").exists()
    assert 0.0 <= read_metrics(out)["student/test/acc"] <= 1.0


def test_end_to_end_control_inside_a_schedule(tmp_path):
    # Feature matching against the random-teacher control, then plain KD.
    phases = "schedule.phases=[{loss:feature_matching,until:0.5},{loss:kd}]"
    metrics, out = run_in_process(
        tmp_path, ["loss=feature_matching", "loss.control=random_teacher", LAYER, "schedule=phases", phases, *TINY],
        quick=False)
    assert (out / "metrics.json").exists()


def test_unknown_layer_stops_the_run_before_the_teacher_trains(tmp_path):
    from support import compose_config
    from kdrun.pipeline import run

    cfg = compose_config(tmp_path, ["loss=feature_matching", "teacher=cnn", "student=cnn",
                                    "loss.layers=[{student: features.0, teacher: features.nope}]"])
    with pytest.raises(ConfigError, match="the teacher has no module 'features.nope'"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "teacher_store").exists()
