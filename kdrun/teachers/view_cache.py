"""The teacher's outputs per (sample, view) under augmentation with a finite view set, shared by every student.

With `data.augment=cifar_standard` each training sample gets one of a finite set of views per epoch
(kdrun.data.views). The frozen teacher's logits on a view are a fixed function of (sample index, view),
so they are kept in the teacher's store entry and looked up instead of running the teacher: a student
of a sweep runs the teacher only on views no earlier student (or prefill) has met, and never more often
than it would online. CIFAR-100 in float16: 50,000 x 162 x 100 x 2 bytes, about 1.6 GB on disk.

On disk (`<entry>/view_cache/<identity digest>/`):
- `meta.json`: what the table belongs to (teacher weights, view set, sizes, dtype, precision, inputs);
- `logits.bin`: rows of `classes` values, row (sample * views + view), created sparse at its full size;
- `digests.bin`: one 8-byte BLAKE2b digest per row (0: not computed yet).

Concurrency (several students of a sweep, on one machine or on several nodes of a shared filesystem):
rows are written with positioned writes (`os.pwrite`, never a writable shared memory map) under a
byte-range lock (`fcntl.lockf`, which NFS honours) on the digests of a block of `BLOCK_SAMPLES` samples;
a row's digest is written after its values, so a row becomes visible only once complete. Readers map
both files read-only. A row whose values do not match its digest (a torn or corrupted write, or a page
another node's write has not reached yet) is re-read under the lock and, if it still does not match,
recomputed and rewritten. A store that cannot be written serves the rows already there and computes the
rest for the run alone; without a cache there, the teacher runs online and the run says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdrun.config.checks import check_number
from kdrun.errors import ConfigError

log = logging.getLogger("kdrun")

CACHE_DIR = "view_cache"
FORMAT = 1
BLOCK_SAMPLES = 64  # samples whose rows share one lock
DIGEST_BYTES = 8
NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


def row_digest(row: bytes) -> int:
    """A row's BLAKE2b digest as a nonzero 64-bit number (0 marks a row not computed yet)."""
    value = int.from_bytes(hashlib.blake2b(row, digest_size=DIGEST_BYTES).digest(), "little")
    return value or 1


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Counters:
    """What the run's lookups found: rows read from the cache, rows computed by the teacher, rows recomputed
    because their digest did not match."""

    hits: int = 0
    computed: int = 0
    recomputed: int = 0
    written: int = 0


class ViewCache:
    """The table of one teacher's logits per (sample, view), opened read-only or for writing."""

    def __init__(self, folder: Path, samples: int, views: int, classes: int, dtype: torch.dtype, writable: bool):
        self.folder, self.samples, self.views, self.classes = Path(folder), int(samples), int(views), int(classes)
        self.dtype, self.np_dtype = dtype, NUMPY_DTYPES[dtype]
        self.row_bytes = self.classes * np.dtype(self.np_dtype).itemsize
        self.values = np.memmap(self.folder / "logits.bin", dtype=self.np_dtype, mode="r",
                                shape=(self.samples * self.views, self.classes))
        self.digests = np.memmap(self.folder / "digests.bin", dtype=np.uint64, mode="r",
                                 shape=(self.samples * self.views,))
        self.writable = writable
        mode = os.O_RDWR if writable else os.O_RDONLY  # positioned reads and writes; the maps stay read-only
        self._values_fd = os.open(self.folder / "logits.bin", mode)
        self._digests_fd = os.open(self.folder / "digests.bin", mode)
        self.counters = Counters()

    # --- creation --------------------------------------------------------------------------------

    @classmethod
    def open(cls, entry: Path, identity: dict, samples: int, views: int, classes: int, dtype: torch.dtype,
             writable: bool) -> "ViewCache | None":
        """The entry's table for `identity`: created (empty) if absent and `writable`, else None when absent."""
        folder = Path(entry) / CACHE_DIR / identity_digest(identity)
        if not (folder / "meta.json").exists():
            if not writable:
                return None
            cls._create(folder, identity, samples * views, classes, dtype)
        meta = json.loads((folder / "meta.json").read_text())
        if meta["identity"] != identity:  # a digest collision or a hand-edited folder: never trusted
            raise RuntimeError(f"{folder}/meta.json belongs to another teacher or view set")
        return cls(folder, samples, views, classes, dtype, writable)

    @staticmethod
    def _create(folder: Path, identity: dict, rows: int, classes: int, dtype: torch.dtype) -> None:
        """Write the empty table beside `folder` and rename it into place: a reader sees all of it or none;
        of two processes creating it at once, one rename wins and the other's copy is removed."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".creating-", dir=folder.parent))
        try:
            itemsize = np.dtype(NUMPY_DTYPES[dtype]).itemsize
            for name, size in (("logits.bin", rows * classes * itemsize), ("digests.bin", rows * DIGEST_BYTES)):
                with open(staging / name, "wb") as handle:
                    handle.truncate(size)  # sparse: disk is used as rows are filled
            (staging / "meta.json").write_text(json.dumps({"format": FORMAT, "identity": identity}, indent=2))
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder / "meta.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- lookups and writes ----------------------------------------------------------------------

    def _verified(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values of `rows`, mask of rows present and intact, mask of rows present but not matching)."""
        digests = np.asarray(self.digests[rows])
        values = np.asarray(self.values[rows])
        present = digests != 0
        intact = present.copy()
        for position in np.flatnonzero(present):
            intact[position] = row_digest(values[position].tobytes()) == int(digests[position])
        return values, intact, present & ~intact

    def lookup(self, index: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits as stored, found) for samples `index` in views `views` (CPU int64): rows not found hold zeros."""
        rows = self._rows(index, views)
        values, intact, damaged = self._verified(rows)
        if damaged.any():  # re-read under the lock: a write in flight or a stale page of a shared filesystem
            for position in np.flatnonzero(damaged):
                value = self._locked_read(int(rows[position]))
                if value is not None:
                    values[position], intact[position] = value, True
                else:
                    self.counters.recomputed += 1
        self.counters.hits += int(intact.sum())
        values = np.where(intact[:, None], values, 0)
        return torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(intact)

    def store(self, index: torch.Tensor, views: torch.Tensor, logits: torch.Tensor) -> None:
        """Write the rows (logits in the table's dtype, on the CPU), block by block under the block's lock."""
        if not self.writable:
            return
        rows = self._rows(index, views)
        values = logits.to(self.dtype).contiguous().numpy()
        blocks = rows // (self.views * BLOCK_SAMPLES)
        for block in np.unique(blocks):
            chosen = np.flatnonzero(blocks == block)
            with self._lock(int(block)):
                for position in chosen:
                    row = int(rows[position])
                    data = values[position].tobytes()
                    current = os.pread(self._digests_fd, DIGEST_BYTES, row * DIGEST_BYTES)
                    if int.from_bytes(current, "little") == row_digest(self._pread_row(row)):
                        continue  # another student filled it first
                    os.pwrite(self._values_fd, data, row * self.row_bytes)
                    # the digest last: the row counts as present only once its values are complete
                    os.pwrite(self._digests_fd, row_digest(data).to_bytes(DIGEST_BYTES, "little"), row * DIGEST_BYTES)
                    self.counters.written += 1

    def teacher_logits(self, x, index: torch.Tensor, views: torch.Tensor, compute: Callable[[object], torch.Tensor],
                       device: torch.device | None = None) -> torch.Tensor:
        """The teacher's logits on a batch of views (float32, on `device`, default index's): cached rows are read,
        the rest computed by `compute(x_subset)` and written. Both come out rounded to the table's dtype, so a row
        gives the same value whether this run or an earlier one computed it. The table is read on the host: pass
        host `index` and `views` (a training step copies the batch's indices once) and the batch's `device`."""
        device = device or index.device
        index, views = index.cpu(), views.cpu()  # no-ops for host tensors
        found_values, found = self.lookup(index, views)
        result = found_values.to(device=device, dtype=torch.float32)
        missing = ~found
        if missing.any():
            missing_device = missing.to(device)
            subset = x[missing_device] if isinstance(x, torch.Tensor) else [x[i] for i in np.flatnonzero(missing)]
            computed = compute(subset).to(self.dtype)
            self.counters.computed += int(missing.sum())
            self.store(index[missing], views[missing], computed.cpu())
            result[missing_device] = computed.float()
        return result

    def fill_ratio(self) -> float:
        """The share of (sample, view) rows present in the table."""
        return float(np.count_nonzero(np.asarray(self.digests))) / max(len(self.digests), 1)

    def close(self) -> None:
        for fd in (self._values_fd, self._digests_fd):
            if fd is not None:
                os.close(fd)
        self._values_fd = self._digests_fd = None

    # --- helpers ---------------------------------------------------------------------------------

    def _rows(self, index: torch.Tensor, views: torch.Tensor) -> np.ndarray:
        index, views = index.numpy().astype(np.int64), views.numpy().astype(np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.samples):
            raise IndexError(f"sample index outside 0..{self.samples - 1}")
        return index * self.views + views

    def _pread_row(self, row: int) -> bytes:
        return os.pread(self._values_fd, self.row_bytes, row * self.row_bytes)

    def _locked_read(self, row: int) -> np.ndarray | None:
        """The row read afresh under its block's lock, or None when it still does not match its digest."""
        with self._lock(row // (self.views * BLOCK_SAMPLES), shared=not self.writable):
            data = self._pread_row(row)
            digest = int.from_bytes(os.pread(self._digests_fd, DIGEST_BYTES, row * DIGEST_BYTES), "little")
        if digest == 0 or row_digest(data) != digest:
            return None
        return np.frombuffer(data, dtype=self.np_dtype).copy()

    def _lock(self, block: int, shared: bool = False):
        return _RangeLock(self._digests_fd, block * self.views * BLOCK_SAMPLES * DIGEST_BYTES,
                          self.views * BLOCK_SAMPLES * DIGEST_BYTES, shared)


class _RangeLock:
    """An fcntl byte-range lock on the digests of one block: exclusive for writers, shared for readers."""

    def __init__(self, fd: int, start: int, length: int, shared: bool):
        self.fd, self.start, self.length, self.shared = fd, start, length, shared

    def __enter__(self):
        fcntl.lockf(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX, self.length, self.start, os.SEEK_SET)
        return self

    def __exit__(self, *exc):
        fcntl.lockf(self.fd, fcntl.LOCK_UN, self.length, self.start, os.SEEK_SET)


def megabytes(samples: int, views: int, classes: int, dtype: torch.dtype) -> float:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return samples * views * (classes * itemsize + DIGEST_BYTES) / 2**20


def check_view_cache_budget(teacher) -> float:
    """`teacher.view_cache_max_gb`, checked for every run (validate_config), whether or not it augments."""
    return check_number(teacher.get("view_cache_max_gb", 16), "teacher.view_cache_max_gb", low=0,
                        meaning="GiB of disk the view cache may take in the teacher's store entry")


def check_budget(cfg, size_mb: float) -> str | None:
    """Why `auto` leaves the view cache aside (larger than teacher.view_cache_max_gb), else None."""
    budget = check_view_cache_budget(cfg.teacher)
    if size_mb <= budget * 1024:
        return None
    return (f"the view cache would take {size_mb / 1024:,.1f} GiB, more than teacher.view_cache_max_gb={budget:g} "
            f"(raise it, set teacher.cache_dtype=float16, or teacher.cache_outputs=true)")


def view_cache_obstacle(cfg, losses, splits) -> str | None:
    """Why the student would not read the teacher's outputs from the view cache, or None when it would
    (`teacher.cache_outputs`: auto picks it where the student's augmentation has a view set and the cache fits
    teacher.view_cache_max_gb; true insists, and fails where the cache cannot serve the run)."""
    from kdrun.config.checks import auto_switch
    from kdrun.data.transforms import augments
    from kdrun.losses.interface import FeatureLoss
    from kdrun.teachers.cached_outputs import cache_dtype

    mode = auto_switch(cfg.teacher, "cache_outputs", "teacher")
    if mode == "false":
        return "teacher.cache_outputs=false"
    if not augments(cfg.data):
        return "without augmentation the teacher's outputs are cached per sample (kdrun.teachers.cached_outputs)"
    if splits.views is None:
        return (f"data.augment={cfg.data.augment} draws its parameters from a continuum; data.view_pool=V pre-draws "
                f"V views per sample, whose outputs can be cached")
    if cfg.teacher.get("outputs") is not None:
        return "teacher.outputs imports the teacher's outputs"
    feature_losses = [loss.name for loss in losses if isinstance(loss, FeatureLoss)]
    reason = None
    if feature_losses:
        reason = f"loss {', '.join(feature_losses)} reads the teacher's intermediate features, not only its logits"
    elif cfg.teacher.get("checkpoint") is not None or cfg.teacher.get("oracle"):
        reason = ("an imported or oracle teacher has no store entry to keep the view cache in "
                  "(teacher.checkpoint / teacher.oracle)")
    elif cfg.teacher.get("cache_top_k") is not None:
        reason = f"teacher.cache_top_k={cfg.teacher.cache_top_k} applies to the tables, not to the view cache"
    if reason is not None:
        if mode == "true":
            raise ConfigError(f"teacher.cache_outputs=true caches the teacher's outputs per view under "
                              f"data.augment={cfg.data.augment}, but {reason}; allowed: teacher.cache_outputs=auto "
                              f"or false")
        return reason
    if mode == "auto":
        size = megabytes(len(splits.source.train), splits.views.count, splits.num_classes, cache_dtype(cfg))
        return check_budget(cfg, size)
    check_view_cache_budget(cfg.teacher)  # the value is still checked when true overrides it
    return None


def view_cache_applies(cfg, schedule, splits) -> bool:
    """Whether the student reads the teacher's outputs from the view cache (view_cache_obstacle)."""
    reason = view_cache_obstacle(cfg, schedule.losses, splits)
    if reason is not None and splits.views is not None and reason != "teacher.cache_outputs=false":
        log.info("teacher outputs run online: %s", reason)
    return reason is None


FINGERPRINT_SAMPLES = 8


def view_fingerprint(splits) -> str:
    """A digest of the first training samples' first and last views as the teacher reads them (catches a
    changed normalisation or decoding under the same view set)."""
    from kdrun.data.batches import input_digest

    digest = hashlib.sha256()
    dataset = splits.source.train.dataset
    for index in range(min(FINGERPRINT_SAMPLES, len(dataset))):
        image, _ = dataset[index]
        for view in (0, splits.views.count - 1):
            x = splits.views.apply(image, view, index)
            input_digest(splits.eval_transform(x) if splits.eval_transform is not None else x, digest)
    return digest.hexdigest()[:20]


def cache_identity(cfg, splits, teacher) -> dict:
    from kdrun.teachers.cached_outputs import cache_dtype

    return {
        "format": FORMAT,
        "weights_sha256": teacher.meta.get("weights_sha256"),
        "views": splits.views.describe(),
        "samples": len(splits.source.train),
        "num_classes": splits.num_classes,
        "dtype": str(cache_dtype(cfg)),
        "teacher_precision": cfg.teacher.get("precision", "float32"),
        "inputs": view_fingerprint(splits),
    }


def open_view_cache(cfg, splits, teacher) -> ViewCache | None:
    """The view cache of the teacher's store entry, created if absent; read-only where the store cannot be
    written; None (the teacher runs online) when a read-only store has none."""
    from kdrun.teachers.cached_outputs import cache_dtype

    arguments = (Path(teacher.path), cache_identity(cfg, splits, teacher), len(splits.source.train),
                 splits.views.count, splits.num_classes, cache_dtype(cfg))
    from kdrun.teachers.store import not_writable

    try:
        return ViewCache.open(*arguments, writable=True)
    except OSError as error:
        if not not_writable(error):
            raise
        cache = ViewCache.open(*arguments, writable=False)
        if cache is None:
            log.warning("teacher store entry %s is not writable (%s) and holds no view cache; the teacher runs "
                        "online", teacher.path, error.strerror)
        else:
            log.warning("teacher store entry %s is not writable (%s); the view cache is read, and views it lacks "
                        "are computed for this run only", teacher.path, error.strerror)
        return cache


def view_cache_record(cache: ViewCache | None) -> dict:
    """What metrics.json says of the view cache: its fill ratio after the run, and what the run's lookups found."""
    if cache is None:
        return {}
    counters = cache.counters
    return {"teacher/view_cache_fill": cache.fill_ratio(), "teacher/view_cache_hits": counters.hits,
            "teacher/view_cache_computed": counters.computed, "teacher/view_cache_recomputed": counters.recomputed,
            "teacher/view_cache_written": counters.written, "teacher/view_cache_writable": cache.writable}
