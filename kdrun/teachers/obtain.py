"""How a run obtains its teacher: an oracle, imported weights, or the store's entry (trained there once)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from kdrun.data.datamodule import DataSplits
from kdrun.data.in_memory import use_fast_path
from kdrun.engine.distributed import RankAgreement, process_rank, training_world_size
from kdrun.engine.divergence import DivergenceSettings
from kdrun.teachers.identity import teacher_owner
from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec
from kdrun.engine.recipes import Budget, StepPlan, plan_steps, stage_budget
from kdrun.engine.resume import Resume, StageOwner, plan_resume
from kdrun.engine.stages import Stage, train_stage
from kdrun.engine.loggers import close_logger
from kdrun.config.seeds import derive_seed
from kdrun.models import build_model
from kdrun.teachers.imported import load_teacher_checkpoint
from kdrun.teachers.oracles import build_oracle_teacher
from kdrun.teachers.outputs_file import OutputsTeacher, load_outputs_file
from kdrun.teachers.store import TeacherResult, TeacherStore

log = logging.getLogger("kdrun")


def teacher_plan(cfg, splits: DataSplits) -> tuple[Budget, StepPlan]:
    """The teacher stage's budget and learning-rate landmarks in steps (checked against the data)."""
    budget = stage_budget(cfg.teacher, splits, "teacher")
    return budget, plan_steps(cfg.teacher.lr_schedule, budget.steps_per_epoch, budget.total_steps, "teacher")


def fixed_teacher(cfg, splits: DataSplits, output_dir: Path, oracle_options: dict | None = None,
                  model=None) -> TeacherResult | None:
    """The teacher when nothing trains it: an oracle, or imported weights (loaded into `model`, a freshly
    built teacher architecture, when given); None for a teacher of the store."""
    if cfg.teacher.get("oracle"):
        oracle = build_oracle_teacher(cfg, splits.source, oracle_options)
        return TeacherResult(oracle, f"oracle {cfg.teacher.oracle}", None, output_dir)
    if cfg.teacher.get("outputs") is not None:
        tables, digest = load_outputs_file(cfg.teacher.outputs, splits.source)
        path = Path(str(cfg.teacher.outputs))
        return TeacherResult(OutputsTeacher(tables, path), "outputs file", None, path, {"outputs_sha256": digest})
    if cfg.teacher.checkpoint is not None:
        model = model or build_model(cfg.teacher.model, splits.source.input_shape, role="teacher")
        return load_teacher_checkpoint(cfg.teacher.checkpoint, model, cfg.teacher.model.name)
    return None


def obtain_teacher(cfg, splits: DataSplits, output_dir: Path, group: str | None = None, resume: Resume | None = None,
                   divergence: DivergenceSettings | None = None, plan: tuple[Budget, StepPlan] | None = None,
                   fast_path: bool | None = None, owner: StageOwner | None = None,
                   ready: TeacherResult | None = None) -> TeacherResult:
    """The run's teacher: `ready` (an oracle or imported teacher the preflight resolved), else the
    store's entry, trained there once. `resume`, `plan`, `fast_path` and `owner` come from the run's
    preflight; without them (commands that need a configuration's teacher, e.g. the PTLoss coefficient
    search) they are worked out here."""
    ready = ready or fixed_teacher(cfg, splits, output_dir)
    if ready is not None:
        return ready
    owner = owner or teacher_owner(cfg, splits)
    if resume is None:
        resume = plan_resume(output_dir, {"teacher": owner}, cfg.get("resume", "auto"))["teacher"]

    def seeded_build():
        torch.manual_seed(cfg.teacher.seed)
        return build_model(cfg.teacher.model, splits.source.input_shape, role="teacher")

    with _claim(cfg, owner.identity, seeded_build, output_dir) as claim:
        if claim.found:
            return claim.found
        budget, lr_plan = plan or teacher_plan(cfg, splits)
        log.info("teacher: training %s on %d samples for %d steps",
                 cfg.teacher.model.name, len(splits.teacher_indices), budget.total_steps)
        label_loss = LossSchedule([PhaseSpec({"name": "ce", "label_smoothing": 0.0}, None, 0, "teacher")],
                                  total_steps=1)
        stage = Stage("teacher", claim.model, label_loss, cfg.teacher, budget, lr_plan,
                      derive_seed(cfg.teacher.seed, "data_order"), owner, resume)
        # an interrupted teacher resumes from the run directory (its store entry is written only at the end)
        fast_path = use_fast_path(cfg.data, splits) if fast_path is None else fast_path
        result = train_stage(cfg, splits, stage, output_dir, group or output_dir.name, fast_path,
                             divergence or DivergenceSettings())
        close_logger(result.logger)
        return claim.publish(result.metrics)


@contextmanager
def _claim(cfg, identity: dict, build, output_dir: Path):
    """The store entry, claimed by this process; under DDP rank 0 claims it and the other ranks follow."""
    store = TeacherStore(cfg.teacher.store)
    if training_world_size(cfg.trainer) == 1:
        with store.claim(identity, build) as claim:
            yield claim
        return
    agreement = RankAgreement(output_dir, "teacher")
    if process_rank() == 0:
        with store.claim(identity, build, announce=agreement.announce) as claim:
            yield claim
        return
    with store.follow(identity, build, agreement.wait()) as claim:
        yield claim
