"""Training objectives: pure formulas in `functional`, config-selectable wrappers in one file per family.

`build_loss(cfg)` (kdrun.losses.registry) builds a wrapper from its loss config; every wrapper is
one of the kinds in kdrun.losses.interface and checks its options when built. The families
register themselves when imported here.
"""

from kdrun.losses import (baselines, controls, distillation, divergences, features, label, ptloss,  # noqa: F401
                          retrieval)
from kdrun.losses.interface import DistillationLoss, FeatureLoss, LabelLoss, Loss
from kdrun.losses.registry import LOSSES, build_loss, register_loss

__all__ = ["LOSSES", "DistillationLoss", "FeatureLoss", "LabelLoss", "Loss", "build_loss", "register_loss"]
