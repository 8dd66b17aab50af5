"""Loss schedules: reading the `schedule` group into phases, per-step weights, blending, errors."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir, group_options
from kdrun.errors import ConfigError
from kdrun.losses import LOSSES, build_loss
from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec, build_schedule, phase_specs, switch_steps

DT = torch.float64
CE_DEFAULTS = {"name": "ce", "label_smoothing": 0.0}  # configs/loss/ce.yaml
KD_DEFAULTS = {"name": "kd", "alpha": 0.9, "temperature": 4.0, "t_squared": True}  # configs/loss/kd.yaml
MSE_DEFAULTS = {"name": "mse_logits", "alpha": 1.0}  # configs/loss/mse_logits.yaml
KD_GROUP = {"name": "kd", "alpha": 0.5, "temperature": 2.0, "t_squared": False}  # a non-default `loss` group


def make_cfg(schedule: dict, loss: dict | None = None):
    """A root config with `loss` and `schedule` groups, so `${loss.name}` resolves as in the app."""
    return OmegaConf.create({"loss": dict(loss or KD_GROUP), "schedule": schedule})


def late_switch(**over):
    """Mirrors configs/schedule/late_switch.yaml."""
    return {"name": "late_switch", "from": "ce", "to": "${loss.name}", "at": 0.5, "window": 0,
            "window_align": "start", **over}


def phases(*items, window_align="start"):
    return {"name": "phases", "window_align": window_align, "phases": list(items)}


DEFAULT_PHASES = [{"loss": "ce", "until": 0.25, "window": 0}, {"loss": "kd", "until": 0.75, "window": 0},
                  {"loss": "ce"}]  # mirrors configs/schedule/phases.yaml


def schedule_of(schedule: dict, total_steps: int = 100, loss: dict | None = None) -> LossSchedule:
    cfg = make_cfg(schedule, loss)
    return build_schedule(cfg.schedule, cfg.loss, total_steps)


def specs_of(schedule: dict, loss: dict | None = None):
    cfg = make_cfg(schedule, loss)
    return phase_specs(cfg.schedule, cfg.loss)


# --- the yaml files the mirrors above copy -------------------------------------------------------


def test_mirrors_match_the_yaml_files():
    load = lambda group, name: OmegaConf.to_container(OmegaConf.load(config_dir() / group / f"{name}.yaml"))  # noqa: E731
    assert load("schedule", "constant") == {"name": "constant"}
    assert load("schedule", "late_switch") == late_switch()
    assert load("schedule", "phases") == phases(*DEFAULT_PHASES)
    assert load("loss", "ce") == CE_DEFAULTS
    assert load("loss", "kd") == KD_DEFAULTS
    assert load("loss", "mse_logits") == MSE_DEFAULTS


# --- phase_specs ---------------------------------------------------------------------------------


def test_constant_takes_the_loss_group():
    (spec,) = specs_of({"name": "constant"})
    assert spec == PhaseSpec(KD_GROUP, None, 0, "loss")


def test_late_switch_defaults():
    first, second = specs_of(late_switch())
    # `from: ce` differs from the loss group (kd): ce.yaml defaults; `to: ${loss.name}` is the group itself
    assert first == PhaseSpec(CE_DEFAULTS, 0.5, 0, "schedule.at")
    assert second == PhaseSpec(KD_GROUP, None, 0, "schedule.to")


def test_late_switch_name_equal_to_loss_group_takes_group_settings():
    group = {"name": "ce", "label_smoothing": 0.1}
    first, second = specs_of(late_switch(to="kd", at=30, window=4), loss=group)
    assert first == PhaseSpec(group, 30, 4, "schedule.at")
    assert second.loss == KD_DEFAULTS  # not the group: kd.yaml defaults
    assert isinstance(first.until, int)


def test_late_switch_mapping_used_as_given():
    mapping = {"name": "kd", "alpha": 1.0, "temperature": 8.0, "t_squared": True}
    first, second = specs_of(late_switch(**{"from": mapping, "to": "mse_logits"}))
    assert first.loss == mapping
    assert second.loss == MSE_DEFAULTS
    assert isinstance(first.loss, dict)


def test_phases_defaults():
    specs = specs_of(phases(*DEFAULT_PHASES))
    assert specs == [
        PhaseSpec(CE_DEFAULTS, 0.25, 0, "schedule.phases[0].until"),
        PhaseSpec(KD_GROUP, 0.75, 0, "schedule.phases[1].until"),  # kd is the loss group's choice
        PhaseSpec(CE_DEFAULTS, None, 0, "schedule.phases[2].until"),
    ]


def test_phases_last_until_is_ignored_and_mapping_is_used():
    mapping = {"name": "mse_logits", "alpha": 0.3}
    specs = specs_of(phases({"loss": mapping, "until": 10, "window": 2}, {"loss": "kd", "until": 0.9}),
                     loss={"name": "ce", "label_smoothing": 0.0})
    assert specs[0] == PhaseSpec(mapping, 10, 2, "schedule.phases[0].until")
    assert specs[1] == PhaseSpec(KD_DEFAULTS, None, 0, "schedule.phases[1].until")


def test_phases_errors():
    with pytest.raises(ConfigError, match="schedule.phases is empty"):
        specs_of(phases())
    with pytest.raises(ConfigError, match=r"schedule\.phases\[1\] has no `loss`"):
        specs_of(phases({"loss": "ce", "until": 0.5}, {"until": 0.5}))
    with pytest.raises(ConfigError, match=r"schedule\.phases\[0\]\.until is missing"):
        specs_of(phases({"loss": "ce"}, {"loss": "kd"}))


def test_unknown_schedule_name():
    with pytest.raises(ConfigError) as err:
        specs_of({"name": "cosine"})
    msg = str(err.value)
    assert "schedule.name='cosine'" in msg
    assert "constant, late_switch, phases" in msg


@pytest.mark.parametrize("schedule,key", [
    (late_switch(**{"from": "focal"}), "schedule.from='focal'"),
    (late_switch(to="focl"), "schedule.to='focl'"),
    (phases({"loss": "ce", "until": 0.5}, {"loss": "focl"}), "schedule.phases[1].loss='focl'"),
])
def test_unknown_loss_name_in_schedule(schedule, key):
    with pytest.raises(ConfigError) as err:
        specs_of(schedule)
    msg = str(err.value)
    assert key in msg
    assert f"allowed: {', '.join(group_options('loss'))}" in msg


def test_unknown_loss_in_a_mapping_fails_when_built():
    with pytest.raises(ConfigError) as err:
        schedule_of(late_switch(to={"name": "focl", "gamma": 2}))
    assert str(err.value).startswith("schedule.to: unknown loss 'focl'")
    assert f"allowed: {', '.join(sorted(LOSSES))}" in str(err.value)


def test_bad_option_in_a_mapping_names_the_phase():
    with pytest.raises(ConfigError) as err:
        schedule_of(phases({"loss": "ce", "until": 0.5}, {"loss": {**KD_DEFAULTS, "alpha": 1.5}}))
    assert str(err.value).startswith("schedule.phases[1].until: kd.alpha=1.5")
    assert "[0, 1]" in str(err.value)


# --- weights ------------------------------------------------------------------------------------


def test_constant_weights_and_names():
    s = schedule_of({"name": "constant"})
    assert s.switches == []
    assert s.phase_names == ["kd"]
    assert all(s.weights(t) == [1.0] for t in (0, 50, 99))


def test_hard_switch_at_fraction():
    s = schedule_of(late_switch(at=0.5))
    assert s.switches == [(50, 0)]
    assert s.phase_names == ["0_ce", "1_kd"]
    for t in (0, 25, 49):
        assert s.weights(t) == [1.0, 0.0]
    for t in (50, 51, 99):
        assert s.weights(t) == [0.0, 1.0]


@pytest.mark.parametrize("at,total,step", [(0.25, 40, 10), (0.0, 100, 0), (1.0, 100, 100), (0.333, 1000, 333)])
def test_fraction_is_rounded_to_a_step(at, total, step):
    s = schedule_of(late_switch(at=at), total_steps=total)
    assert s.switches == [(step, 0)]


def test_hard_switch_at_int_step():
    s = schedule_of(late_switch(at=30))
    assert s.switches == [(30, 0)]
    assert s.weights(29) == [1.0, 0.0]
    assert s.weights(30) == [0.0, 1.0]


def test_int_one_is_a_step_not_the_whole_run():
    s = schedule_of(late_switch(at=1))
    assert s.weights(0) == [1.0, 0.0]
    assert s.weights(1) == [0.0, 1.0]


def test_linear_window_starting_at_switch():
    s = schedule_of(late_switch(at=0.5, window=10))
    assert s.switches == [(50, 10)]
    assert s.weights(49) == [1.0, 0.0]
    assert s.weights(50) == [1.0, 0.0]  # window start: s = 0
    assert s.weights(53) == pytest.approx([0.7, 0.3])
    assert s.weights(55) == pytest.approx([0.5, 0.5])  # middle
    assert s.weights(60) == [0.0, 1.0]  # end
    assert s.weights(99) == [0.0, 1.0]


def test_linear_window_centred_on_switch():
    s = schedule_of(late_switch(at=0.5, window=10, window_align="center"))
    assert s.switches == [(45, 10)]
    assert s.weights(44) == [1.0, 0.0]
    assert s.weights(45) == [1.0, 0.0]
    assert s.weights(50) == pytest.approx([0.5, 0.5])  # the switch point is the middle
    assert s.weights(55) == [0.0, 1.0]


@pytest.mark.parametrize("schedule", [
    late_switch(at=0.5, window=10),
    late_switch(at=0.3, window=7, window_align="center"),
    late_switch(**{"from": "kd", "to": "ce", "at": 0.6, "window": 13}),
    phases({"loss": "ce", "until": 0.25, "window": 10}, {"loss": "kd", "until": 0.5, "window": 30}, {"loss": "ce"}),
    phases(*DEFAULT_PHASES),
    {"name": "constant"},
])
def test_weights_sum_to_one_and_are_in_unit_interval(schedule):
    s = schedule_of(schedule)
    for t in range(0, 101):
        w = s.weights(t)
        assert len(w) == len(s.losses)
        assert sum(w) == pytest.approx(1.0, abs=1e-12)
        assert all(-1e-12 <= x <= 1.0 + 1e-12 for x in w)


def test_kd_to_ce_direction():
    s = schedule_of(late_switch(**{"from": "kd", "to": "ce", "at": 0.5, "window": 10}))
    assert s.phase_names == ["0_kd", "1_ce"]
    assert s.weights(50) == [1.0, 0.0]
    assert s.weights(55) == pytest.approx([0.5, 0.5])
    assert s.weights(60) == [0.0, 1.0]
    assert [t for t in range(100) if s.teacher_needed_at(t)] == list(range(0, 60))


def test_three_phases_hard():
    s = schedule_of(phases(*DEFAULT_PHASES))
    assert s.switches == [(25, 0), (75, 0)]
    assert s.phase_names == ["0_ce", "1_kd", "2_ce"]
    assert s.weights(0) == [1.0, 0.0, 0.0]
    assert s.weights(24) == [1.0, 0.0, 0.0]
    assert s.weights(25) == [0.0, 1.0, 0.0]
    assert s.weights(74) == [0.0, 1.0, 0.0]
    assert s.weights(75) == [0.0, 0.0, 1.0]
    assert s.weights(99) == [0.0, 0.0, 1.0]


def test_three_phases_with_windows():
    s = schedule_of(phases({"loss": "ce", "until": 20, "window": 10},
                           {"loss": "kd", "until": 0.7, "window": 20}, {"loss": "ce"}))
    assert s.switches == [(20, 10), (70, 20)]
    assert s.weights(25) == pytest.approx([0.5, 0.5, 0.0])
    assert s.weights(30) == [0.0, 1.0, 0.0]
    assert s.weights(70) == [0.0, 1.0, 0.0]
    assert s.weights(75) == pytest.approx([0.0, 0.75, 0.25])
    assert s.weights(90) == [0.0, 0.0, 1.0]


def test_back_to_back_switches_are_allowed():
    # the second switch may start exactly where the first window ends
    s = schedule_of(phases({"loss": "ce", "until": 20, "window": 10}, {"loss": "kd", "until": 30, "window": 0},
                           {"loss": "mse_logits"}))
    assert s.switches == [(20, 10), (30, 0)]
    assert s.weights(29) == pytest.approx([0.1, 0.9, 0.0])
    assert s.weights(30) == [0.0, 0.0, 1.0]


# --- teacher_needed_at ---------------------------------------------------------------------------


def test_teacher_not_needed_while_only_ce_is_active():
    s = schedule_of(late_switch(at=0.5, window=10))
    assert s.needs_teacher is True
    assert not any(s.teacher_needed_at(t) for t in range(0, 51))  # kd weight is 0 up to the window start
    assert all(s.teacher_needed_at(t) for t in range(51, 100))


def test_teacher_needed_from_a_hard_switch():
    s = schedule_of(late_switch(at=0.5))
    assert not s.teacher_needed_at(49)
    assert s.teacher_needed_at(50)


def test_teacher_in_three_phases():
    s = schedule_of(phases(*DEFAULT_PHASES))
    assert [t for t in range(100) if s.teacher_needed_at(t)] == list(range(25, 75))


def test_constant_ce_never_needs_teacher():
    s = schedule_of({"name": "constant"}, loss=CE_DEFAULTS)
    assert s.needs_teacher is False
    assert not any(s.teacher_needed_at(t) for t in range(100))


def test_constant_kd_always_needs_teacher():
    s = schedule_of({"name": "constant"})
    assert all(s.teacher_needed_at(t) for t in (0, 50, 99))


# --- __call__ -----------------------------------------------------------------------------------


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(6, 3, generator=g, dtype=DT)
    zt = torch.randn(6, 3, generator=g, dtype=DT)
    y = torch.randint(0, 3, (6,), generator=g)
    return zs, zt, (torch.zeros(6, 2), y, torch.arange(6))


def test_call_blends_with_the_weights(batch):
    zs, zt, b = batch
    s = schedule_of(late_switch(at=0.5, window=10))
    ce_loss, _ = build_loss(CE_DEFAULTS)(zs, zt, b)
    kd_loss, kd_parts = build_loss(KD_GROUP)(zs, zt, b)
    for step, w in [(53, 0.3), (55, 0.5), (58, 0.8)]:
        total, parts, weights = s(step, zs, zt, b)
        assert weights == pytest.approx({"0_ce": 1 - w, "1_kd": w})
        assert total.item() == pytest.approx((1 - w) * ce_loss.item() + w * kd_loss.item(), rel=1e-12)
        assert set(parts) == {"0_ce/ce", "1_kd/label", "1_kd/soft"}
        assert parts["0_ce/ce"].item() == pytest.approx(ce_loss.item(), rel=1e-12)
        assert parts["1_kd/soft"].item() == pytest.approx(kd_parts["soft"].item(), rel=1e-12)


def test_call_skips_zero_weight_losses_and_needs_no_teacher_then(batch):
    zs, _, b = batch
    s = schedule_of(late_switch(at=0.5, window=10))
    ce_loss, _ = build_loss(CE_DEFAULTS)(zs, None, b)
    total, parts, weights = s(50, zs, None, b)  # the training loop passes None when no teacher is needed
    assert weights == {"0_ce": 1.0, "1_kd": 0.0}
    assert set(parts) == {"0_ce/ce"}
    assert total.item() == pytest.approx(ce_loss.item(), rel=1e-12)


def test_call_after_switch_is_the_second_loss(batch):
    zs, zt, b = batch
    s = schedule_of(late_switch(at=0.5))
    kd_loss, _ = build_loss(KD_GROUP)(zs, zt, b)
    total, parts, weights = s(70, zs, zt, b)
    assert weights == {"0_ce": 0.0, "1_kd": 1.0}
    assert set(parts) == {"1_kd/label", "1_kd/soft"}
    assert total.item() == pytest.approx(kd_loss.item(), rel=1e-12)


def test_call_constant_parts_are_keyed_by_loss_name(batch):
    zs, zt, b = batch
    s = schedule_of({"name": "constant"}, loss={"name": "mse_logits", "alpha": 0.5})
    total, parts, weights = s(0, zs, zt, b)
    assert weights == {"mse_logits": 1.0}
    assert set(parts) == {"mse_logits/label", "mse_logits/mse"}
    mse = ((zs - zt) ** 2).mean().item()
    assert total.item() == pytest.approx(0.5 * parts["mse_logits/label"].item() + 0.5 * mse, rel=1e-12)


def test_call_gradient_is_the_blend_of_gradients(batch):
    zs, zt, b = batch
    s = schedule_of(late_switch(at=0.5, window=10))
    grads = []
    for fn in (build_loss(CE_DEFAULTS), build_loss(KD_GROUP)):
        z = zs.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(fn(z, zt, b)[0], z)[0])
    z = zs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(s(56, z, zt, b)[0], z)
    torch.testing.assert_close(g, 0.4 * grads[0] + 0.6 * grads[1], rtol=1e-12, atol=1e-14)


def test_three_phase_parts_keep_phases_apart(batch):
    zs, zt, b = batch
    s = schedule_of(phases({"loss": "ce", "until": 20, "window": 10},
                           {"loss": "kd", "until": 0.7, "window": 20}, {"loss": "ce"}))
    _, parts, _ = s(75, zs, zt, b)
    assert set(parts) == {"1_kd/label", "1_kd/soft", "2_ce/ce"}


# --- switch_steps errors ------------------------------------------------------------------------


def _spec(until, window=0, where="schedule.at"):
    return PhaseSpec(dict(CE_DEFAULTS), until, window, where)


def _two(until, window=0):
    return [_spec(until, window), PhaseSpec(dict(KD_DEFAULTS), None, 0, "schedule.to")]


@pytest.mark.parametrize("at", [1.5, -0.1])
def test_fraction_outside_unit_interval(at):
    with pytest.raises(ConfigError) as err:
        schedule_of(late_switch(at=at))
    msg = str(err.value)
    assert f"schedule.at={at}" in msg
    assert "[0, 1]" in msg
    assert "[0, 100]" in msg  # also says what an int would mean


@pytest.mark.parametrize("at", [101, 150, -1])
def test_int_step_outside_run(at):
    with pytest.raises(ConfigError) as err:
        schedule_of(late_switch(at=at))
    msg = str(err.value)
    assert f"schedule.at={at}" in msg
    assert "0..100" in msg


def test_int_step_at_the_bounds_is_allowed():
    assert switch_steps(_two(0), 100) == [(0, 0)]
    assert switch_steps(_two(100), 100) == [(100, 0)]


@pytest.mark.parametrize("window", [-1, 2.5, True, "10"])
def test_bad_window(window):
    with pytest.raises(ConfigError) as err:
        switch_steps(_two(0.5, window), 100)
    msg = str(err.value)
    assert "schedule.at" in msg
    assert f"window={window!r}" in msg
    assert ">= 0" in msg


def test_negative_window_from_config():
    with pytest.raises(ConfigError, match=r"schedule\.at: window=-5 must be a whole number of steps >= 0"):
        schedule_of(late_switch(window=-5))


@pytest.mark.parametrize("at", ["half", None, True])
def test_switch_point_of_wrong_type(at):
    with pytest.raises(ConfigError) as err:
        switch_steps(_two(at), 100)
    assert f"schedule.at={at!r}" in str(err.value)
    assert "[0, 1]" in str(err.value)


@pytest.mark.parametrize("schedule,window_text", [
    (late_switch(at=0.95, window=10), "[95, 105]"),
    (late_switch(at=95, window=6), "[95, 101]"),
    (late_switch(at=0.02, window=10, window_align="center"), "[-3, 7]"),
    (late_switch(at=0.98, window=6, window_align="center"), "[95, 101]"),
])
def test_window_leaving_the_run(schedule, window_text):
    with pytest.raises(ConfigError) as err:
        schedule_of(schedule)
    msg = str(err.value)
    assert msg.startswith("schedule.at:")
    assert window_text in msg
    assert "0..100" in msg


def test_window_ending_exactly_at_the_end_is_allowed():
    assert schedule_of(late_switch(at=0.9, window=10)).switches == [(90, 10)]


def _overlapping():
    return phases({"loss": "ce", "until": 0.25, "window": 30}, {"loss": "kd", "until": 0.5, "window": 0},
                  {"loss": "ce"})


def test_second_switch_before_first_window_ends():
    with pytest.raises(ConfigError) as err:
        schedule_of(_overlapping())
    msg = str(err.value)
    assert msg.startswith("schedule.phases[1].until:")
    assert "step 50" in msg


def test_second_switch_message_names_the_allowed_range():
    with pytest.raises(ConfigError) as err:
        schedule_of(_overlapping())
    assert "55" in str(err.value)


def test_switches_out_of_order():
    with pytest.raises(ConfigError, match=r"schedule\.phases\[1\]\.until"):
        schedule_of(phases({"loss": "ce", "until": 60}, {"loss": "kd", "until": 40}, {"loss": "ce"}))


def test_unknown_window_align():
    with pytest.raises(ConfigError) as err:
        schedule_of(late_switch(window_align="middle"))
    msg = str(err.value)
    assert "schedule.window_align='middle'" in msg
    assert "start, center" in msg


def test_a_switch_at_the_end_of_training_keeps_the_first_loss_whatever_the_window():
    specs = specs_of(late_switch(at=1.0, window=10))
    assert switch_steps(specs, 100) == [(100, 0)]
    with pytest.raises(ConfigError, match="leaves the training run"):
        switch_steps(specs_of(late_switch(at=0.95, window=10)), 100)


def test_loss_options_set_a_losss_own_options_in_a_sweep_over_losses_that_differ(tmp_path):
    from support import compose_config

    from kdrun.config.validate import validate_config

    for loss in ("ce", "kd", "kl"):  # kdrun -m loss=ce,kd,kl +loss_options.kd.alpha=0.5
        checked = validate_config(compose_config(tmp_path, [f"loss={loss}", "+loss_options.kd.alpha=0.5"]))
        (built,) = checked.losses
        assert built.name == ("ce" if loss == "ce" else "kd")
        if built.name == "kd":  # kd and its preset kl alike
            assert built.alpha == 0.5
    late = validate_config(compose_config(tmp_path, ["schedule=late_switch", "+loss_options.kd.temperature=2"]))
    assert [loss.name for loss in late.losses] == ["ce", "kd"] and late.losses[1].temperature == 2


@pytest.mark.parametrize("override, fragment", [
    ("+loss_options.kdd.alpha=1", "loss_options.kdd names no loss; allowed: ce, "),
    ("+loss_options.kd.alhpa=1", "loss 'kd' has no option alhpa"),
    ("+loss_options.kd.alpha=2", "kd.alpha=2 is outside [0, 1]"),
    ("+loss_options.kd=3", "loss_options.kd=3 is not a mapping"),
])
def test_bad_loss_options_are_refused_even_for_losses_the_run_does_not_use(tmp_path, override, fragment):
    from support import compose_config

    from kdrun.config.validate import validate_config

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        validate_config(compose_config(tmp_path, ["loss=ce", override]))
