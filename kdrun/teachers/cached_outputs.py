"""Cached teacher outputs: the frozen teacher's logits, computed once, looked up by dataset index.

A student's training step needs the teacher's logits on its batch. When the student's inputs
are deterministic (no augmentation) those logits are a fixed function of the dataset index,
so they are computed once over the whole training pool, the validation and the test split
and every student looks them up (`cache["train"][index]`) instead of running the teacher.

- Store teachers: the logits live in the store entry (`teacher_logits.pt`, written atomically
  under the entry's lock), so a sweep of students over one teacher computes them once. The
  entry key already covers the data config (normalisation, augmentation, splits); the file also
  records the split sizes, the teacher weights' SHA-256 and a fingerprint of the first inputs of
  each split, and is recomputed if any of them no longer matches. It records the SHA-256 of its
  own logits too, checked on every read: a file whose values were changed (even in place, at
  the same size) or that does not load is moved to the store's `.corrupt/` and recomputed, like
  a corrupt weights file. A read-only store without the file serves the teacher, and its logits
  are computed for the run alone.
- Imported (`teacher.checkpoint`) and oracle teachers: the logits are computed per run, in
  memory (a checkpoint may change under the same path; oracles are cheap to recompute). One
  pass over the pool costs about one online epoch, so this pays from the second epoch on.
- With augmentation, or losses that read the teacher's intermediate features, the teacher runs
  online. `teacher.cache_outputs`: auto (cache where valid) | true (cache, or say why not) | false.

Logits are stored as float32: 4 bytes x classes per sample (20 MB for CIFAR-100's 50k x 100),
and cached and online losses then agree to float32 rounding (float16 would move a KD loss by
~1e-4 relative; tests/teachers/test_cached_outputs.py measures both).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdrun.atomic_files import torch_save
from kdrun.config.checks import auto_switch_applies
from kdrun.data.transforms import augments
from kdrun.engine.distributed import process_rank
from kdrun.losses.interface import FeatureLoss
from kdrun.engine.teacher_forward import teacher_forward
from kdrun.teachers.store import StoreNotWritable, TeacherStore, not_writable

log = logging.getLogger("kdrun")

CACHE_FILE = "teacher_logits.pt"
CACHE_FORMAT = 3  # 2: the file records the SHA-256 of its logits; 3: and the teacher's precision
CACHE_DTYPE = torch.float32
CACHED_SPLITS = ("train", "val", "test")
FINGERPRINT_SAMPLES = 16
COMPUTE_BATCH_SIZE = 1024

# How many times this process computed teacher outputs (tests read it: a reuse must not compute).
compute_count = 0


@dataclass
class TeacherOutputs:
    """The teacher's logits per split, indexed by dataset index."""

    logits: dict[str, torch.Tensor]
    where: str  # "store" (in the teacher's store entry) or "run" (this run only)
    computed: bool  # computed by this run (False: read back from the store)


def cache_obstacle(cfg, schedule) -> str | None:
    """Why cached outputs would be wrong for this run, or None when they are valid."""
    if augments(cfg.data):
        return (f"data.augment={cfg.data.augment} gives the student random inputs, so logits cached by "
                f"sample index would be stale")
    feature_losses = [loss.name for loss in schedule.losses if isinstance(loss, FeatureLoss)]
    if feature_losses:
        return f"loss {', '.join(feature_losses)} reads the teacher's intermediate features, not only its logits"
    return None


def check_cache_config(cfg, schedule) -> bool:
    """Whether this run caches teacher outputs; ConfigError for `cache_outputs=true` where invalid."""
    return auto_switch_applies(cfg.teacher, "cache_outputs", "teacher", lambda: cache_obstacle(cfg, schedule),
                               "needs fixed student inputs and losses that read only the teacher's logits")


def teacher_outputs(cfg, splits, teacher, enabled: bool) -> TeacherOutputs | None:
    """The run's cached teacher logits, or None when the teacher runs online (`enabled`: check_cache_config)."""
    if not enabled:
        return None
    precision = cfg.teacher.get("precision", "float32")
    if teacher.key is None:  # imported or oracle teacher: not in the store
        return TeacherOutputs(compute_logits(teacher.model, splits, _compute_device(cfg), precision), "run", True)
    entry = Path(teacher.path)
    path, expected = entry / CACHE_FILE, _cache_identity(splits, teacher, precision)
    cached, _ = _read(path, expected, quiet=True)  # what is wrong with it is said once, under the lock
    if cached is not None:
        return TeacherOutputs(cached, "store", False)
    if process_rank() > 0:
        # DDP: rank 0 alone writes store entries; the logits are a pure function of the teacher,
        # so another rank computes its own copy rather than waiting on rank 0's file
        return TeacherOutputs(compute_logits(teacher.model, splits, _compute_device(cfg), precision), "store", True)
    store = TeacherStore(entry.parent)
    try:
        lock = store.lock(teacher.key)
    except StoreNotWritable as error:
        log.warning("%s; the teacher's outputs are computed for this run only, not kept in the store", error.strerror)
        return TeacherOutputs(compute_logits(teacher.model, splits, _compute_device(cfg), precision), "run", True)
    try:
        cached, problem = _read(path, expected)  # written by a job that held the lock first
        if cached is not None:
            return TeacherOutputs(cached, "store", False)
        if problem is not None:
            store.quarantine_file(path, problem)
        logits = compute_logits(teacher.model, splits, _compute_device(cfg), precision)
        try:
            torch_save({"identity": expected, "logits": logits, "logits_sha256": logits_digest(logits)}, path)
        except OSError as error:
            if not not_writable(error):
                raise
            log.warning("teacher store entry %s is not writable (%s); the teacher's outputs are computed for this "
                        "run only, not kept in the store", entry, error.strerror)
            return TeacherOutputs(logits, "run", True)
        return TeacherOutputs(logits, "store", True)
    finally:
        lock.release()


@torch.inference_mode()
def compute_logits(model: nn.Module, splits, device: torch.device, precision: str = "float32") -> dict[str, torch.Tensor]:
    """Logits of `model` (in eval mode, in `precision`: kdrun.engine.teacher_forward) on every sample of each
    cached split, by dataset index."""
    global compute_count
    compute_count += 1
    was_training, home = model.training, _device_of(model)
    model.eval().to(device)
    logits = {}
    try:
        for split in CACHED_SPLITS:
            loader = splits.loader(split, batch_size=COMPUTE_BATCH_SIZE)  # eval transform: the student's inputs
            table = torch.empty(len(loader.dataset), splits.num_classes, dtype=CACHE_DTYPE)
            for x, _, index in loader:
                table[index] = teacher_forward(model, x.to(device), precision).cpu().to(CACHE_DTYPE)
            logits[split] = table
    finally:
        model.to(home).train(was_training)
    return logits


def input_fingerprint(splits) -> str:
    """A digest of the first inputs of each split as the student sees them (catches changed transforms)."""
    digest = hashlib.sha256()
    for split in CACHED_SPLITS:
        x, _, _ = next(iter(splits.loader(split, batch_size=FINGERPRINT_SAMPLES)))
        digest.update(x.float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def _cache_identity(splits, teacher, precision: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dtype": str(CACHE_DTYPE),
        "teacher_precision": precision,  # a cache made in another precision is recomputed, not reused
        "num_classes": splits.num_classes,
        "sizes": {split: len(getattr(splits.source, split)) for split in CACHED_SPLITS},
        "weights_sha256": teacher.meta.get("weights_sha256"),
        "inputs": input_fingerprint(splits),
    }


def logits_digest(logits: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the cached tables' values, split by split (what a reader checks them against)."""
    digest = hashlib.sha256()
    for split in sorted(logits):
        digest.update(split.encode())
        digest.update(logits[split].contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read(path: Path, expected: dict, quiet: bool = False) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(the cached logits, None) when the file is intact and fits this run; (None, why it must be
    quarantined) for a damaged file; (None, None) when it is absent or was made for other inputs."""
    if not path.exists():
        return None, None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["identity"] != expected:  # an older format, other inputs or other weights: replaced
            if not quiet:
                log.warning("cached teacher outputs %s were computed for other inputs or weights; recomputing",
                            path)
            return None, None
        logits = payload["logits"]
        if payload["logits_sha256"] != logits_digest(logits):
            return None, "does not match its recorded SHA-256 (changed after it was written)"
    except Exception as error:  # an unreadable cache is recomputed, never trusted
        return None, f"is unreadable ({type(error).__name__}: {error})"
    return logits, None


def _device_of(model: nn.Module) -> torch.device:
    return next(iter([*model.parameters(), *model.buffers()]), torch.zeros(())).device


def _compute_device(cfg) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    use_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if use_gpu else "cpu")
