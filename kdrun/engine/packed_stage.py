"""The student stage of a pack: K prepared runs (kdrun.pipeline.prepare) whose students train as one Lightning
fit (kdrun.engine.packed_module), each member's result then finished as its own run (kdrun.pipeline.finish).

The pack's epoch checkpoint lives in the pack's directory (kdrun.jobs.packed_sweep) and records every member
(its weights, optimiser state, batch-order digest, failure), so a killed pack started again resumes all its
members exactly; its owner is the members' own student owners, so only the same pack resumes it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from kdrun.data.packed import PackedDataModule
from kdrun.engine.loggers import build_logger, close_logger
from kdrun.engine.packed_module import PackedDistillationModule, PackMember
from kdrun.engine.packed_students import StackedModels
from kdrun.engine.resume import FINAL_OUTPUT, RunningDigest, StageOwner, plan_resume
from kdrun.engine.stages import StageResult
from kdrun.engine.trainer import build_trainer, fit
from kdrun.losses.interface import FeatureLoss

log = logging.getLogger("kdrun")


@dataclass
class MemberSummary:
    """What a run's record reads from its training module (kdrun.pipeline.run_record)."""

    init_checksum: str
    batch_order: RunningDigest


def member_obstacle(prepared) -> str | None:
    """Why a prepared run cannot train in a pack (it then trains alone), or None."""
    plan = prepared.plan
    if any(isinstance(loss, FeatureLoss) for loss in plan.student.schedule.losses):
        return "a feature loss hooks one student's layers"
    if plan.student.callbacks:
        return "analysis callbacks watch one student"
    if plan.splits.world_size > 1:
        return "a pack trains on one device"
    return None


def pass_signature(prepared) -> tuple:
    """What members of one pack share once their data and teachers are known: the shape of every batch,
    the steps, the data path, and (for members whose teacher runs online) that teacher."""
    plan = prepared.plan
    budget = plan.student.budget
    online_teacher = (prepared.teacher.key or str(prepared.teacher.path)) if _runs_teacher(prepared) else None
    return (tuple(plan.splits.source.input_shape), plan.splits.num_classes, len(plan.splits.student_indices),
            len(plan.splits.source.split("val").dataset), budget.batch_size, budget.drop_last, budget.max_epochs,
            budget.max_steps,
            budget.total_steps, plan.fast_path, plan.splits.source.task, online_teacher,
            plan.student.teacher_precision)


def _runs_teacher(prepared) -> bool:
    """Whether the member's teacher network runs during training (online, or filling a view cache)."""
    return prepared.cached is None or prepared.cached.views is not None


def member_memory_bytes(prepared) -> float:
    """An estimate of one member's training memory: weights, gradients and optimiser moments, plus the
    activations a batch keeps for backward (measured by a forward pass of two samples, scaled to the batch)."""
    model, plan = prepared.plan.student.model, prepared.plan
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    slots = 2 if prepared.cfg.student.optimizer.name in ("adam", "adamw") else 1
    activations = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: activations.append(
        out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0))
        for module in model.modules() if not list(module.children())]
    try:
        x = next(iter(plan.splits.loader("val", batch_size=2)))[0]
        was_training = model.training
        with torch.no_grad():
            model.eval()(x)
        model.train(was_training)
    except Exception:  # an input the quick probe cannot run: count the weights alone
        activations = []
    finally:
        for hook in hooks:
            hook.remove()
    per_sample = sum(activations) / 2 if activations else 0.0
    return parameters * (2 + slots) + 2 * per_sample * plan.student.budget.batch_size


def loss_key(cfg) -> str:
    """Equal for jobs whose loss schedules are configured alike (the pack evaluates them in one vmapped call)."""
    settings = {key: OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) is not None else None
                for key in ("loss", "loss_options", "schedule")}
    return json.dumps(settings, sort_keys=True, default=str)


def _view_cache(prepared) -> tuple:
    """(view cache, the views its loader draws) of a member that reads the view cache, else (None, None)."""
    if prepared.cached is None or prepared.cached.views is None:
        return None, None
    return prepared.cached.views, prepared.plan.splits.view_stream(prepared.plan.student.order_seed)


def pack_owner(members: list) -> StageOwner:
    """What a pack's checkpoint belongs to: its members' student owners, in order."""
    return StageOwner.of("student", {"pack": [member.plan.student.owner.digest for member in members]})


def train_pack(members: list, pack_dir: Path, names: list[str]) -> list[StageResult | Exception]:
    """Train the prepared runs' students together; per member, its StageResult (its plan's model then holds
    its trained weights) or the error that stopped it alone."""
    first = members[0]
    cfg, plan = first.cfg, first.plan
    owner = pack_owner(members)
    finished = all((member.output_dir / FINAL_OUTPUT).exists() for member in members)
    resume = plan_resume(pack_dir, {"student": owner}, "never" if finished else cfg.get("resume", "auto"))["student"]
    tables, positions = [], {}
    for member in members:
        if member.cached is not None and id(member.cached.logits) not in positions:
            positions[id(member.cached.logits)] = len(tables)
            tables.append(member.cached.logits)
    online = next((member.teacher.model for member in members if _runs_teacher(member)), None)
    pack = [PackMember(member.plan.student.schedule, member.cfg.student.optimizer,
                       positions.get(id(member.cached.logits)) if member.cached is not None else None,
                       build_logger(member.cfg, "student", member.output_dir, member.plan.group, resume.epochs_done),
                       loss_key(member.cfg), *_view_cache(member))
            for member in members]
    students = StackedModels([member.plan.student.model for member in members])
    module = PackedDistillationModule(students, pack, tables, online, plan.splits.num_classes,
                                      lr_schedule=cfg.student.lr_schedule, lr_plan=plan.student.lr_plan,
                                      divergence=plan.checked.divergence, owner=owner.record(),
                                      teacher_precision=plan.student.teacher_precision)
    L.seed_everything(plan.student.order_seed, workers=True, verbose=False)
    trainer = build_trainer(cfg, "student", plan.student.budget, pack_dir, False)
    datamodule = PackedDataModule([member.plan.splits for member in members],
                                  [member.plan.student.order_seed for member in members],
                                  plan.student.budget.batch_size, plan.student.budget.drop_last, plan.fast_path)
    log.info("pack of %d students (%s): one fit in %s", len(members), ", ".join(names), pack_dir)
    try:
        fit(trainer, module, resume.path, datamodule)
        if module.last_validated_step != module.global_step:
            trainer.validate(module, datamodule=datamodule, verbose=False)
    except BaseException:  # every member's run ends here (an interrupted one resumes from the pack's checkpoint)
        for member in pack:
            close_logger(member.logger, failed=True)
        raise
    finally:
        for member in pack:
            if member.view_cache is not None:
                member.view_cache.close()  # its read-only maps still answer the fill ratio
    for k in module.failures:
        close_logger(pack[k].logger, failed=True)  # the members that stopped alone; the others finish their runs
    record = {"pack/size": len(members), "pack/members": ",".join(names), "pack/id": owner.digest}
    results: list[StageResult | Exception] = []
    for k, member in enumerate(members):
        if k in module.failures:
            results.append(module.failures[k])
            continue
        trained = students.member_state_dict(k)
        member.plan.student.model.to(next(iter(trained.values())).dtype)  # float64 under trainer.precision=64-true
        member.plan.student.model.load_state_dict(trained)
        summary = MemberSummary(module.init_checksums[k], module.batch_orders[k])
        results.append(StageResult(summary, pack[k].logger, dict(module.member_metrics[k]), trainer.global_rank,
                                   {**record, "pack/member": k}))
    return results
