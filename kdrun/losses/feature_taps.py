"""Plumbing for feature-map matching: forward hooks on named submodules and learned projections.

A `FeatureMatcher` taps the student's and the target network's named modules (e.g.
`features.10` of the cnn), and maps each student feature to its target's shape:

- 4-D maps (B, C, H, W): a 1x1 convolution C_s -> C_t when the channels differ (FitNets'
  convolutional regressor). When the spatial sizes differ, the *target* map is adaptive-
  average-pooled to the student's H x W: the target is fixed, so resizing it adds no
  parameters and leaves the student's gradient path untouched.
- any other rank (B, D) or (B, T, D): a Linear D_s -> D_t on the last axis; the middle axes
  must agree.
- identical shapes: no projection (the identity).

The projections are trained together with the student (DistillationModule gives them to the
student's optimiser) but are training scaffolding: student.pt holds only the student.

The target network is the frozen teacher, or for the control a frozen randomly initialised
copy of the teacher's architecture (see `random_copy`). Target features are captured
detached, under no_grad.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdrun.errors import ConfigError
from kdrun.losses.interface import FeatureLoss

NAMES_SHOWN = 30  # how many module names an error lists


def named_submodule(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        available = [n for n in modules if n]
        more = f" (first {NAMES_SHOWN} of {len(available)})" if len(available) > NAMES_SHOWN else ""
        raise ConfigError(f"loss.layers: the {role} has no module {name!r}; available{more}: "
                          f"{', '.join(available[:NAMES_SHOWN])}")
    return modules[name]


class FeatureTap:
    """Keeps the latest output of each named submodule of one model."""

    def __init__(self, model: nn.Module, names: list[str], role: str, detach: bool):
        self.outputs: dict[str, Tensor] = {}
        self.role = role
        self.handles = [named_submodule(model, name, role).register_forward_hook(self._keeper(name, detach))
                        for name in dict.fromkeys(names)]

    def _keeper(self, name: str, detach: bool):
        def keep(module, inputs, output):
            if isinstance(output, (tuple, list)):  # e.g. blocks returning (hidden, extras)
                output = output[0]
            # A clone: an in-place op after the module (ReLU(inplace=True)) would otherwise
            # overwrite the captured map, and the hint would see the wrong tensor.
            self.outputs[name] = output.detach().clone() if detach else output.clone()

        return keep

    def collect(self, names: list[str]) -> list[Tensor]:
        """The captured outputs of `names`, then forget them so a stale capture is never reused."""
        missing = [name for name in names if name not in self.outputs]
        if missing:
            raise RuntimeError(f"no {self.role} forward captured {', '.join(missing)} since the last loss call")
        captured = [self.outputs[name] for name in names]
        self.outputs.clear()
        return captured

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.outputs = [], {}


def projection_for(student_shape: tuple, target_shape: tuple, pair: str) -> nn.Module:
    if len(student_shape) != len(target_shape):
        raise ConfigError(f"loss.layers {pair}: the student feature has shape {list(student_shape[1:])}, the target "
                          f"{list(target_shape[1:])}; their ranks must agree")
    if len(student_shape) == 4:
        channels_in, channels_out = student_shape[1], target_shape[1]
        return nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, kernel_size=1)
    if student_shape[1:-1] != target_shape[1:-1]:
        raise ConfigError(f"loss.layers {pair}: the student feature has shape {list(student_shape[1:])}, the target "
                          f"{list(target_shape[1:])}; only the last axis may differ")
    features_in, features_out = student_shape[-1], target_shape[-1]
    return nn.Identity() if features_in == features_out else nn.Linear(features_in, features_out)


def match_spatial(target: Tensor, student: Tensor) -> Tensor:
    if target.dim() == 4 and target.shape[-2:] != student.shape[-2:]:
        return F.adaptive_avg_pool2d(target, student.shape[-2:])
    return target


def random_copy(model: nn.Module, seed: int) -> nn.Module:
    """The architecture of `model` with fresh weights drawn from `seed`, frozen and in eval mode.

    Every module's own `reset_parameters` redraws its weights (BatchNorm also resets its
    running statistics); parameters no such method covers get N(0, 0.02^2). The global RNG
    is left as it was, so the control does not shift the student's data order or dropout."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        module._forward_hooks.clear()  # deepcopy also copies hooks other matchers put on the teacher
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        redrawn: set[int] = set()
        with torch.no_grad():
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                    redrawn.update(id(p) for p in module.parameters(recurse=False))
            for parameter in fresh.parameters():
                if id(parameter) not in redrawn:
                    nn.init.normal_(parameter, std=0.02)
    return fresh.requires_grad_(False).eval()


class FeatureMatcher(nn.Module):
    """Hooks on student and target, plus one projection per (student layer, target layer) pair."""

    def __init__(self, pairs: list[tuple[str, str]], student: nn.Module, teacher: nn.Module,
                 input_shape, projection_seed: int, random_target_seed: int | None = None):
        super().__init__()
        self.pairs = pairs
        # Only the control's own network is a submodule: the real teacher belongs to the
        # LightningModule, and registering it twice would duplicate it in the state dict.
        self.random_teacher = None if random_target_seed is None else random_copy(teacher, random_target_seed)
        target = teacher if self.random_teacher is None else self.random_teacher
        self.student_tap = FeatureTap(student, [s for s, _ in pairs], "student", detach=False)
        self.target_tap = FeatureTap(target, [t for _, t in pairs], "teacher", detach=True)
        student_shapes, target_shapes = self._probe_shapes(student, target, input_shape)
        # Seeded and forked: the projections' init is reproducible and the global RNG
        # (student init already drawn, data order next) is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(projection_seed)
            self.projections = nn.ModuleDict({
                str(i): projection_for(s_shape, t_shape, f"{s} -> {t}")
                for i, ((s, t), s_shape, t_shape) in enumerate(zip(pairs, student_shapes, target_shapes))
            })

    def _probe_shapes(self, student: nn.Module, target: nn.Module, input_shape):
        """One dummy forward (eval mode, no_grad) to learn each tapped feature's shape."""
        if input_shape is None:
            raise ValueError("feature matching needs the input shape to size its projections")
        modes = [(module, module.training) for module in student.modules()]
        # token models (kdrun.models.gpt) read integer ids
        x = torch.zeros(2, *input_shape, dtype=getattr(student, "input_dtype", torch.float32),
                        device=next(student.parameters()).device)
        try:
            with torch.no_grad():
                student.eval()  # no BatchNorm statistics updated by the probe
                student(x)
                target(x)
            student_shapes = [tuple(f.shape) for f in self.student_tap.collect([s for s, _ in self.pairs])]
            target_shapes = [tuple(f.shape) for f in self.target_tap.collect([t for _, t in self.pairs])]
        finally:
            for module, training in modes:
                module.training = training
        return student_shapes, target_shapes

    def train(self, mode: bool = True):
        super().train(mode)
        if self.random_teacher is not None:
            self.random_teacher.eval()  # a fixed target, like the teacher
        return self

    def matched_features(self, inputs: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(projected student feature, target feature) per pair, from the student's last forward.

        The teacher's features come from the training loop's teacher forward; the control's
        random network is run here on `inputs`."""
        if self.random_teacher is not None:
            with torch.no_grad():
                self.random_teacher(inputs)
        students = self.student_tap.collect([s for s, _ in self.pairs])
        targets = self.target_tap.collect([t for _, t in self.pairs])
        matched = []
        for i, (student, target) in enumerate(zip(students, targets)):
            projected = self.projections[str(i)](student)
            matched.append((projected, match_spatial(target, projected)))
        return matched

    def remove_hooks(self) -> None:
        self.student_tap.remove()
        self.target_tap.remove()


def check_feature_layers(losses, student: nn.Module, teacher: nn.Module | None) -> None:
    """Every module a feature loss names exists in the student and the teacher (before training)."""
    for loss in losses:
        for student_layer, teacher_layer in loss.pairs if isinstance(loss, FeatureLoss) else ():
            named_submodule(student, student_layer, "student")
            if teacher is not None:
                named_submodule(teacher, teacher_layer, "teacher")
