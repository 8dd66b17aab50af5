"""One kdrun run, in order: preflight -> teacher (store) -> cached outputs -> student -> evaluate -> outputs.

This is the only module that knows the order of the stages. `preflight` checks every setting of
both stages and decides everything a run can decide before it trains (data splits, budgets,
the loss schedule, whether the teacher's outputs are cached, what each stage resumes from), so
bad input stops the run before anything is trained or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from kdrun.atomic_files import torch_save, write_text
from kdrun.callbacks import analysis_callbacks, progress_callbacks
from kdrun.data.datamodule import DataSplits, StageDataModule
from kdrun.data.in_memory import use_fast_path
from kdrun.distributed import (RankAgreement, check_distributed_support, cluster_plugins, process_rank,
                               training_world_size)
from kdrun.divergence import DivergenceSettings
from kdrun.errors import ConfigError
from kdrun.evaluate import bayes_metrics, evaluate
from kdrun.feature_taps import named_submodule
from kdrun.loggers import build_logger, close_logger, is_wandb, log_run_figures
from kdrun.models import build_model, count_parameters
from kdrun.optim import RECIPE_KEYS, Budget, StepPlan, plan_steps, stage_budget
from kdrun.oracle_teachers import build_oracle_teacher
from kdrun.per_sample_csv import write_per_sample_csv
from kdrun.resume import (AtomicCheckpointIO, Resume, StageOwner, epoch_checkpoint, plan_resume,
                          remember_configuration)
from kdrun.module import DistillationModule
from kdrun.schedule import LossSchedule, PhaseSpec, build_schedule
from kdrun.seeds import Seeds, derive_seed, resolve_seeds
from kdrun.teacher_cache import check_cache_config, teacher_outputs
from kdrun.teachers import TeacherResult, TeacherStore, file_sha256, load_teacher_checkpoint, teacher_key
from kdrun.validate import check_trainer_settings, validate_config

log = logging.getLogger("kdrun")

# Data keys that change what the student sees but not the teacher (or only where files live).
_NOT_TEACHER_DATA_KEYS = {"kappa", "student_size", "stratified", "num_workers", "root", "download", "verify_checksums",
                          "fast_path"}
# Data keys that say where files live or how batches are fetched, never what is trained on
# (the in-memory path gives the DataLoader's batches bit for bit).
_LOCATION_DATA_KEYS = {"num_workers", "root", "download", "verify_checksums", "fast_path"}


@dataclass
class RunPlan:
    """Everything decided before training: the outcome of a successful preflight."""

    seeds: Seeds
    splits: DataSplits
    student_budget: Budget
    student_lr_plan: StepPlan
    schedule: LossSchedule
    student: torch.nn.Module  # built under the student's init seed
    analysis: list
    fast_path: bool
    cache_outputs: bool
    divergence: DivergenceSettings
    teacher_owner: StageOwner | None  # None: the run trains no teacher (imported or oracle)
    student_owner: StageOwner
    resume: dict[str, Resume]


def run(cfg: DictConfig, output_dir: Path) -> dict:
    """Run one experiment and return its metrics (also written to output_dir/metrics.json)."""
    started = time.perf_counter()
    _quiet_framework_chatter()
    plan = preflight(cfg, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0 and not any(resume.path for resume in plan.resume.values()):
        remember_configuration(output_dir)  # the configuration this run's checkpoints will belong to
    group = _run_group(output_dir)
    times: dict[str, float] = {}

    stage_start = time.perf_counter()
    teacher = get_teacher(cfg, plan.splits, output_dir, group, plan.resume["teacher"], plan.divergence)
    times["teacher/wall_time_s"] = time.perf_counter() - stage_start
    log.info("teacher: %s (%s)", teacher.source, f"key {teacher.key}" if teacher.key else teacher.path)
    stage_start = time.perf_counter()
    cached = teacher_outputs(cfg, plan.splits, teacher, plan.schedule)
    times["teacher/outputs_wall_time_s"] = time.perf_counter() - stage_start
    log.info("teacher outputs: %s%s; data path: %s", "cached" if cached else "online",
             f" ({'computed' if cached.computed else 'reused'}, kept in the {cached.where})" if cached else "",
             "in-memory" if plan.fast_path else "DataLoader")

    stage_start = time.perf_counter()
    module, logger, validation, rank = train_student(cfg, plan, teacher, cached, output_dir, group)
    times["student/wall_time_s"] = time.perf_counter() - stage_start
    if rank != 0:
        return validation  # rank 0 alone evaluates the whole splits and writes every output

    stage_start = time.perf_counter()
    metrics = evaluate_run(cfg, plan, teacher, output_dir)
    times["evaluate/wall_time_s"] = time.perf_counter() - stage_start
    metrics.update(validation)
    metrics.update(run_record(plan, teacher, cached, module))
    metrics.update({**times, "wall_time_s": time.perf_counter() - started})
    write_outputs(cfg, plan, metrics, output_dir, logger)
    return metrics


def preflight(cfg: DictConfig, output_dir: Path) -> RunPlan:
    """Check every setting of both stages and decide what the run will do; nothing trains or is written."""
    validate_config(cfg)
    check_distributed_support(cfg)  # e.g. DDP inside a basic-launcher sweep
    divergence = DivergenceSettings.from_config(cfg.get("divergence"))
    seeds = resolve_seeds(cfg.seed, cfg.seeds)
    splits = DataSplits.build(cfg.data, seeds)
    splits.world_size = training_world_size(cfg.trainer)  # step budgets count one rank's batches
    student_budget = stage_budget(cfg.student, splits, "student")
    student_steps = student_budget.total_steps
    student_lr_plan = plan_steps(cfg.student.lr_schedule, student_budget.steps_per_epoch, student_steps, "student")
    trains_teacher = not cfg.teacher.get("oracle") and cfg.teacher.checkpoint is None
    if trains_teacher:
        teacher_plan(cfg, splits)  # the teacher's recipe is checked here; unused recipes need not be valid
    for stage in ("teacher", "student") if trains_teacher else ("student",):
        check_trainer_settings(trainer_arguments(cfg, stage))
    schedule = build_schedule(cfg.schedule, cfg.loss, student_steps)
    if splits.student_labels_withheld:
        needing = [loss.name for loss in schedule.losses if loss.needs_labels]
        if needing:
            raise ConfigError(
                f"data.split=distill4 withholds labels from the student, but loss {', '.join(needing)} uses them; "
                f"allowed: losses without a label term (e.g. loss=kd loss.alpha=1.0)"
            )
    input_shape = splits.source.input_shape
    # architecture errors (and feature layers the models lack) surface before any training
    teacher_architecture = None if cfg.teacher.get("oracle") else build_model(cfg.teacher.model, input_shape, "teacher")
    torch.manual_seed(student_init_seed(cfg, seeds))
    student = build_model(cfg.student.model, input_shape, role="student")
    check_feature_layers(schedule, student, teacher_architecture)
    analysis = analysis_callbacks(cfg, splits, student, output_dir, student_steps)  # settings checked before training
    fast_path = use_fast_path(cfg.data, splits)  # fast_path=true where it cannot apply fails here
    cache_outputs = check_cache_config(cfg, schedule)  # likewise teacher.cache_outputs=true with augmentation
    teacher_owner = None
    if trains_teacher:
        identity = teacher_identity(cfg, splits)
        teacher_owner = StageOwner.of("teacher", identity, digest=teacher_key(identity))
        TeacherStore(cfg.teacher.store).check_writable(teacher_owner.digest)
    student_owner = StageOwner.of("student", student_identity(cfg, splits, seeds, teacher_owner, cache_outputs))
    resume = plan_resume(output_dir, {"teacher": teacher_owner, "student": student_owner}, cfg.get("resume", "auto"))
    return RunPlan(seeds, splits, student_budget, student_lr_plan, schedule, student, analysis, fast_path,
                   cache_outputs, divergence, teacher_owner, student_owner, resume)


def train_student(cfg, plan: RunPlan, teacher: TeacherResult, cached, output_dir: Path, group: str):
    """Distil the student under the loss schedule: (module, logger, last validation metrics, this process's rank)."""
    logger = build_logger(cfg, "student", output_dir, group, plan.resume["student"].epochs_done)
    module = DistillationModule(plan.student, teacher.model, plan.schedule, cfg.student.optimizer,
                                plan.splits.num_classes, stage="student", input_shape=plan.splits.source.input_shape,
                                lr_schedule=cfg.student.lr_schedule, lr_plan=plan.student_lr_plan,
                                teacher_outputs=cached.logits if cached else None, divergence=plan.divergence,
                                owner=plan.student_owner.record())
    L.seed_everything(plan.seeds.data_order, workers=True, verbose=False)  # dropout and other training randomness
    trainer = _trainer(cfg, "student", plan.student_budget, output_dir, logger, plan.analysis)
    fit(trainer, module, plan.resume["student"].path, StageDataModule(
        plan.splits, "student", plan.seeds.data_order, plan.student_budget.batch_size,
        plan.student_budget.drop_last, plan.fast_path))
    # the last epoch's validation metrics: what sweepers may select on (test data never chooses)
    validation = {f"student/{key}": float(value) for key, value in trainer.callback_metrics.items()
                  if key.startswith("val/")}
    return module, logger, validation, trainer.global_rank


def evaluate_run(cfg, plan: RunPlan, teacher: TeacherResult, output_dir: Path) -> dict:
    """Teacher and student on the whole splits: metrics, predictions.npz and per_sample.csv."""
    splits = plan.splits
    loaders = {"train": splits.loader("train", splits.student_indices), "test": splits.loader("test")}
    per_sample = {"train": {"clean_label": splits.source.train.targets, "noise_mask": splits.noise_mask}}
    oracle = {"train": splits.source.train.oracle_probs, "test": splits.source.test.oracle_probs}
    for split, probs in oracle.items():
        if probs is not None:  # synthetic sources: p*(y|x) beside each sample's logits
            per_sample.setdefault(split, {})["oracle_probs"] = probs
    metrics = evaluate(teacher.model, plan.student, loaders, output_dir, per_sample, cfg.get("evaluation"))
    metrics.update(bayes_metrics(splits, cfg.get("evaluation")))
    write_per_sample_csv(output_dir)
    return metrics


def run_record(plan: RunPlan, teacher: TeacherResult, cached, module: DistillationModule) -> dict:
    """What the run was: sizes, sources, modes, seeds and checksums (metrics.json beside the metrics)."""
    splits = plan.splits
    return {
        "teacher/train_size": len(splits.teacher_indices),
        "student/train_size": len(splits.student_indices),
        "data/kappa": len(splits.student_indices) / len(splits.teacher_indices),
        "data/noisy_labels": int(splits.noise_mask.sum()),
        "teacher/params": count_parameters(teacher.model),
        "student/params": count_parameters(plan.student),
        "teacher/source": teacher.source,
        "teacher/key": teacher.key,
        "teacher/outputs": "cached" if cached else "online",
        "teacher/outputs_cache": cached.where if cached else None,
        "teacher/outputs_computed": bool(cached and cached.computed),
        "data/fast_path": plan.fast_path,
        "student/steps": plan.student_budget.total_steps,
        "student/init_checksum": module.init_checksum,
        "student/batch_order_checksum": module.batch_order.hexdigest()[:16],
        "student/resumed_epochs": plan.resume["student"].epochs_done,
        "seeds/init": plan.seeds.init, "seeds/data_order": plan.seeds.data_order, "seeds/subset": plan.seeds.subset,
    }


def write_outputs(cfg, plan: RunPlan, metrics: dict, output_dir: Path, logger) -> None:
    """student.pt, then metrics.json (atomically: its presence marks a finished run), the logger's
    figures and summary, and the console summary."""
    torch_save(plan.student.state_dict(), output_dir / "student.pt")
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    if is_wandb(logger):  # the dashboard shows the run's own figures beside its curves
        log_run_figures(logger, output_dir)
    close_logger(logger, summary=metrics)
    _print_summary(cfg, metrics, output_dir)


def check_feature_layers(schedule: LossSchedule, student, teacher) -> None:
    """Every module a feature-matching loss names exists in the student and the teacher."""
    for loss in schedule.losses:
        for student_layer, teacher_layer in getattr(loss, "pairs", []):
            named_submodule(student, student_layer, "student")
            if teacher is not None:
                named_submodule(teacher, teacher_layer, "teacher")


def student_init_seed(cfg: DictConfig, seeds) -> int:
    """The seed the student is built under: its own `seeds.init`, or the teacher's (`student.init=teacher`).

    With `teacher` the student starts from the teacher's initial weights, which needs the same
    architecture and a teacher this run trains (or reuses) from `teacher.seed`. Training it with
    the teacher's data order too would only retrain the teacher, so that is refused."""
    init = cfg.student.get("init", "own")
    if init == "own":
        return seeds.init
    if init != "teacher":
        raise ConfigError(f"student.init={init!r}; allowed: own (from seeds.init), teacher (the teacher's initial weights)")
    teacher_model = OmegaConf.to_container(cfg.teacher.model, resolve=True)
    if teacher_model != OmegaConf.to_container(cfg.student.model, resolve=True):
        raise ConfigError(
            f"student.init=teacher needs the teacher's architecture, but student.model={cfg.student.model.name} "
            f"differs from teacher.model={teacher_model['name']} (or their options differ); allowed: "
            f"student={teacher_model['name']} with the same options, or student.init=own"
        )
    if cfg.teacher.checkpoint is not None or cfg.teacher.get("oracle"):
        raise ConfigError("student.init=teacher needs the teacher's initial weights, which an imported "
                          "(teacher.checkpoint) or oracle teacher does not have; allowed: student.init=own")
    if seeds.data_order == derive_seed(cfg.teacher.seed, "data_order"):
        raise ConfigError(
            f"student.init=teacher with seeds.data_order={seeds.data_order}, the teacher's own data order, would "
            f"retrain the teacher; allowed: a seed other than teacher.seed={cfg.teacher.seed} (seed={cfg.seed}), "
            f"or another seeds.data_order"
        )
    return int(cfg.teacher.seed)


def teacher_identity(cfg: DictConfig, splits: DataSplits) -> dict:
    """Everything that determines a trained teacher: its key in the store."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "data": {k: v for k, v in data.items() if k not in _NOT_TEACHER_DATA_KEYS},
        "teacher_indices_sha256": splits.teacher_indices_digest(),
        "architecture": OmegaConf.to_container(cfg.teacher.model, resolve=True),
        "recipe": {
            **{key: OmegaConf.to_container(cfg.teacher, resolve=True).get(key) for key in RECIPE_KEYS},
            "precision": resolve_precision(cfg.trainer.get("precision")),
            "trainer_gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        },
        "seed": cfg.teacher.seed,
    }


def student_identity(cfg: DictConfig, splits: DataSplits, seeds: Seeds, teacher_owner: StageOwner | None,
                     cache_outputs: bool) -> dict:
    """Everything that determines the student's training (what its checkpoints belong to): data and
    kappa subset, seeds, model, recipe with its budget, loss, schedule, teacher, precision. Not the
    logger, evaluation, analysis, divergence or output settings, which change no weight."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    student = OmegaConf.to_container(cfg.student, resolve=True)
    if teacher_owner is not None:
        teacher = {"store_key": teacher_owner.digest}
    elif cfg.teacher.checkpoint is not None:
        teacher = {"checkpoint_sha256": file_sha256(Path(str(cfg.teacher.checkpoint)))}
    else:
        teacher = {"oracle": cfg.teacher.oracle,
                   "options": OmegaConf.to_container(cfg.teacher.oracle_options, resolve=True)}
    return {
        "data": {key: value for key, value in data.items() if key not in _LOCATION_DATA_KEYS},
        "student_indices_sha256": hashlib.sha256(
            np.ascontiguousarray(splits.student_indices, dtype=np.int64).tobytes()).hexdigest(),
        "seeds": {"init": seeds.init, "data_order": seeds.data_order, "subset": seeds.subset},
        "model": student["model"],
        "init": student.get("init", "own"),
        "recipe": {key: student.get(key) for key in RECIPE_KEYS},
        "loss": OmegaConf.to_container(cfg.loss, resolve=True),
        "schedule": OmegaConf.to_container(cfg.schedule, resolve=True),
        "teacher": teacher,
        "teacher_outputs": "cached" if cache_outputs else "online",
        "precision": resolve_precision(cfg.trainer.get("precision")),
        "trainer_gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
    }


def get_teacher(cfg, splits: DataSplits, output_dir: Path, group: str | None = None, resume: Resume | None = None,
                divergence: DivergenceSettings | None = None) -> TeacherResult:
    """The run's teacher: imported from `teacher.checkpoint`, an oracle, or from the store (trained there once).

    `resume` is where an interrupted teacher stage continues (from `preflight`); without it the
    run directory's teacher checkpoint is checked here. Also used by commands that need the
    teacher of a configuration without training a student (e.g. the PTLoss coefficient search)."""
    build_teacher = lambda: build_model(cfg.teacher.model, splits.source.input_shape, role="teacher")  # noqa: E731
    group = group or output_dir.name
    if cfg.teacher.get("oracle"):
        return TeacherResult(build_oracle_teacher(cfg, splits.source), f"oracle {cfg.teacher.oracle}", None,
                             output_dir)
    if cfg.teacher.checkpoint is not None:
        return load_teacher_checkpoint(cfg.teacher.checkpoint, build_teacher(), cfg.teacher.model.name)
    identity = teacher_identity(cfg, splits)
    owner = StageOwner.of("teacher", identity, digest=teacher_key(identity))
    if resume is None:
        resume = plan_resume(output_dir, {"teacher": owner}, cfg.get("resume", "auto"))["teacher"]

    def build():
        torch.manual_seed(cfg.teacher.seed)
        return build_teacher()

    def train(model) -> dict:
        return train_teacher(cfg, splits, model, output_dir, group, owner, resume, divergence)

    store = TeacherStore(cfg.teacher.store)
    if training_world_size(cfg.trainer) == 1:
        return store.get_or_train(identity, build, train)
    # DDP: rank 0 owns the store (lock, entry); the other ranks follow its decision into the same fit
    agreement = RankAgreement(output_dir, "teacher")
    if process_rank() == 0:
        return store.get_or_train(identity, build, train, announce=agreement.announce)
    return store.follow(identity, build, train, agreement.wait())


def train_teacher(cfg, splits: DataSplits, model, output_dir: Path, group: str, owner: StageOwner, resume: Resume,
                  divergence: DivergenceSettings | None) -> dict:
    """The teacher stage: the same module with the label loss and no teacher; its stage metrics."""
    budget, lr_plan = teacher_plan(cfg, splits)
    log.info("teacher: training %s on %d samples for %d steps",
             cfg.teacher.model.name, len(splits.teacher_indices), budget.total_steps)
    label_loss = LossSchedule([PhaseSpec({"name": "ce", "label_smoothing": 0.0}, None, 0, "teacher")], total_steps=1)
    module = DistillationModule(model, None, label_loss, cfg.teacher.optimizer, splits.num_classes, "teacher",
                                lr_schedule=cfg.teacher.lr_schedule, lr_plan=lr_plan, divergence=divergence,
                                owner=owner.record())
    logger = build_logger(cfg, "teacher", output_dir, group, resume.epochs_done)
    order_seed = derive_seed(cfg.teacher.seed, "data_order")
    L.seed_everything(order_seed, workers=True, verbose=False)
    trainer = _trainer(cfg, "teacher", budget, output_dir, logger)
    # an interrupted teacher resumes from the run directory (its store entry is written only at the end),
    # and only from a checkpoint of this very teacher (kdrun.resume.plan_resume)
    fit(trainer, module, resume.path, StageDataModule(
        splits, "teacher", order_seed, budget.batch_size, budget.drop_last, use_fast_path(cfg.data, splits)))
    stage_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    close_logger(logger)
    return stage_metrics


def teacher_plan(cfg, splits: DataSplits) -> tuple[Budget, StepPlan]:
    budget = stage_budget(cfg.teacher, splits, "teacher")
    return budget, plan_steps(cfg.teacher.lr_schedule, budget.steps_per_epoch, budget.total_steps, "teacher")


def fit(trainer: L.Trainer, module: DistillationModule, ckpt_path: str | None, datamodule) -> None:
    """`trainer.fit`, with Ctrl-C surfacing as KeyboardInterrupt: Lightning catches it, ignores SIGINT
    from then on and exits with code 1, which would pass for an ordinary crash."""
    try:
        trainer.fit(module, ckpt_path=ckpt_path, datamodule=datamodule)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt(f"{module.stage} stage interrupted at step {module.global_step}") from None
        raise


def trainer_arguments(cfg, stage: str) -> dict:
    """The `lightning.Trainer` arguments of `stage` that come from the config (`trainer.*` and the recipe)."""
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args["precision"] = resolve_precision(trainer_args.get("precision"))
    clip = cfg[stage].get("gradient_clip_val")
    if clip is not None:  # the stage's recipe wins over the shared trainer setting
        trainer_args["gradient_clip_val"] = clip
    return trainer_args


def _trainer(cfg, stage: str, budget: Budget, output_dir: Path, logger, extra_callbacks=()) -> L.Trainer:
    trainer_args = trainer_arguments(cfg, stage)
    return L.Trainer(
        max_epochs=budget.max_epochs, max_steps=budget.max_steps, logger=logger,
        default_root_dir=str(output_dir / "lightning" / stage),
        enable_checkpointing=True, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[*progress_callbacks(stage, trainer_args.pop("enable_progress_bar", True)),
                   epoch_checkpoint(output_dir, stage), *extra_callbacks],
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        use_distributed_sampler=False,  # kdrun's samplers shard by rank (kdrun.data.samplers)
        enable_progress_bar=sys.stderr.isatty() and cfg.trainer.get("enable_progress_bar", True),
        **trainer_args,
    )


def resolve_precision(precision) -> str:
    """`auto`: bf16 mixed precision on a GPU that supports it, full precision elsewhere (CPU)."""
    if precision not in (None, "auto"):
        return str(precision)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _run_group(output_dir: Path) -> str:
    """The sweep's directory name inside a multirun (so its runs group together), else the run's."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir).name
    except ValueError:  # not inside a Hydra app (tests, notebooks)
        pass
    return output_dir.name


def _quiet_framework_chatter() -> None:
    """Keep the console to progress bars and kdrun's own lines."""
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*is smaller than the logging interval.*")
    # The frozen teacher is in eval mode on purpose (DistillationModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def _print_summary(cfg, metrics: dict, output_dir: Path) -> None:
    teacher_note = f"{metrics['teacher/source']}" + (f", key {metrics['teacher/key']}" if metrics["teacher/key"] else "")
    lines = [
        f"done in {metrics['wall_time_s']:.1f} s -> {output_dir}",
        f"  teacher  {cfg.teacher.get('oracle') or cfg.teacher.model.name:<6} {metrics['teacher/params']:>9,} params  "
        f"N={metrics['teacher/train_size']:<6} test acc {metrics['teacher/test/acc']:.4f}  nll {metrics['teacher/test/nll']:.4f}"
        f"  ({teacher_note})",
        f"  student  {cfg.student.model.name:<6} {metrics['student/params']:>9,} params  "
        f"M={metrics['student/train_size']:<6} test acc {metrics['student/test/acc']:.4f}  nll {metrics['student/test/nll']:.4f}"
        f"  (loss {cfg.loss.name}, schedule {cfg.schedule.name})",
        f"  student-teacher agreement  test {metrics['student/test/agreement']:.4f}  "
        f"train {metrics['student/train/agreement']:.4f}",
    ]
    for line in lines:
        log.info(line)
