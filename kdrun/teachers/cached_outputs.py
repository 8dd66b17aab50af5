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

Logits are stored as float32 by default: 4 bytes x classes per sample (20 MB for CIFAR-100's
50k x 100), and cached and online losses then agree to float32 rounding. `teacher.cache_dtype=float16`
halves that (a KD loss moves by ~1e-4 relative; tests/teachers/test_cached_outputs.py measures both).
A language model's sample is a window: its row holds block_size x vocabulary logits (TinyShakespeare,
256-token windows: 4,357 windows x 256 x 65 x 4 bytes = 290 MB). `auto` caches only while the
tables fit `teacher.cache_max_mb`; beyond it the teacher runs online and the run says so.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdrun.atomic_files import torch_save
from kdrun.data.batches import input_digest, to_device
from kdrun.config.checks import auto_switch, auto_switch_applies, check_choice, check_number, check_whole_number
from kdrun.errors import ConfigError
from kdrun.teachers.top_k import compress as top_k_compress
from kdrun.data.transforms import augments
from kdrun.engine.distributed import process_rank
from kdrun.losses.interface import FeatureLoss
from kdrun.engine.teacher_forward import teacher_forward
from kdrun.teachers.outputs_file import OutputsTeacher
from kdrun.teachers.store import StoreNotWritable, TeacherStore, not_writable

log = logging.getLogger("kdrun")

CACHE_FILE = "teacher_logits.pt"
# 2: the file records the SHA-256 of its logits; 3: and the teacher's precision; 4: the dtype and top-k options,
# tables shaped (samples, *output shape)
CACHE_FORMAT = 4
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
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
    views: object = None  # under augmentation with a finite view set: the ViewCache (kdrun.teachers.view_cache)


def cache_dtype(cfg) -> torch.dtype:
    name = check_choice(cfg.teacher.get("cache_dtype", "float32"), "teacher.cache_dtype", tuple(CACHE_DTYPES),
                        meaning="the stored teacher logits (float16 halves their memory)")
    return CACHE_DTYPES[name]


def cache_top_k(cfg, splits=None) -> int | None:
    """`teacher.cache_top_k`: null (every class's logit) or k < the number of classes (kdrun.teachers.top_k)."""
    k = check_whole_number(cfg.teacher.get("cache_top_k"), "teacher.cache_top_k", minimum=1, allow_none=True,
                           meaning="cache the k most probable classes and one bucket for the rest (an approximation)")
    if k is not None and splits is not None and k >= splits.num_classes:
        raise ConfigError(f"teacher.cache_top_k={k} keeps every one of the {splits.num_classes} classes; allowed: "
                          f"1..{splits.num_classes - 1}, or null for the exact logits")
    return k


def cache_megabytes(cfg, splits) -> float:
    """The size of the cached tables: every sample of each cached split, one row per prediction."""
    predictions = splits.source.input_shape[0] if splits.source.task == "next_token" else 1
    value_bytes = torch.empty((), dtype=cache_dtype(cfg)).element_size()
    k = cache_top_k(cfg, splits)
    row = splits.num_classes * value_bytes if k is None else k * (value_bytes + 4) + value_bytes
    samples = sum(len(splits.source.split(split)) for split in CACHED_SPLITS)
    return samples * predictions * row / 2**20


def cache_obstacle(cfg, schedule) -> str | None:
    """Why cached outputs would be wrong for this run, or None when they are valid."""
    if augments(cfg.data):
        return (f"data.augment={cfg.data.augment} gives the student random inputs, so logits cached by "
                f"sample index would be stale (data.view_pool=V pre-draws V views per sample, whose outputs the "
                f"view cache keeps)")
    feature_losses = [loss.name for loss in schedule.losses if isinstance(loss, FeatureLoss)]
    if feature_losses:
        return f"loss {', '.join(feature_losses)} reads the teacher's intermediate features, not only its logits"
    return None


def over_budget(cfg, splits) -> str | None:
    """Why `auto` leaves valid cached outputs aside: tables larger than teacher.cache_max_mb, else None."""
    budget = check_number(cfg.teacher.get("cache_max_mb", 4096), "teacher.cache_max_mb", low=0,
                          meaning="auto caches the teacher's logits only while they fit this many MiB")
    size = cache_megabytes(cfg, splits)
    if size <= budget:
        return None
    return (f"the cached logits would take {size:,.0f} MiB, more than teacher.cache_max_mb={budget:g} "
            f"(raise it, set teacher.cache_dtype=float16 or cache_top_k, or teacher.cache_outputs=true)")


def check_cache_config(cfg, schedule, splits=None) -> bool:
    """Whether this run caches teacher outputs; ConfigError for `cache_outputs=true` where invalid.
    `auto` also leaves the teacher online when the tables would exceed teacher.cache_max_mb. A teacher
    known only through its outputs (teacher.outputs) is its tables: it cannot run online."""
    cache_dtype(cfg)
    cache_top_k(cfg, splits)
    if cfg.teacher.get("outputs") is not None:
        reason = cache_obstacle(cfg, schedule)
        if reason is not None or auto_switch(cfg.teacher, "cache_outputs", "teacher") == "false":
            raise ConfigError(f"teacher.outputs={cfg.teacher.outputs} gives the teacher's outputs per sample only, but "
                              f"{reason or 'teacher.cache_outputs=false asks to run it online'}; allowed: fixed "
                              f"student inputs, losses that read only the teacher's outputs, cache_outputs=auto/true")
        return True
    enabled = auto_switch_applies(cfg.teacher, "cache_outputs", "teacher", lambda: cache_obstacle(cfg, schedule),
                                  "needs fixed student inputs and losses that read only the teacher's logits")
    if enabled and splits is not None and str(cfg.teacher.get("cache_outputs", "auto")) == "auto":
        reason = over_budget(cfg, splits)
        if reason is not None:
            log.info("teacher outputs run online: %s", reason)
            return False
    return enabled


def teacher_outputs(cfg, splits, teacher, enabled: bool) -> TeacherOutputs | None:
    """The run's cached teacher logits, or None when the teacher runs online (`enabled`: check_cache_config)."""
    if not enabled:
        return None
    precision, dtype, top_k = cfg.teacher.get("precision", "float32"), cache_dtype(cfg), cache_top_k(cfg, splits)

    def compute():
        return compute_logits(teacher.model, splits, compute_device(cfg), precision, dtype, top_k)

    if isinstance(teacher.model, OutputsTeacher):  # teacher.outputs: the file's tables are the cache
        return TeacherOutputs(stored_tables(teacher.model.tables, dtype, top_k), "file", False)

    if teacher.key is None:  # imported or oracle teacher: not in the store
        return TeacherOutputs(compute(), "run", True)
    entry = Path(teacher.path)
    path, expected = entry / CACHE_FILE, _cache_identity(splits, teacher, precision, dtype, top_k)
    cached, _ = _read(path, expected, quiet=True)  # what is wrong with it is said once, under the lock
    if cached is not None:
        return TeacherOutputs(cached, "store", False)
    if process_rank() > 0:
        # DDP: rank 0 alone writes store entries; the logits are a pure function of the teacher,
        # so another rank computes its own copy rather than waiting on rank 0's file
        return TeacherOutputs(compute(), "store", True)
    store = TeacherStore(entry.parent)
    try:
        lock = store.lock(teacher.key)
    except StoreNotWritable as error:
        log.warning("%s; the teacher's outputs are computed for this run only, not kept in the store", error.strerror)
        return TeacherOutputs(compute(), "run", True)
    try:
        cached, problem = _read(path, expected)  # written by a job that held the lock first
        if cached is not None:
            return TeacherOutputs(cached, "store", False)
        if problem is not None:
            store.quarantine_file(path, problem)
        logits = compute()
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


def stored_tables(tables: dict[str, torch.Tensor], dtype: torch.dtype, top_k: int | None) -> dict:
    """Per-split logits as the cache stores them: as `dtype`, or top-k tables (kdrun.teachers.top_k)."""
    return {split: table.to(dtype) if top_k is None else top_k_compress(table, top_k, dtype)
            for split, table in tables.items()}


@torch.inference_mode()
def compute_logits(model: nn.Module, splits, device: torch.device, precision: str = "float32",
                   dtype: torch.dtype = torch.float32, top_k: int | None = None) -> dict:
    """Logits of `model` (in eval mode, in `precision`: kdrun.engine.teacher_forward) on every sample of each
    cached split, by dataset index, stored as `dtype`: (samples, classes), or (windows, T, vocabulary); with
    `top_k`, each split's table is {values, indices, rest} (kdrun.teachers.top_k)."""
    global compute_count
    compute_count += 1
    was_training, home = model.training, device_of(model)
    model.eval().to(device)
    logits = {}
    try:
        for split in CACHED_SPLITS:
            loader = splits.loader(split, batch_size=COMPUTE_BATCH_SIZE)  # eval transform: the student's inputs
            table = None
            for x, _, index in loader:
                batch = teacher_forward(model, to_device(x, device), precision).cpu()
                parts = {"logits": batch.to(dtype)} if top_k is None else top_k_compress(batch, top_k, dtype)
                if table is None:  # one row per sample, shaped as the model's output for one sample
                    table = {name: torch.empty(len(loader.dataset), *part.shape[1:], dtype=part.dtype)
                             for name, part in parts.items()}
                for name, part in parts.items():
                    table[name][index] = part
            logits[split] = table["logits"] if top_k is None else table
    finally:
        model.to(home).train(was_training)
    return logits


def input_fingerprint(splits) -> str:
    """A digest of the first inputs of each split as the student sees them (catches changed transforms)."""
    digest = hashlib.sha256()
    for split in CACHED_SPLITS:
        x, _, _ = next(iter(splits.loader(split, batch_size=FINGERPRINT_SAMPLES)))
        input_digest(x, digest)
    return digest.hexdigest()[:20]


def _cache_identity(splits, teacher, precision: str, dtype: torch.dtype, top_k: int | None = None) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dtype": str(dtype),
        "top_k": top_k,
        "teacher_precision": precision,  # a cache made in another precision is recomputed, not reused
        "num_classes": splits.num_classes,
        "sizes": {split: len(splits.source.split(split)) for split in CACHED_SPLITS},
        "weights_sha256": teacher.meta.get("weights_sha256"),
        "inputs": input_fingerprint(splits),
    }


def logits_digest(logits: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the cached tables' values, split by split (what a reader checks them against)."""
    digest = hashlib.sha256()
    for split in sorted(logits):
        table = logits[split]
        for part, tensor in sorted(table.items()) if isinstance(table, dict) else [("", table)]:
            digest.update(f"{split}{part}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
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


def device_of(model: nn.Module) -> torch.device:
    """Where a model's tensors are (the CPU for a model without any)."""
    return next(iter([*model.parameters(), *model.buffers()]), torch.zeros(())).device


def compute_device(cfg) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    use_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if use_gpu else "cpu")
