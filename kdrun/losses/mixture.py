"""The shape most objectives share: (1 - alpha) * CE(y, p_s) + alpha * (a teacher term).

alpha is the teacher's weight (paper 003's convention); at alpha = 1 the labels are not read,
so such losses also train students whose labels are withheld (paper 004's distill split).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdrun.losses import check_alpha, check_flag, check_temperature
from kdrun.losses import functional as F


@dataclass
class LabelMixture:
    alpha: float

    def __post_init__(self):
        check_alpha(self.alpha, self.name)

    @property
    def needs_labels(self) -> bool:
        return self.alpha < 1

    def mixed(self, student_logits, batch, term, part: str):
        """(loss, logged parts) of the mixture with `term` logged as `part`."""
        if self.alpha == 1:
            return term, {part: term}
        label = F.softmax_cross_entropy(student_logits, batch[1])
        return F.mix(label, term, self.alpha), {"label": label, part: term}


@dataclass
class TemperedMixture(LabelMixture):
    """A mixture whose teacher term compares distributions at temperature T, optionally times T^2."""

    temperature: float
    t_squared: bool

    def __post_init__(self):
        super().__post_init__()
        check_temperature(self.temperature, self.name)
        check_flag(self.t_squared, "t_squared", self.name)

    def scaled(self, term):
        """The T^2 factor keeps the term's gradient scale independent of T (Hinton et al.)."""
        return term * self.temperature**2 if self.t_squared else term
