"""Paper 004's PTLoss as a config-selectable loss (configs/loss/ptloss.yaml)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
import torch

from kdrun.errors import ConfigError
from kdrun.config.checks import check_number, check_whole_number
from kdrun.losses.interface import DistillationLoss
from kdrun.losses.registry import register_loss
import kdrun.losses.functional as F


@register_loss("ptloss")
@dataclass
class PerturbedLoss(DistillationLoss):
    """KL(p_t || p_s) + sum_c p_t,c sum_{m<=M} eps_{c,m} (1 - p_s,c)^m (paper 004, Eq. 7).

    The coefficients come from `epsilon` (M numbers shared by all classes, or a C x M nested
    list, one row per class) or from `epsilon_file`, the JSON written by `kdrun-ptloss-search`;
    with neither, every coefficient is 0 and the loss is plain KL. `order` is M; null takes it
    from the coefficients. Paper 004's student never sees labels, so this loss reads none.
    """

    order: int | None
    epsilon: list | None
    epsilon_file: str | None
    temperature: float

    def __post_init__(self):
        # self.coefficients (a plain attribute, not a config key): (M,) or (C, M) float tensor
        check_number(self.temperature, "ptloss.temperature", low=0, low_inclusive=False)
        order = check_whole_number(self.order, "ptloss.order", minimum=1, allow_none=True,
                           meaning="the perturbation order M; null: from the coefficients")
        if self.epsilon is not None and self.epsilon_file is not None:
            raise ConfigError(
                f"ptloss.epsilon={self.epsilon!r} and ptloss.epsilon_file={self.epsilon_file!r} are both set; "
                f"allowed: at most one of them"
            )
        if self.epsilon_file is not None:
            epsilon, where = _read_epsilon_file(self.epsilon_file), f"ptloss.epsilon_file={self.epsilon_file!r}"
        elif self.epsilon is not None:
            epsilon, where = self.epsilon, "ptloss.epsilon"
        else:
            self.coefficients = torch.zeros(order or 1, dtype=torch.float32)
            return
        self.coefficients = _coefficient_tensor(epsilon, where)
        file_order = self.coefficients.shape[-1]
        if order is not None and order != file_order:
            raise ConfigError(
                f"ptloss.order={order} but {where} holds {file_order} coefficient(s) per class; "
                f"allowed: order={file_order} or order=null"
            )

    def __call__(self, student_logits, teacher_logits, batch):
        eps = self.coefficients
        if eps.dim() == 2 and eps.shape[0] != student_logits.shape[-1]:
            raise ConfigError(
                f"ptloss: epsilon has {eps.shape[0]} rows (one per class) but the model has "
                f"{student_logits.shape[-1]} classes; allowed: {student_logits.shape[-1]} rows or a flat list of M numbers"
            )
        kl, perturbation = F.ptloss_terms(student_logits, teacher_logits, eps.to(student_logits.device),
                                          self.temperature)
        return kl + perturbation, {"kl": kl, "perturbation": perturbation}


def _read_epsilon_file(path: str):
    file = Path(str(path))
    if not file.is_file():
        raise ConfigError(f"ptloss.epsilon_file={path!r}: no such file; give the JSON written by kdrun-ptloss-search")
    try:
        content = json.loads(file.read_text())
        return content["epsilon"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(
            f"ptloss.epsilon_file={path!r} is not a coefficient file ({error}); "
            f"allowed: a JSON object with an \"epsilon\" list, as kdrun-ptloss-search writes"
        ) from None


def _coefficient_tensor(epsilon, where: str) -> torch.Tensor:
    """A flat list -> (M,) shared coefficients; a list of equal-length lists -> (C, M)."""
    allowed = "allowed: a list of M numbers, or a C x M nested list (one row of M numbers per class)"
    if not isinstance(epsilon, (list, tuple)) or not epsilon:
        raise ConfigError(f"{where}={epsilon!r} is not a non-empty list; {allowed}")
    rows = epsilon if all(isinstance(row, (list, tuple)) for row in epsilon) else None
    values = [v for row in rows for v in row] if rows is not None else list(epsilon)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ConfigError(f"{where}={epsilon!r} holds a value that is not a finite number; {allowed}")
    if rows is not None and (len({len(row) for row in rows}) != 1 or not rows[0]):
        raise ConfigError(f"{where}={epsilon!r} has rows of different or zero length; {allowed}")
    return torch.tensor(rows if rows is not None else values, dtype=torch.float32)
