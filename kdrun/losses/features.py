"""Feature-map matching (FitNets) as a training loss: CE plus weighted hint terms on named layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.config.checks import check_choice, check_number, check_whole_number
from kdrun.errors import ConfigError
import kdrun.losses.functional as F
from kdrun.losses.feature_taps import FeatureMatcher
from kdrun.losses.interface import FeatureLoss
from kdrun.losses.registry import register_loss

CONTROLS = ("none", "random_teacher")


def layer_pairs(layers) -> list[tuple[str, str]]:
    """`layers` entries are {student: NAME, teacher: NAME}, or one NAME for the same module in both."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ConfigError(f"feature_matching.layers={layers!r} must be a non-empty list of "
                          f"{{student: MODULE, teacher: MODULE}} (or module names)")
    pairs = []
    for i, entry in enumerate(layers):
        if isinstance(entry, str):
            pairs.append((entry, entry))
        elif isinstance(entry, dict) and set(entry) == {"student", "teacher"} \
                and all(isinstance(v, str) for v in entry.values()):
            pairs.append((entry["student"], entry["teacher"]))
        else:
            raise ConfigError(f"feature_matching.layers[{i}]={entry!r} must be {{student: MODULE, teacher: MODULE}} "
                              f"or a module name")
    return pairs


@register_loss("feature_matching")
@dataclass
class FeatureMatching(FeatureLoss):
    """CE(y, p_s) + weight * sum over pairs of MSE(proj(h_s), h_t).

    h_s, h_t are the outputs of the named student and target modules; the target is the
    teacher (`control: none`) or a frozen random network of the teacher's architecture
    (`control: random_teacher`, seeded by `control_seed`). The hint term is part of the
    training loss from the first step, not FitNets' separate hint stage."""

    weight: float
    layers: list
    control: str
    control_seed: int
    needs_labels: ClassVar[bool] = True

    def __post_init__(self):
        check_number(self.weight, "feature_matching.weight", low=0, meaning="of the hint terms")
        check_choice(self.control, "feature_matching.control", CONTROLS)
        check_whole_number(self.control_seed, "feature_matching.control_seed",
                           meaning="the random target network of control=random_teacher")
        self.pairs = layer_pairs(self.layers)
        self.matcher: FeatureMatcher | None = None

    @property
    def needs_teacher(self) -> bool:
        return self.control == "none"  # the control's target network is run by the matcher

    def attach(self, student, teacher, input_shape, projection_seed: int) -> FeatureMatcher:
        """Hook the models; the caller must register the returned module so its projections train."""
        if teacher is None:
            raise ConfigError("loss feature_matching needs a teacher (also for control=random_teacher: "
                              "its architecture)")
        seed = self.control_seed if self.control == "random_teacher" else None
        self.matcher = FeatureMatcher(self.pairs, student, teacher, input_shape, projection_seed, seed)
        return self.matcher

    def __call__(self, student_logits, teacher_logits, batch):
        if self.matcher is None:
            raise RuntimeError("feature_matching was called before attach(student, teacher, ...)")
        hints = [F.feature_matching_loss(s, t) for s, t in self.matcher.matched_features(batch[0])]
        label = F.softmax_cross_entropy(student_logits, batch[1])
        hint = sum(hints)
        return F.label_plus_hints(label, hints, self.weight), {"label": label, "feature": hint}
