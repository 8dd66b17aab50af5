"""What the training engine may rely on of a loss: three kinds, one calling convention.

Every loss is called as `loss(student_logits, teacher_logits, batch) -> (loss, {part: tensor})`,
where `batch` is (x, y, sample index) and `teacher_logits` is None when the loss does not need
the teacher (`needs_teacher`), and says whether it reads the labels (`needs_labels`: runs whose
student has no labels, paper 004's distill split, refuse losses that do). Both may depend on
the loss's options (properties) or be fixed by its kind (class attributes). `name` is set when
the loss is registered (kdrun.losses.registry).

- `LabelLoss`: reads only the labels (CE, Tf-KD, the RCD control); never the teacher.
- `DistillationLoss`: reads the teacher's logits (KD and its variants, PTLoss, the baselines).
- `FeatureLoss`: also reads intermediate features of both networks; before training it is
  attached to the student and teacher (`attach`, which hooks the modules named in `pairs` and
  returns the learned projections for the student's optimiser). Its teacher must run online:
  cached teacher outputs hold logits only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor, nn


class Loss(ABC):
    name: ClassVar[str]
    needs_teacher: bool
    needs_labels: bool

    @abstractmethod
    def __call__(self, student_logits: Tensor, teacher_logits: Tensor | None, batch) -> tuple[Tensor, dict]:
        """(the loss to minimise, {part name: tensor} to log)."""


class LabelLoss(Loss):
    needs_teacher: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True


class DistillationLoss(Loss):
    needs_teacher: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False


class FeatureLoss(Loss):
    pairs: list[tuple[str, str]]  # (student module, teacher module) names, e.g. ("features.10", "features.10")

    @abstractmethod
    def attach(self, student: nn.Module, teacher: nn.Module | None, input_shape, projection_seed: int) -> nn.Module:
        """Hook both networks; return the module (projections) the caller registers so they train."""
