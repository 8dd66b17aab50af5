"""The shape most objectives share: (1 - alpha) * CE(y, p_s) + alpha * (a teacher term).

alpha is the teacher's weight (paper 003's convention); at alpha = 1 the labels are not read,
so such losses also train students whose labels are withheld (paper 004's distill split).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdrun.config.checks import check_flag, check_number, check_unit_interval
import kdrun.losses.functional as F


@dataclass
class LabelMixture:
    alpha: float

    def __post_init__(self):
        check_unit_interval(self.alpha, f"{self.name}.alpha", "the teacher's weight in the mixture")

    @property
    def needs_labels(self) -> bool:
        return self.alpha < 1

    def mixed(self, student_logits, batch, term, part: str):
        """(loss, logged parts) of the mixture with `term` logged as `part` (F.label_mixture's formula)."""
        loss, label = F.label_mixture(student_logits, batch[1], term, self.alpha)
        return loss, ({part: term} if label is None else {"label": label, part: term})


@dataclass
class TemperedMixture(LabelMixture):
    """A mixture whose teacher term compares distributions at temperature T, optionally times T^2."""

    temperature: float
    t_squared: bool

    def __post_init__(self):
        super().__post_init__()
        check_number(self.temperature, f"{self.name}.temperature", low=0, low_inclusive=False)
        check_flag(self.t_squared, f"{self.name}.t_squared")

    def scaled(self, term):
        return F.temperature_scaled(term, self.temperature, self.t_squared)
