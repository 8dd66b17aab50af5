"""The LightningModule of a pack: K students of one architecture (kdrun.engine.packed_students) trained at once,
each member under its own loss schedule, teacher outputs, learning rate, weight decay and divergence check.

A batch is the members' own batches stacked, (K, B, ...) with their sample indices (K, B) (kdrun.data.packed):
member k's loss is its schedule on its slice of the stacked outputs, exactly what its separate run computes,
and the pack's objective is the members' sum, whose gradient with respect to member k's parameters is member
k's own gradient. Each member's step metrics, epoch loss and validation metrics go to that member's own
logger, with the step numbers its separate run would log.

A member that diverges fails alone: at the next sync point its error is kept for its run directory and the
member is retired (its parameters, buffers and optimiser state zeroed and its learning rate set to 0, so its
slice stays finite and still); the others train on. Only when every member has failed does the fit stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from kdrun.engine.divergence import DivergenceGuard, DivergenceSettings
from kdrun.engine.loss_schedule import LossSchedule
from kdrun.engine.module import tensors_checksum
from kdrun.engine.packed_optimizer import StackedOptimizer
from kdrun.engine.packed_students import StackedModels, clip_grad_norm_per_member
from kdrun.engine.recipes import StepPlan, build_lr_scheduler
from kdrun.engine.resume import RunningDigest, restore_rng_states, rng_states
from kdrun.engine.step_metrics import StepMetricBuffer
from kdrun.engine.teacher_forward import teacher_forward
from kdrun.engine.teacher_tables import TeacherTables
from kdrun.errors import TrainingDiverged
from kdrun.losses.positions import per_position


@dataclass
class PackMember:
    """What one member brings to the pack besides its weights."""

    schedule: LossSchedule
    optimizer_cfg: object  # its student.optimizer block (lr and weight_decay are its own)
    tables: int | None  # which of the pack's teacher tables it reads (None: the shared teacher runs online)
    logger: object  # its Lightning logger (False for none), in its own run directory
    loss_key: str = ""  # equal for members whose loss schedules are configured alike (evaluated in one vmap)
    view_cache: object = None  # under augmentation: the teacher's outputs per (sample, view) (kdrun.teachers.view_cache)
    view_stream: object = None  # the views this member's loader draws (kdrun.data.views.ViewStream)


def stacked_parameter_groups(students: StackedModels, optimizer_cfgs: list) -> tuple[list[dict], list, list]:
    """The stacked parameters in the groups `kdrun.engine.recipes.parameter_groups` forms for one member
    (a stacked tensor has one more dimension than the member's), and the members' rates and decays."""
    rates = [float(cfg.lr) for cfg in optimizer_cfgs]
    decays = [float(cfg.get("weight_decay", 0.0) or 0.0) for cfg in optimizer_cfgs]
    params = [p for p in students.parameters() if p.requires_grad]
    if optimizer_cfgs[0].get("decay_norm_and_bias", True) or not any(decays):
        return [{"params": params}], rates, decays
    return ([{"params": [p for p in params if p.ndim > 2]},
             {"params": [p for p in params if p.ndim <= 2], "member_weight_decay": [0.0] * len(decays)}],
            rates, decays)


class MemberMeans(nn.Module):
    """A running mean per member, (K,) sums on the device (the epoch's loss, validation accuracy, NLL and
    agreement): torchmetrics' aggregators reduce everything they see to one number, and one metric object per
    member would cost K updates a step."""

    def __init__(self, count: int):
        super().__init__()
        self.register_buffer("total", torch.zeros(count), persistent=False)
        self.register_buffer("weight", torch.zeros(count), persistent=False)

    def update(self, values: torch.Tensor) -> None:
        """values: (K, n) samples of each member (or (K,) one each)."""
        values = values.detach().reshape(len(self.total), -1)
        self.total += values.sum(dim=1).to(self.total.dtype)
        self.weight += values.shape[1]

    def compute(self) -> torch.Tensor:
        return self.total / self.weight

    def reset(self) -> None:
        self.total.zero_()
        self.weight.zero_()


class PackedDistillationModule(L.LightningModule):
    def __init__(self, students: StackedModels, members: list[PackMember], tables: list[dict],
                 teacher: nn.Module | None, num_classes: int, lr_schedule=None, lr_plan: StepPlan | None = None,
                 divergence: DivergenceSettings | None = None, owner: dict | None = None,
                 teacher_precision: str = "float32", sync_every: int = 50):
        super().__init__()
        self.students, self.members, self.count = students, members, len(members)
        self.stage = "student"
        self.lr_schedule, self.lr_plan = lr_schedule, lr_plan
        self.teacher, self.teacher_precision = teacher, teacher_precision
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        # one module per distinct teacher table: members of one teacher share it (one copy on the device)
        self.teacher_tables = nn.ModuleList(TeacherTables(table, num_classes) for table in tables)
        self.num_classes = num_classes
        self.sync_every = max(1, int(sync_every))
        self.guard = DivergenceGuard("student", divergence or DivergenceSettings(), self.sync_every, len(members))
        # members whose schedules are alike evaluate them as one call vmapped over the members (one Python pass
        # instead of one per member); a schedule that vmap cannot run falls back to a call per member
        groups: dict[str, list[int]] = {}
        for k, member in enumerate(members):
            groups.setdefault(member.loss_key or f"member {k}", []).append(k)
        self.loss_groups = list(groups.values())
        self._unbatchable: set[int] = set()  # groups whose schedule failed under vmap
        self._row_indices: dict[tuple, torch.Tensor] = {}
        self.owner = owner
        self.step_metrics = StepMetricBuffer()  # every member's step values, split per member at flushes
        self.failures: dict[int, TrainingDiverged] = {}  # member -> why it stopped
        self._retiring: list[int] = []  # failed at a sync point inside a step: retired once its update is done
        self.latest_loss: torch.Tensor | None = None
        self._epoch_indices: list[torch.Tensor] = []
        count = len(members)
        self.val_acc, self.val_nll, self.val_agreement = MemberMeans(count), MemberMeans(count), MemberMeans(count)
        self.train_loss_mean = MemberMeans(count)
        self.batch_orders = [RunningDigest() for _ in members]
        self.init_checksums: list[str] | None = None  # at fit start, after the precision plugin's conversion
        self.last_validated_step = -1
        self.member_metrics: list[dict[str, float]] = [{} for _ in members]  # each member's latest val/*

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @property
    def active(self) -> list[int]:
        return [k for k in range(self.count) if k not in self.failures]

    def on_fit_start(self):
        if self.init_checksums is None:  # a resumed fit keeps the checksums of the weights it started from
            self.init_checksums = [tensors_checksum(self.students.member_state_dict(k)) for k in range(self.count)]

    # --- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["kdrun"] = {"rng": rng_states(), "batch_orders": [digest.state for digest in self.batch_orders],
                               "init_checksums": self.init_checksums, "belongs_to": self.owner,
                               "failures": {k: [error.stage, error.step, error.value, error.reason, error.advice]
                                            for k, error in self.failures.items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("kdrun")
        if saved:
            restore_rng_states(saved["rng"])
            self.batch_orders = [RunningDigest(state) for state in saved["batch_orders"]]
            self.init_checksums = saved["init_checksums"]
            self.failures = {int(k): TrainingDiverged(*error) for k, error in saved.get("failures", {}).items()}

    # --- teacher -------------------------------------------------------------------------------
    def _teacher_logits(self, x: torch.Tensor, index: torch.Tensor, members: list[int], split: str) -> dict:
        """{member: the teacher's logits on its batch} for `members`: looked up in its table, or the shared
        teacher once over the members' batches flattened into one (it is frozen and in eval mode)."""
        out, online = {}, []
        for k in members:
            member = self.members[k]
            table = member.tables
            if table is not None and split in self.teacher_tables[table]:
                out[k] = self.teacher_tables[table].lookup(split, index[k])
            elif split == "train" and member.view_cache is not None:
                host_index = index[k].cpu()  # the stream's table and the cache are read on the host
                views = member.view_stream.views(self.current_epoch, host_index)
                out[k] = member.view_cache.teacher_logits(x[k], host_index, views, self._online_teacher,
                                                          device=index.device)
            else:
                online.append(k)
        if online:
            logits = self._online_teacher(self._rows(x, online).flatten(0, 1))
            logits = logits.view(len(online), x.shape[1], *logits.shape[1:])
            out.update({k: logits[position] for position, k in enumerate(online)})
        return out

    def _rows(self, tensor: torch.Tensor, members: list[int]) -> torch.Tensor:
        """The members' slices of a stacked tensor; their index tensor is made once per device (a list index
        would copy it to the device every step)."""
        if len(members) == self.count:
            return tensor
        key = (tuple(members), tensor.device)
        if key not in self._row_indices:
            self._row_indices[key] = torch.tensor(members, device=tensor.device)
        return tensor.index_select(0, self._row_indices[key])

    def _online_teacher(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = teacher_forward(self.teacher, x, self.teacher_precision)
        return logits.clone()  # a normal tensor: losses may save it for backward

    # --- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self._epoch_indices.append(index.detach())
        step = self.global_step
        logits = self.students(x)
        needing = [k for k in range(self.count)
                   if self.teacher_available and self.members[k].schedule.teacher_needed_at(step)]
        teacher = self._teacher_logits(x, index, needing, "train") if needing else {}
        losses: list[torch.Tensor | None] = [None] * self.count
        tensors, numbers = {}, {}
        for position, group in enumerate(self.loss_groups):
            for k, (loss, parts, weights) in self._group_losses(position, group, step, logits, teacher, batch):
                losses[k] = loss
                if self.members[k].logger:
                    self._member_step_values(k, loss, parts, weights, tensors, numbers)
        losses = torch.stack(losses)
        self.guard.observe(step, losses, [member.schedule.pure_phase(step) for member in self.members])
        self.train_loss_mean.update(losses.detach()[:, None].expand(-1, y.shape[1]))
        if tensors or numbers:
            self.step_metrics.record(step, self.current_epoch, tensors, numbers)
        total = losses.sum()
        self.latest_loss = total.detach() / self.count
        if (step + 1) % self.sync_every == 0:
            self.sync_point()
        return total

    def _group_losses(self, position: int, group: list[int], step: int, logits: torch.Tensor, teacher: dict,
                      batch) -> list[tuple[int, tuple]]:
        """[(member, (loss, parts, weights))] of a group of alike schedules: one vmapped call when it can."""
        x, y, index = batch
        if len(group) > 1 and position not in self._unbatchable:
            try:
                return self._vmapped_losses(group, step, logits, teacher, (x, y, index))
            except Exception:  # e.g. a loss that reads a tensor's value in Python: one call per member
                self._unbatchable.add(position)
        return [(k, self.members[k].schedule(step, *per_position(logits[k], teacher.get(k), (x[k], y[k], index[k]))))
                for k in group]

    def _vmapped_losses(self, group: list[int], step: int, logits, teacher: dict, batch) -> list[tuple[int, tuple]]:
        schedule = self.members[group[0]].schedule
        pick = lambda tensor: self._rows(tensor, group)  # noqa: E731
        teacher_logits = torch.stack([teacher[k] for k in group]) if group[0] in teacher else None
        plain: dict = {}

        def member_loss(member_logits, member_teacher, member_x, member_y, member_index):
            loss, parts, weights = schedule(step, *per_position(member_logits, member_teacher,
                                                               (member_x, member_y, member_index)))
            plain["numbers"] = {name: value for name, value in parts.items() if not isinstance(value, torch.Tensor)}
            plain["weights"] = weights  # depend on the step alone: the same for every member of the group
            return loss, {name: value for name, value in parts.items() if isinstance(value, torch.Tensor)}

        in_dims = (0, 0 if teacher_logits is not None else None, 0, 0, 0)
        loss, parts = torch.func.vmap(member_loss, in_dims=in_dims, randomness="different")(
            pick(logits), teacher_logits, *(pick(part) for part in batch))
        return [(k, (loss[j], {**{name: value[j] for name, value in parts.items()}, **plain["numbers"]},
                     plain["weights"])) for j, k in enumerate(group)]

    @property
    def teacher_available(self) -> bool:
        return self.teacher is not None or len(self.teacher_tables) > 0

    def _member_step_values(self, k: int, loss: torch.Tensor, parts: dict, weights: dict, tensors: dict,
                            numbers: dict) -> None:
        """As DistillationModule._record_step, for member k under `k/` names (its rate: the schedule's factor x
        its peak), gathered into the one record of the step."""
        tensors[f"{k}/train/loss"] = loss
        for name, value in parts.items():
            (tensors if isinstance(value, torch.Tensor) else numbers)[f"{k}/train/{name}"] = value
        if self.lr_plan is not None:
            group = self.trainer.optimizers[0].param_groups[0]
            numbers[f"{k}/train/lr"] = group["lr"] * float(group["member_lr"][k])
        if len(weights) > 1:
            numbers.update({f"{k}/schedule/{name}": weight for name, weight in weights.items()})

    def _flush_step_metrics(self) -> None:
        """Every member's pending rows to its own logger, under its run's own names."""
        loggers = [_MemberLogger(member.logger, f"{k}/") for k, member in enumerate(self.members) if member.logger]
        self.step_metrics.flush(loggers)

    def local_epoch_loss(self) -> float | None:
        """The active members' mean training loss so far in the epoch (for the progress display)."""
        weight = self.train_loss_mean.weight
        if not self.active or float(weight[0]) == 0:
            return None
        return float(self.train_loss_mean.compute()[self.active].mean())

    def sync_point(self) -> None:
        self._flush_step_metrics()
        for k, error in self.guard.failures().items():  # one device read for the whole pack
            if k not in self.failures:
                self.failures[k] = error
                self._retiring.append(k)
        if not self.active:  # nothing left to train: the fit ends with the first failure
            raise next(iter(self.failures.values()))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # after the optimiser step: the failed members' slices were still needed by this step's backward
        for k in self._retiring:
            self._retire(k)
        self._retiring = []

    @torch.no_grad()
    def _retire(self, k: int) -> None:
        """Member k stops: zeros and a zero rate keep its slice finite and fixed while the others train."""
        for tensor in [*self.students.parameters(), *self.students.buffers()]:
            tensor[k].zero_()
        optimizer = self.trainer.optimizers[0] if self._trainer is not None else None
        if isinstance(optimizer, StackedOptimizer):
            optimizer.freeze_member(k)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # a norm over the whole pack would couple the members: each is clipped by its own gradient's norm
        if gradient_clip_val:
            clip_grad_norm_per_member(list(self.students.parameters()), float(gradient_clip_val))

    def on_train_epoch_end(self):
        epoch_loss = self.train_loss_mean.compute()
        self.train_loss_mean.reset()
        rows = {f"{k}/train/loss_epoch": epoch_loss[k] for k, member in enumerate(self.members) if member.logger}
        if rows:
            self.step_metrics.record(max(self.global_step - 1, 0), self.current_epoch, rows, {})
        self.sync_point()
        self.on_train_batch_end(None, None, None)
        self._hash_batch_orders()
        for member in self.members:
            if member.logger:
                member.logger.save()  # before the pack's epoch checkpoint (kdrun.engine.resume.EpochCheckpoint)

    def on_train_end(self):
        self.sync_point()
        self._hash_batch_orders()
        for member in self.members:
            if member.logger:
                member.logger.save()

    def _hash_batch_orders(self) -> None:
        if self._epoch_indices:
            indices = torch.cat(self._epoch_indices, dim=1).cpu()  # (K, samples of the epoch)
            for k in range(self.count):
                self.batch_orders[k].update(indices[k].numpy().tobytes())
            self._epoch_indices = []

    # --- validation ----------------------------------------------------------------------------
    def on_validation_start(self):
        self._flush_step_metrics()

    def validation_step(self, batch, batch_idx):
        x, y, index = batch
        logits = self.students(x)
        teacher = self._teacher_logits(x, index, list(range(self.count)), "val") if self.teacher_available else {}
        # one prediction per sample: language models are not packed (kdrun.jobs.packing)
        self.val_acc.update((logits.argmax(-1) == y).float())
        self.val_nll.update(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape))
        if teacher:
            agreement = torch.stack([logits[k].argmax(-1) == teacher[k].argmax(-1) for k in range(self.count)])
            self.val_agreement.update(agreement.float())

    def on_validation_epoch_end(self):
        self.last_validated_step = self.global_step
        step = max(self.global_step - 1, 0)  # the step Lightning logs a validation epoch's metrics at
        means = {"val/acc": self.val_acc, "val/nll": self.val_nll}
        if self.teacher_available:
            means["val/agreement"] = self.val_agreement
        computed = {name: mean.compute().tolist() for name, mean in means.items()}  # one copy per metric
        for mean in (self.val_acc, self.val_nll, self.val_agreement):
            mean.reset()
        for k, member in enumerate(self.members):
            values = {name: column[k] for name, column in computed.items()}
            self.member_metrics[k] = values
            if member.logger:
                member.logger.log_metrics({**values, "epoch": self.current_epoch}, step=step)
        shown = [self.member_metrics[k] for k in self.active] or self.member_metrics
        for name in ("val/acc", "val/nll"):  # the pack's mean, for the progress line
            self.log(name, sum(metrics[name] for metrics in shown) / len(shown), prog_bar=name == "val/acc")

    # --- optimiser -----------------------------------------------------------------------------
    def configure_optimizers(self):
        cfgs = [member.optimizer_cfg for member in self.members]
        groups, rates, decays = stacked_parameter_groups(self.students, cfgs)
        first = cfgs[0]
        optimizer = StackedOptimizer(groups, first.name, rates, decays,
                                     momentum=float(first.get("momentum", 0.0) or 0.0),
                                     nesterov=bool(first.get("nesterov", False)),
                                     betas=tuple(first.get("betas") or (0.9, 0.999)))
        for k in self.failures:  # a resumed pack keeps its retired members still
            optimizer.freeze_member(k)
        if self.lr_plan is None:
            return optimizer
        scheduler = build_lr_scheduler(optimizer, self.lr_schedule, self.lr_plan)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _MemberLogger:
    """One member's logger seen through the pack's step record: its `k/`-prefixed values under their own names."""

    def __init__(self, logger, prefix: str):
        self.logger, self.prefix = logger, prefix

    def log_metrics(self, row: dict, step: int) -> None:
        mine = {name[len(self.prefix):]: value for name, value in row.items() if name.startswith(self.prefix)}
        if mine:
            self.logger.log_metrics({**mine, "epoch": row["epoch"]}, step=step)
