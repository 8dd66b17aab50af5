"""The LightningModule: a student trained by a loss schedule, with an optional frozen teacher.

Training a teacher is the same module with the label loss and no teacher.
"""

from __future__ import annotations

import hashlib

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from kdrun.engine.divergence import DivergenceGuard, DivergenceSettings, overflowed
from kdrun.errors import TrainingDiverged
from kdrun.losses.interface import FeatureLoss
from kdrun.losses.positions import per_position
from kdrun.engine.teacher_forward import teacher_forward
from kdrun.engine.teacher_tables import TeacherTables
from kdrun.engine.recipes import StepPlan, build_lr_scheduler, build_optimizer
from kdrun.engine.resume import RunningDigest, restore_rng_states, rng_states
from kdrun.engine.loss_schedule import LossSchedule
from kdrun.engine.step_metrics import StepMetricBuffer


def state_checksum(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers (equal digests = identical weights)."""
    return tensors_checksum(model.state_dict())


def tensors_checksum(state: dict[str, torch.Tensor]) -> str:
    """state_checksum of a state dict (a packed member's, kdrun.engine.packed_students.member_state_dict)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, teacher: nn.Module | None, schedule: LossSchedule,
                 optimizer_cfg, num_classes: int, stage: str, input_shape=None, lr_schedule=None,
                 lr_plan: StepPlan | None = None, teacher_outputs: dict[str, torch.Tensor] | None = None,
                 sync_every: int = 50, divergence: DivergenceSettings | None = None, owner: dict | None = None,
                 teacher_precision: str = "float32", view_cache=None, view_stream=None):
        super().__init__()
        self.student, self.schedule, self.optimizer_cfg, self.stage = student, schedule, optimizer_cfg, stage
        self.lr_schedule, self.lr_plan = lr_schedule, lr_plan
        self.teacher, self.teacher_precision = teacher, teacher_precision  # kdrun.engine.teacher_forward
        if teacher is not None:
            # Frozen: outside the optimiser and gradient sync, and always in eval mode.
            teacher.requires_grad_(False)
            teacher.eval()
        # Cached teacher logits by dataset index (kdrun.teachers.cached_outputs), on the module's device.
        self.teacher_tables = TeacherTables(teacher_outputs, num_classes)
        self.num_classes = num_classes
        # Under augmentation with a finite view set: the teacher's logits per (sample, view), shared by the
        # students of the teacher, and the stream that names each training sample's view in an epoch (the one
        # its loader draws from: kdrun.data.views). Plain attributes: the cache lives on disk, not in checkpoints.
        self.view_cache, self.view_stream = view_cache, view_stream
        # The hot path never waits for the device: a diverging loss is recorded on the device (first
        # bad step, kdrun.engine.divergence) and the step metrics are buffered there (kdrun.engine.step_metrics). Both
        # reach the host at sync points, every `sync_every` steps and at epoch ends: a Python `if` on
        # the loss or a per-step `self.log` would synchronise every step.
        self.sync_every = max(1, int(sync_every))
        self.divergence = DivergenceGuard(stage, divergence or DivergenceSettings(), self.sync_every)
        # What this stage's checkpoints belong to (kdrun.engine.resume): a resumed run must match it.
        self.owner = owner
        self.step_metrics = StepMetricBuffer()
        self.latest_loss: torch.Tensor | None = None  # for progress displays, read at their own pace
        self._epoch_indices: list[torch.Tensor] = []
        # Feature-matching losses hook the models and own learned projections; registering
        # them here puts the projections on the module's device and in the student's optimiser.
        # Their init follows the student's init (same student weights -> same projections).
        self.feature_matchers = nn.ModuleList(
            loss.attach(student, teacher, input_shape, projection_seed=int(state_checksum(student)[:8], 16))
            for loss in schedule.losses if isinstance(loss, FeatureLoss)
        )
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # nan_strategy="disable": torchmetrics' NaN check is a host sync per update; a non-finite
        # value instead propagates into the mean (and the training loss is checked at sync points).
        self.val_nll = MeanMetric(nan_strategy="disable")
        self.val_agreement = MeanMetric(nan_strategy="disable")
        self.train_loss_mean = MeanMetric(nan_strategy="disable")  # the epoch's mean over every rank's samples
        self.batch_order = RunningDigest()  # continued from the checkpoint on resume
        self.init_checksum: str | None = None
        self.last_validated_step = -1  # the weights the latest val/* metrics belong to

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never change
        return self

    def forward(self, x):
        return self.student(x)

    def on_fit_start(self):
        if self.init_checksum is None:  # a resumed fit keeps the checksum of the weights it started from
            self.init_checksum = state_checksum(self.student)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # saved at epoch ends (kdrun.engine.resume): what a resumed run needs to continue bit for bit
        checkpoint["kdrun"] = {"rng": rng_states(), "batch_order": self.batch_order.state,
                               "init_checksum": self.init_checksum, "belongs_to": self.owner}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("kdrun")
        if saved:
            restore_rng_states(saved["rng"])  # dropout and augmentation continue where they stopped
            self.batch_order = RunningDigest(saved["batch_order"])
            self.init_checksum = saved["init_checksum"]

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor, split: str = "train") -> torch.Tensor:
        """The frozen teacher's logits on a batch: looked up by dataset index when cached, else computed."""
        if split in self.teacher_tables:
            return self.teacher_tables.lookup(split, index)
        if split == "train" and self.view_cache is not None:
            host_index = index.cpu()  # the stream's table and the cache are read on the host: one copy per step
            views = self.view_stream.views(self.current_epoch, host_index)
            return self.view_cache.teacher_logits(x, host_index, views, self._online_teacher, device=index.device)
        return self._online_teacher(x)

    def _online_teacher(self, x) -> torch.Tensor:
        if len(self.feature_matchers):  # feature losses save hooked teacher features for backward
            with torch.no_grad():
                return teacher_forward(self.teacher, x, self.teacher_precision)
        with torch.inference_mode():
            logits = teacher_forward(self.teacher, x, self.teacher_precision)
        return logits.clone()  # a normal tensor: losses may save it for backward

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self._epoch_indices.append(index.detach())  # hashed at epoch end: no device->host copy per step
        step = self.global_step
        logits = self.student(x)
        teacher_logits = None
        if self.teacher is not None and self.schedule.teacher_needed_at(step):
            teacher_logits = self.teacher_logits(x, index)
        # language models: every window position is one prediction (kdrun.losses.positions)
        loss, parts, weights = self.schedule(step, *per_position(logits, teacher_logits, batch))
        self.divergence.observe(step, loss, self.schedule.pure_phase(step))
        self.latest_loss = loss.detach()
        self.train_loss_mean.update(self.latest_loss, len(y))  # reduced across ranks at epoch end
        if self.loggers:
            self._record_step(step, loss, parts, weights)
        if (step + 1) % self.sync_every == 0:
            self.sync_point()
        return loss

    def _record_step(self, step: int, loss: torch.Tensor, parts: dict, weights: dict[str, float]) -> None:
        """The step's loss, its parts, learning rate and (when several phases) schedule weights."""
        tensors = {"train/loss": loss}
        numbers = {}
        for name, value in parts.items():
            (tensors if isinstance(value, torch.Tensor) else numbers)[f"train/{name}"] = value
        if self.lr_plan is not None:  # the rate this step used (the scheduler steps after it)
            numbers["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        if len(weights) > 1:
            numbers.update({f"schedule/{name}": weight for name, weight in weights.items()})
        self.step_metrics.record(step, self.current_epoch, tensors, numbers)

    def local_epoch_loss(self) -> float | None:
        """This process's mean training loss so far in the epoch, read without a collective sync
        (for displays; the logged `train/loss_epoch` is reduced over every rank)."""
        weight = float(self.train_loss_mean.weight)
        return float(self.train_loss_mean.mean_value) / weight if weight > 0 else None

    def sync_point(self) -> None:
        """Where the host catches up with the device: buffered step metrics go to the loggers, then
        the divergence record is checked (the logs then show the bad step too)."""
        self.step_metrics.flush(self.loggers)
        self.divergence.check()

    def optimizer_step(self, *args, **kwargs):
        try:
            super().optimizer_step(*args, **kwargs)
        except RuntimeError as error:
            if not overflowed(error):
                raise
            raise TrainingDiverged(
                self.stage, self.global_step, "overflow", f"the optimiser's update overflowed ({error})",
                f"Lower {self.stage}.optimizer.lr (it is {self.optimizer_cfg.get('lr')})") from error

    def on_validation_start(self):
        self.step_metrics.flush(self.loggers)  # the epoch's step rows before its validation rows

    def on_train_epoch_end(self):
        # The epoch's row goes out with its steps, before the epoch checkpoint (Lightning would write a
        # `self.log` value after it), so a run killed after the checkpoint has it and a resumed run
        # does not repeat it.
        epoch_loss = self.train_loss_mean.compute()  # reduced across ranks
        self.train_loss_mean.reset()
        if self.loggers:
            self.step_metrics.record(max(self.global_step - 1, 0), self.current_epoch,
                                     {"train/loss_epoch": epoch_loss}, {})
        self.sync_point()
        self._hash_batch_order()

    def on_train_end(self):
        self.sync_point()
        self._hash_batch_order()  # a step budget may end training inside an epoch

    def _hash_batch_order(self) -> None:
        # one digest update per epoch (resumed runs continue the chain at the same epoch boundary)
        if self._epoch_indices:
            indices = self._epoch_indices
            if self.trainer.world_size > 1:
                indices = self._global_batches(indices)
            self.batch_order.update(torch.cat(indices).cpu().numpy().tobytes())
            self._epoch_indices = []

    def _global_batches(self, local_batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every rank's batches as the one-process run's batches: rank r holds positions r, r+W, ... of
        each global batch (kdrun.data.samplers), so the gathered (W, b) block read column by column
        is that batch in order, and the digest equals a one-process run's with the same global batch."""
        gathered = self.all_gather(torch.cat(local_batches))  # (W, samples of this rank's epoch)
        blocks = torch.split(gathered, [len(batch) for batch in local_batches], dim=1)
        return [block.t().reshape(-1) for block in blocks]

    def validation_step(self, batch, batch_idx):
        x, _, index = batch
        teacher_logits = self.teacher_logits(x, index, "val") if self.teacher is not None else None
        logits, teacher_logits, (_, y, _) = per_position(self.student(x), teacher_logits, batch)
        self.val_acc.update(logits, y)
        self.val_nll.update(F.cross_entropy(logits, y, reduction="none"))
        if teacher_logits is not None:
            self.val_agreement.update((logits.argmax(-1) == teacher_logits.argmax(-1)).float())

    def on_validation_epoch_end(self):
        self.last_validated_step = self.global_step
        # logged once per validation, not per batch: Lightning computes (and syncs) each metric once
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/nll", self.val_nll)
        if self.teacher is not None:
            self.log("val/agreement", self.val_agreement)

    def setup(self, stage: str):
        # Before Lightning wraps the module in DDP: DDP averages only the student's gradients and
        # broadcasts only its buffers. The frozen teacher and its cached logits are identical on every
        # rank and never change (inference tensors, which DDP's buffer broadcast cannot even take);
        # the divergence record is each rank's own.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, self.rank_local_names())

    def rank_local_names(self) -> list[str]:
        """Parameters and buffers that DDP leaves alone: the teacher's, the cached logits, the divergence record."""
        names = [name for name, _ in [*self.named_parameters(), *self.named_buffers()]]
        return [name for name in names if name.startswith(("teacher.", "teacher_", "divergence."))]

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
