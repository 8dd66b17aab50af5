"""One kdrun run, in order: preflight -> teacher -> cached teacher outputs -> student -> evaluation -> outputs.

This is the only module that knows the order of the stages. `preflight` checks every setting of
both stages and decides everything a run can decide before it trains (data splits, budgets, the
loss schedule, the models' initial weights, whether the teacher's outputs are cached, what each
stage resumes from), so bad input stops the run before anything is trained or written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from kdrun.atomic_files import torch_save, write_text
from kdrun.callbacks import analysis_callbacks
from kdrun.config.seeds import student_init_seed
from kdrun.config.validate import CheckedConfig, check_trainer_settings, validate_config
from kdrun.data.datamodule import DataSplits
from kdrun.data.in_memory import use_fast_path
from kdrun.errors import ConfigError
from kdrun.engine.distributed import check_distributed_support, process_rank, training_world_size
from kdrun.engine.identities import cache_mode, student_identity, teacher_reference
from kdrun.teachers.identity import teacher_owner
from kdrun.engine.loggers import close_logger, is_wandb, log_run_figures
from kdrun.engine.model_inputs import check_model_inputs
from kdrun.engine.loss_schedule import LossSchedule
from kdrun.engine.recipes import Budget, StepPlan, plan_steps, stage_budget
from kdrun.engine.resume import Resume, StageOwner, plan_resume, remember_configuration
from kdrun.engine.stages import Stage, StageResult, train_stage
from kdrun.engine.trainer import quiet_framework_chatter, trainer_arguments
from kdrun.evaluation.evaluate import bayes_metrics, evaluate
from kdrun.evaluation.per_sample_csv import write_per_sample_csv
from kdrun.evaluation.text_samples import write_samples
from kdrun.losses.feature_taps import check_feature_layers
from kdrun.models import build_model, count_parameters
from kdrun.teachers.cached_outputs import TeacherOutputs, check_cache_config, teacher_outputs
from kdrun.teachers.obtain import fixed_teacher, obtain_teacher, teacher_plan
from kdrun.teachers.store import TeacherResult, TeacherStore
from kdrun.teachers.view_cache import open_view_cache, view_cache_applies, view_cache_record

log = logging.getLogger("kdrun")


@dataclass
class RunPlan:
    """Everything decided before training: the outcome of a successful preflight."""

    checked: CheckedConfig
    splits: DataSplits
    teacher_plan: tuple[Budget, StepPlan] | None  # None: the run trains no teacher (imported or oracle)
    student: Stage
    fast_path: bool
    cache_outputs: bool
    teacher_owner: StageOwner | None
    ready_teacher: TeacherResult | None  # an oracle or imported teacher: nothing trains it
    resume: dict[str, Resume]
    group: str  # the wandb group: the sweep's directory name, else the run's
    view_cache: bool = False  # the teacher's outputs per (sample, view) under augmentation (kdrun.teachers.view_cache)


@dataclass
class PreparedRun:
    """A run up to its student stage: planned, its teacher obtained and its outputs cached. A packed sweep
    (kdrun.jobs.packing) prepares each member like this, trains the members together and finishes each."""

    cfg: DictConfig
    plan: RunPlan
    teacher: TeacherResult
    cached: TeacherOutputs | None
    output_dir: Path
    times: dict  # stage wall times; a packed member's student/wall_time_s is its pack's
    prepare_seconds: float  # preflight, teacher and its outputs


def run(cfg: DictConfig, output_dir: Path) -> dict:
    """Run one experiment and return its metrics (also written to output_dir/metrics.json)."""
    prepared = prepare(cfg, output_dir)
    with _timed(prepared.times, "student/wall_time_s"):
        student = train_student(cfg, prepared.plan, prepared.teacher, prepared.cached, output_dir)
    return finish(prepared, student)


def prepare(cfg: DictConfig, output_dir: Path) -> PreparedRun:
    """Preflight, then the teacher and its cached outputs: everything before the student trains."""
    started = time.perf_counter()
    quiet_framework_chatter()
    plan = preflight(cfg, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0 and not any(resume.path for resume in plan.resume.values()):
        remember_configuration(output_dir)  # the configuration this run's checkpoints will belong to
    times: dict[str, float] = {}
    with _timed(times, "teacher/wall_time_s"):
        teacher = obtain_teacher(cfg, plan.splits, output_dir, plan.group, plan.resume["teacher"],
                                 plan.checked.divergence, plan.teacher_plan, plan.fast_path, plan.teacher_owner,
                                 plan.ready_teacher)
    with _timed(times, "teacher/outputs_wall_time_s"):
        cached = cache_teacher_outputs(cfg, plan, teacher)
    return PreparedRun(cfg, plan, teacher, cached, output_dir, times, time.perf_counter() - started)


def finish(prepared: PreparedRun, student: StageResult) -> dict:
    """After the student stage (`plan.student.model` holds its trained weights): evaluation and the outputs."""
    started = time.perf_counter()
    cfg, plan, output_dir = prepared.cfg, prepared.plan, prepared.output_dir
    if student.rank != 0:
        return student.metrics  # rank 0 alone evaluates the whole splits and writes every output
    with _timed(prepared.times, "evaluate/wall_time_s"):
        metrics = evaluate_run(plan, prepared.teacher, output_dir)
    metrics.update({f"student/{key}": value for key, value in student.metrics.items() if key.startswith("val/")})
    metrics.update(run_record(cfg, plan, prepared.teacher, prepared.cached, student))
    metrics.update(student.record)
    # the run's own time (a packed member does not count the other members' preparation and evaluation)
    own = prepared.prepare_seconds + prepared.times.get("student/wall_time_s", 0.0) + (time.perf_counter() - started)
    metrics.update({**prepared.times, "wall_time_s": own})
    write_outputs(cfg, plan, metrics, output_dir, student.logger)
    return metrics


def preflight(cfg: DictConfig, output_dir: Path) -> RunPlan:
    """Check every setting of both stages and decide what the run will do; nothing trains or is written."""
    checked = validate_config(cfg)
    check_distributed_support(cfg)  # e.g. DDP inside a basic-launcher sweep
    splits = DataSplits.build(cfg.data, checked.seeds)
    splits.world_size = training_world_size(cfg.trainer)  # step budgets count one rank's batches
    check_vocabulary(cfg, splits)
    fixed = cfg.teacher.get("oracle") or cfg.teacher.get("outputs") is not None  # no teacher network at all
    trains_teacher = not fixed and cfg.teacher.checkpoint is None
    teacher_budget = teacher_plan(cfg, splits) if trains_teacher else None
    for stage in ("teacher", "student") if trains_teacher else ("student",):
        check_trainer_settings(trainer_arguments(cfg, stage))
    # the teacher's architecture (and the layers feature losses name) before the student is initialised;
    # an oracle or imported teacher is the run's teacher already (a checkpoint that does not fit fails here)
    teacher_architecture = None if fixed else build_model(
        cfg.teacher.model, splits.source.input_shape, "teacher")
    ready = fixed_teacher(cfg, splits, output_dir, checked.oracle_options, teacher_architecture)
    owner = teacher_owner(cfg, splits) if trains_teacher else None
    if owner is not None:
        TeacherStore(cfg.teacher.store).check_writable(owner.digest)
    student, cache_outputs, view_cache = plan_student(cfg, checked, splits, teacher_reference(cfg, owner, ready),
                                                      output_dir)
    check_feature_layers(student.schedule.losses, student.model, teacher_architecture)
    check_model_inputs(cfg, splits.source, {"teacher": teacher_architecture, "student": student.model})
    if splits.source.task == "next_token":
        # a prompt the vocabulary cannot spell fails now, not after training
        for index, prompt in enumerate(checked.evaluation.sample_prompts):
            try:
                splits.source.tokenizer.encode(prompt)
            except ConfigError as error:
                raise ConfigError(f"evaluation.sample_prompts[{index}]={prompt!r}: {error}") from None
    resume = plan_resume(output_dir, {"teacher": owner, "student": student.owner}, cfg.get("resume", "auto"))
    student.resume = resume["student"]
    return RunPlan(checked, splits, teacher_budget, student, use_fast_path(cfg.data, splits), cache_outputs, owner,
                   ready, resume, _run_group(output_dir), view_cache)


def check_vocabulary(cfg, splits: DataSplits) -> None:
    """A language model's teacher and student predict the source's tokens: both output its vocabulary."""
    if splits.source.task != "next_token":
        return
    for role in ("teacher", "student"):
        if cfg[role].get("oracle") or "model" not in cfg[role]:
            continue
        classes = cfg[role].model.get("num_classes")
        if classes != splits.num_classes:
            raise ConfigError(
                f"{role}.model.num_classes={classes} but data.source={cfg.data.source} has a vocabulary of "
                f"{splits.num_classes} tokens (data.tokenizer={cfg.data.get('tokenizer', 'char')}); teacher and student "
                f"share the source's tokenizer; allowed: {splits.num_classes} (${{data.num_classes}})")


def plan_student(cfg, checked: CheckedConfig, splits: DataSplits, teacher: dict,
                 output_dir: Path) -> tuple[Stage, bool, bool]:
    """The student stage (its budget and schedules against the data, its initial weights, its analyses),
    whether it reads the teacher's outputs from the tables, and whether from the view cache."""
    budget = stage_budget(cfg.student, splits, "student")
    lr_plan = plan_steps(cfg.student.lr_schedule, budget.steps_per_epoch, budget.total_steps, "student")
    schedule = LossSchedule(checked.phases, budget.total_steps, cfg.schedule.get("window_align", "start"),
                            losses=checked.losses)
    if splits.student_labels_withheld:
        needing = [loss.name for loss in schedule.losses if loss.needs_labels]
        if needing:
            raise ConfigError(
                f"data.split=distill4 withholds labels from the student, but loss {', '.join(needing)} uses them; "
                f"allowed: losses without a label term (e.g. loss=kd loss.alpha=1.0)")
    # augmentation with a finite view set: the view cache; else the tables where valid (true where neither applies fails)
    view_cache = view_cache_applies(cfg, schedule, splits)
    cache_outputs = False if view_cache else check_cache_config(cfg, schedule, splits)
    torch.manual_seed(student_init_seed(cfg, checked.seeds))
    model = build_model(cfg.student.model, splits.source.input_shape, role="student")
    analysis = analysis_callbacks(cfg, splits, model, output_dir, budget.total_steps, checked.analysis)
    owner = StageOwner.of("student", student_identity(cfg, splits, checked.seeds, teacher, cache_outputs, view_cache))
    return Stage("student", model, schedule, cfg.student, budget, lr_plan, checked.seeds.data_order, owner,
                 teacher_precision=cfg.teacher.get("precision", "float32"), callbacks=tuple(analysis)), \
        cache_outputs, view_cache


def cache_teacher_outputs(cfg, plan: RunPlan, teacher: TeacherResult) -> TeacherOutputs | None:
    """The teacher's logits, cached for every student of the teacher (or None: it runs online)."""
    if plan.view_cache:
        views = open_view_cache(cfg, plan.splits, teacher)
        cached = TeacherOutputs({}, "store", False, views) if views is not None else None
    else:
        cached = teacher_outputs(cfg, plan.splits, teacher, plan.cache_outputs)
    log.info("teacher: %s (%s)", teacher.source, f"key {teacher.key}" if teacher.key else teacher.path)
    if cached is not None and cached.views is not None:
        views = cached.views
        log.info("teacher outputs: view cache of %d views per sample, %.1f%% filled%s; data path: DataLoader",
                 views.views, 100 * views.fill_ratio(), "" if views.writable else " (read-only: nothing is added)")
        return cached
    log.info("teacher outputs: %s%s; data path: %s", "cached" if cached else "online",
             f" ({'computed' if cached.computed else 'reused'}, kept in the {cached.where})" if cached else "",
             "in-memory" if plan.fast_path else "DataLoader")
    return cached


def train_student(cfg, plan: RunPlan, teacher: TeacherResult, cached: TeacherOutputs | None,
                  output_dir: Path) -> StageResult:
    """Distil the student under the loss schedule, from the teacher or its cached logits."""
    plan.student.teacher = teacher.model
    plan.student.teacher_outputs = cached.logits if cached else None
    if cached is not None and cached.views is not None:  # the student's views, drawn as its loader draws them
        plan.student.view_cache = cached.views
        plan.student.view_stream = plan.splits.view_stream(plan.student.order_seed)
    try:
        return train_stage(cfg, plan.splits, plan.student, output_dir, plan.group, plan.fast_path,
                           plan.checked.divergence)
    finally:
        if plan.student.view_cache is not None:
            plan.student.view_cache.close()  # its read-only maps still answer the fill ratio


def evaluate_run(plan: RunPlan, teacher: TeacherResult, output_dir: Path) -> dict:
    """Teacher and student on the whole splits: metrics, predictions.npz and per_sample.csv."""
    splits = plan.splits
    loaders = {"train": splits.loader("train", splits.student_indices), "test": splits.loader("test")}
    source = splits.source
    per_sample = {"train": {"clean_label": source.train.targets, "noise_mask": splits.noise_mask}}
    if source.task == "next_token":  # windows: no class label to clean, no label noise
        per_sample = {split: {"probe_mask": mask} for split, mask in (source.probe_masks or {}).items()}
    for split in ("train", "test"):
        probs = source.split(split).oracle_probs
        if probs is not None:  # synthetic sources: p*(y|x) beside each sample's logits
            per_sample.setdefault(split, {})["oracle_probs"] = probs
    metrics = evaluate(teacher.model, plan.student.model, loaders, output_dir, per_sample, plan.checked.evaluation,
                       probe_tokens(source))
    metrics.update(bayes_metrics(splits, plan.checked.evaluation))
    write_per_sample_csv(output_dir)
    if source.task == "next_token" and plan.checked.evaluation.sample_tokens > 0:
        write_samples(output_dir, {"teacher": teacher.model, "student": plan.student.model}, source,
                      plan.checked.evaluation, plan.checked.seeds.init)
    return metrics


def probe_tokens(source) -> tuple[int, int] | None:
    """(expected, adversarial) token ids of a text source's completion probe (data.corruption), else None."""
    if source.probe is None or source.probe_masks is None:
        return None
    return tuple(source.tokenizer.encode(character)[0] for character in (source.probe.expected,
                                                                          source.probe.adversarial))


def run_record(cfg, plan: RunPlan, teacher: TeacherResult, cached: TeacherOutputs | None,
               student: StageResult) -> dict:
    """What the run was: sizes, sources, modes, seeds and checksums (metrics.json beside the metrics)."""
    splits, seeds = plan.splits, plan.checked.seeds
    return {
        "teacher/train_size": len(splits.teacher_indices),
        "student/train_size": len(splits.student_indices),
        "data/kappa": len(splits.student_indices) / len(splits.teacher_indices),
        "data/noisy_labels": int(splits.noise_mask.sum()),
        "teacher/params": count_parameters(teacher.model),
        "student/params": count_parameters(plan.student.model),
        "teacher/source": teacher.source,
        "teacher/key": teacher.key,
        "teacher/outputs": cache_mode(cfg, cached is not None, bool(cached and cached.views)),  # cached float16 ...
        **view_cache_record(cached.views if cached else None),
        "teacher/outputs_cache": cached.where if cached else None,
        "teacher/outputs_computed": bool(cached and cached.computed),
        "teacher/precision": plan.student.teacher_precision,
        "data/fast_path": plan.fast_path,
        "student/steps": plan.student.budget.total_steps,
        "student/init_checksum": student.module.init_checksum,
        "student/batch_order_checksum": student.module.batch_order.hexdigest()[:16],
        "student/resumed_epochs": plan.resume["student"].epochs_done,
        "seeds/init": seeds.init, "seeds/data_order": seeds.data_order, "seeds/subset": seeds.subset,
    }


def write_outputs(cfg, plan: RunPlan, metrics: dict, output_dir: Path, logger) -> None:
    """student.pt, then metrics.json (atomically: its presence marks a finished run), the logger's
    figures and summary, and the console summary."""
    torch_save(plan.student.model.state_dict(), output_dir / "student.pt")
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    if is_wandb(logger):  # the dashboard shows the run's own figures beside its curves
        log_run_figures(logger, output_dir)
    close_logger(logger, summary=metrics)
    _print_summary(cfg, metrics, output_dir)


class _timed:
    """`with _timed(times, key):` records the block's wall time under `key`."""

    def __init__(self, times: dict, key: str):
        self.times, self.key = times, key

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.key] = time.perf_counter() - self.start


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


def teacher_name(cfg) -> str:
    return cfg.teacher.get("oracle") or ("outputs" if cfg.teacher.get("outputs") is not None else cfg.teacher.model.name)


def _print_summary(cfg, metrics: dict, output_dir: Path) -> None:
    teacher_note = f"{metrics['teacher/source']}" + (f", key {metrics['teacher/key']}" if metrics["teacher/key"] else "")
    lines = [
        f"done in {metrics['wall_time_s']:.1f} s -> {output_dir}",
        f"  teacher  {teacher_name(cfg):<6} {metrics['teacher/params']:>9,} params  "
        f"N={metrics['teacher/train_size']:<6} test acc {metrics['teacher/test/acc']:.4f}  nll {metrics['teacher/test/nll']:.4f}"
        f"  ({teacher_note})",
        f"  student  {cfg.student.model.name:<6} {metrics['student/params']:>9,} params  "
        f"M={metrics['student/train_size']:<6} test acc {metrics['student/test/acc']:.4f}  nll {metrics['student/test/nll']:.4f}"
        f"  (loss {cfg.loss.name}, schedule {cfg.schedule.name})",
        f"  student-teacher agreement  test {metrics['student/test/agreement']:.4f}  "
        f"train {metrics['student/train/agreement']:.4f}",
        f"  teacher outputs  {metrics.get('teacher/outputs', 'online')}" + (
            f", {100 * metrics['teacher/view_cache_fill']:.1f}% of the views filled ({metrics['teacher/view_cache_hits']:,} "
            f"read, {metrics['teacher/view_cache_computed']:,} computed by this run)"
            if "teacher/view_cache_fill" in metrics else ""),
    ]
    for line in lines:
        log.info(line)
