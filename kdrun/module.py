"""The LightningModule: a student trained by a loss schedule, with an optional frozen teacher.

Training a teacher is the same module with the label loss and no teacher.
"""

from __future__ import annotations

import hashlib

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from kdrun.optim import StepPlan, build_lr_scheduler, build_optimizer
from kdrun.schedule import LossSchedule


def state_checksum(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers (equal digests = identical weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, teacher: nn.Module | None, schedule: LossSchedule,
                 optimizer_cfg, num_classes: int, stage: str, input_shape=None, lr_schedule=None,
                 lr_plan: StepPlan | None = None):
        super().__init__()
        self.student, self.schedule, self.optimizer_cfg, self.stage = student, schedule, optimizer_cfg, stage
        self.lr_schedule, self.lr_plan = lr_schedule, lr_plan
        self.teacher = teacher
        if teacher is not None:
            # Frozen: outside the optimiser and gradient sync, and always in eval mode.
            teacher.requires_grad_(False)
            teacher.eval()
        # Feature-matching losses hook the models and own learned projections; registering
        # them here puts the projections on the module's device and in the student's optimiser.
        # Their init follows the student's init (same student weights -> same projections).
        self.feature_matchers = nn.ModuleList(
            loss.attach(student, teacher, input_shape, projection_seed=int(state_checksum(student)[:8], 16))
            for loss in schedule.losses if hasattr(loss, "attach")
        )
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_nll = MeanMetric()
        self.val_agreement = MeanMetric()
        self.batch_order = hashlib.sha256()
        self.init_checksum: str | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never change
        return self

    def forward(self, x):
        return self.student(x)

    def on_fit_start(self):
        self.init_checksum = state_checksum(self.student)

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self.batch_order.update(index.detach().cpu().numpy().tobytes())
        step = self.global_step
        logits = self.student(x)
        teacher_logits = None
        if self.teacher is not None and self.schedule.teacher_needed_at(step):
            with torch.no_grad():
                teacher_logits = self.teacher(x)
        loss, parts, weights = self.schedule(step, logits, teacher_logits, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{self.stage} loss is {loss.item()} at step {step} (epoch {self.current_epoch}); "
                f"parts: {({k: float(v) for k, v in parts.items()})}. Lower the learning rate or check the inputs."
            )
        batch_size = len(y)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        if self.lr_plan is not None:
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        if len(weights) > 1:
            for name, weight in weights.items():
                self.log(f"schedule/{name}", weight, batch_size=batch_size)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self.student(x)
        self.val_acc(logits, y)
        self.val_nll(F.cross_entropy(logits, y, reduction="none"))
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/nll", self.val_nll)
        if self.teacher is not None:
            self.val_agreement((logits.argmax(-1) == self.teacher(x).argmax(-1)).float())
            self.log("val/agreement", self.val_agreement)

    def teardown(self, stage: str):
        for matcher in self.feature_matchers:
            matcher.remove_hooks()  # evaluation after training needs no captured features

    def configure_optimizers(self):
        # Feature projections train with the student; frozen control targets do not.
        projections = [p for p in self.feature_matchers.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.optimizer_cfg, [*self.student.parameters(), *projections], where=self.stage)
        if self.lr_plan is None:
            return optimizer
        # stepped after every optimisation step, so epoch and step budgets share one schedule
        scheduler = build_lr_scheduler(optimizer, self.lr_schedule, self.lr_plan)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
