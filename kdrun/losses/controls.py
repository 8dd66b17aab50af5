"""Control conditions of paper 003: what distillation is compared against.

- `rcd` (random control distillation): the `kd` objective with the teacher replaced by the
  class-uniform distribution 1/K, same alpha grid. At T = 1 its gradient is exactly that of
  cross-entropy with label smoothing alpha (paper 003 appendix B; a test checks it). Since a
  uniform target stays uniform at any T, a temperature softens only the student side.
- label smoothing is `loss=ce loss.label_smoothing=A`;
- SIDDO (same initialisation, different data order, cross-entropy) is not a loss but a run
  setting: `experiment=siddo_demo` (student architecture and initial weights of the teacher,
  `student.init=teacher`, and a data order that differs from the teacher's).
"""

from __future__ import annotations

from dataclasses import dataclass
import kdrun.losses.functional as F
from kdrun.losses.interface import LabelLoss
from kdrun.losses.mixture import TemperedMixture
from kdrun.losses.registry import register_loss


@register_loss("rcd")
@dataclass
class RandomControlDistillation(TemperedMixture, LabelLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(u || p_s^T) with u = 1/K: reads no teacher."""

    def __call__(self, student_logits, teacher_logits, batch):
        uniform = F.uniform_teacher_logits(student_logits)
        soft = F.kl_divergence_at_temperature(student_logits, uniform, self.temperature)
        return self.mixed(student_logits, batch, self.scaled(soft), "soft")
