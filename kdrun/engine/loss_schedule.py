"""Loss schedules: which objective is active at each training step.

Every schedule is a list of phases. Each phase but the last ends at a switch point (`until`:
a float in [0, 1] is a fraction of the training steps, an int is a step), and the next phase
fades in linearly over `window` steps: during the window the loss is
(1 - s) * L_previous + s * L_next with s rising from 0 to 1 (paper 000's "gradual loss
switch"; the paper gives neither the ramp shape nor where the window sits, so `window_align`
chooses: `start` begins the blend at the switch point, `center` centres it there).

`constant` is one phase (the `loss` group); `late_switch` is two (`from` until `at`, then
`to`); `phases` is any list. A phase's loss is a name (taking the `loss` group's settings
when that group selects the same loss, else the defaults in configs/loss/NAME.yaml) or a
full mapping such as {name: kd, alpha: 1.0, temperature: 4.0}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from kdrun.config.tree import group_options, load_option
from kdrun.config.checks import check_choice, is_finite_number, is_whole_number
from kdrun.errors import ConfigError
from kdrun.losses import build_loss


WINDOW_ALIGNS = ("start", "center")


@dataclass
class PhaseSpec:
    """A phase as configured: its loss config, where it ends, and its blend window into the next."""

    loss: dict
    until: float | int | None
    window: int
    where: str  # the config key, for error messages


def phase_specs(schedule_cfg, loss_cfg, loss_options=None) -> list[PhaseSpec]:
    """Read the `schedule` group into phases (no training state needed: used for validation).

    `loss_options` ({loss name: {option: value}}, the config's `loss_options`) are set on every phase
    whose loss has that name, so a sweep over losses whose options differ sets each loss's own:
    `kdrun -m loss=ce,kd +loss_options.kd.alpha=1.0`."""
    specs = _phase_specs(schedule_cfg, loss_cfg)
    options = dict(loss_options or {})
    for spec in specs:
        spec.loss.update(dict(options.get(spec.loss.get("name"), None) or {}))
    return specs


def _phase_specs(schedule_cfg, loss_cfg) -> list[PhaseSpec]:
    name = schedule_cfg.get("name")
    if name == "constant":
        return [PhaseSpec(_loss_config(loss_cfg.name, loss_cfg, "loss"), None, 0, "loss")]
    if name == "late_switch":
        return [
            PhaseSpec(_loss_config(schedule_cfg["from"], loss_cfg, "schedule.from"), schedule_cfg.at,
                      schedule_cfg.get("window", 0), "schedule.at"),
            PhaseSpec(_loss_config(schedule_cfg.to, loss_cfg, "schedule.to"), None, 0, "schedule.to"),
        ]
    if name == "phases":
        phases = schedule_cfg.get("phases") or []
        if not phases:
            raise ConfigError("schedule.phases is empty; give at least one {loss: NAME}")
        specs = []
        for i, phase in enumerate(phases):
            where = f"schedule.phases[{i}]"
            if "loss" not in phase:
                raise ConfigError(f"{where} has no `loss`; each phase is {{loss: NAME, until: AT, window: STEPS}}")
            last = i == len(phases) - 1
            until = phase.get("until")
            if not last and until is None:
                raise ConfigError(f"{where}.until is missing; every phase but the last needs a switch point")
            specs.append(PhaseSpec(_loss_config(phase.loss, loss_cfg, f"{where}.loss"), None if last else until,
                                   phase.get("window", 0), f"{where}.until"))
        return specs
    raise ConfigError(f"schedule.name={name!r} is unknown; allowed: constant, late_switch, phases")


def _loss_config(spec: Any, loss_cfg, where: str) -> dict:
    if isinstance(spec, (Mapping, DictConfig)):
        return dict(OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec)
    if spec == loss_cfg.name:
        return dict(OmegaConf.to_container(loss_cfg, resolve=True))
    defaults = load_option("loss", str(spec))
    if defaults is None:
        raise ConfigError(f"{where}={spec!r} is not a known loss; allowed: {', '.join(group_options('loss'))}")
    return dict(OmegaConf.to_container(defaults, resolve=True))


def switch_steps(specs: list[PhaseSpec], total_steps: int, window_align: str = "start") -> list[tuple[int, int]]:
    """(blend start step, window) of each switch, checked against the length of training."""
    check_choice(window_align, "schedule.window_align", WINDOW_ALIGNS)
    switches: list[tuple[int, int]] = []
    for spec in specs[:-1]:
        at, window = spec.until, spec.window
        if not is_whole_number(window) or window < 0:
            raise ConfigError(f"{spec.where}: window={window!r} must be a whole number of steps >= 0")
        if not is_finite_number(at):
            raise ConfigError(f"{spec.where}={at!r} must be a fraction in [0, 1] (float) or a step (int)")
        if isinstance(at, float):
            if not 0.0 <= at <= 1.0:
                raise ConfigError(
                    f"{spec.where}={at} is outside the training run; a float is a fraction in [0, 1] "
                    f"(an int is a step in [0, {total_steps}])"
                )
            step = round(at * total_steps)
        else:
            if not 0 <= at <= total_steps:
                raise ConfigError(
                    f"{spec.where}={at} is outside the training run: steps 0..{total_steps} "
                    f"(or give a fraction in [0, 1] as a float)"
                )
            step = at
        if step >= total_steps:
            window = 0  # a switch at the end never happens: `at=1.0` keeps the first loss throughout
        start = step - window // 2 if window_align == "center" else step
        if start < 0 or start + window > total_steps:
            raise ConfigError(
                f"{spec.where}: the blend window [{start}, {start + window}] leaves the training run (steps 0..{total_steps})"
            )
        if switches and start < sum(switches[-1]):
            raise ConfigError(
                f"{spec.where}: switch at step {start} comes before the previous switch has finished; "
                f"allowed: step >= {sum(switches[-1])}"
            )
        switches.append((start, window))
    return switches


class LossSchedule:
    """Weights the phases' losses by training step and returns their blend."""

    def __init__(self, specs: list[PhaseSpec], total_steps: int, window_align: str = "start",
                 losses: list | None = None):
        """`losses`: the phases' losses when already built (by the run's validation), else built here."""
        self.switches = switch_steps(specs, total_steps, window_align)
        self.losses = losses if losses is not None else [build_loss(spec.loss, where=spec.where) for spec in specs]
        self.phase_names = [f"{i}_{loss.name}" for i, loss in enumerate(self.losses)] if len(specs) > 1 \
            else [self.losses[0].name]
        self.needs_teacher = any(loss.needs_teacher for loss in self.losses)

    def weights(self, step: int) -> list[float]:
        """Phase i has weight s_{i-1}(t) - s_i(t), where s_k ramps 0 -> 1 across switch k."""
        ramps = [1.0] + [_ramp(step, start, window) for start, window in self.switches] + [0.0]
        return [ramps[i] - ramps[i + 1] for i in range(len(self.losses))]

    def pure_phase(self, step: int) -> int | None:
        """The phase that alone is active at `step`, or None inside a blend window."""
        for index, weight in enumerate(self.weights(step)):
            if weight == 1.0:
                return index
        return None

    def teacher_needed_at(self, step: int) -> bool:
        return any(w > 0 and loss.needs_teacher for w, loss in zip(self.weights(step), self.losses))

    def __call__(self, step: int, student_logits, teacher_logits, batch):
        """(blended loss, parts to log, weights) at `step`; only losses with weight > 0 are computed."""
        weights = self.weights(step)
        total, parts = None, {}
        for name, loss_fn, weight in zip(self.phase_names, self.losses, weights):
            if weight <= 0:
                continue
            loss, loss_parts = loss_fn(student_logits, teacher_logits, batch)
            total = weight * loss if total is None else total + weight * loss
            parts.update({f"{name}/{part}": value for part, value in loss_parts.items()})
        return total, parts, dict(zip(self.phase_names, weights))


def _ramp(step: int, start: int, window: int) -> float:
    if window == 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / window))


def build_schedule(schedule_cfg, loss_cfg, total_steps: int, loss_options=None) -> LossSchedule:
    return LossSchedule(phase_specs(schedule_cfg, loss_cfg, loss_options), total_steps,
                        schedule_cfg.get("window_align", "start"))


def check_loss_options(loss_options) -> None:
    """`loss_options`: a block per registered loss name whose options are that loss's (checked by building
    the loss from its configs/loss/NAME.yaml defaults with them), also for losses this run does not use."""
    from kdrun.config.checks import check_mapping
    from kdrun.losses import LOSSES

    blocks = check_mapping(loss_options, "loss_options", allow_none=True,
                           meaning="{loss name: {option: value}}, e.g. +loss_options.kd.alpha=1.0") or {}
    for name, options in blocks.items():
        if name not in LOSSES:
            raise ConfigError(f"loss_options.{name} names no loss; allowed: {', '.join(LOSSES.names())}")
        check_mapping(options, f"loss_options.{name}", meaning="that loss's options")
        defaults = load_option("loss", name)
        config = {**OmegaConf.to_container(defaults, resolve=True), **dict(options)} if defaults is not None \
            else {"name": name, **dict(options)}
        build_loss(config, where=f"loss_options.{name}")
