"""What the student's training depends on, as a plain dict that is hashed: what a student checkpoint
belongs to (kdrun.engine.resume), so a run resumes a checkpoint only when its own identity matches.
The teacher's counterpart is its store key (kdrun.teachers.identity)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from kdrun.atomic_files import file_sha256
from kdrun.engine.recipes import RECIPE_KEYS
from kdrun.engine.resume import StageOwner
from kdrun.engine.trainer import resolve_precision
from kdrun.models.hf_files import directory_digest, pretrained_files

# Data keys that say where files live or how batches are fetched, never what is trained on
# (the in-memory path gives the DataLoader's batches bit for bit).
LOCATION_DATA_KEYS = {"num_workers", "root", "download", "verify_checksums", "fast_path"}
# Keys that enter the identity only when set, so identities from before they existed stay the same.
UNSET_DATA_KEYS = {"view_pool": None, "view_pool_seed": 0}


def teacher_reference(cfg: DictConfig, owner: StageOwner | None, ready=None) -> dict:
    """Which teacher the student distils from: its store key, the imported file's SHA-256, or the oracle."""
    if owner is not None:
        return {"store_key": owner.digest}
    if cfg.teacher.get("outputs") is not None:
        digest = ready.meta.get("outputs_sha256") if ready is not None else None
        return {"outputs_sha256": digest or file_sha256(Path(str(cfg.teacher.outputs)))}
    if cfg.teacher.checkpoint is not None:
        digest = ready.meta.get("checkpoint_sha256") if ready is not None else None
        checkpoint = Path(str(cfg.teacher.checkpoint))
        return {"checkpoint_sha256": digest or (directory_digest(checkpoint) if checkpoint.is_dir()
                                                else file_sha256(checkpoint))}
    return {"oracle": cfg.teacher.oracle, "options": OmegaConf.to_container(cfg.teacher.oracle_options, resolve=True)}


def student_identity(cfg: DictConfig, splits, seeds, teacher: dict, cache_outputs: bool,
                     view_cache: bool = False) -> dict:
    """Everything that determines the student's training: data and kappa subset, seeds, model, recipe with
    its budget, loss, schedule, teacher (and its precision), precision. Not the logger, evaluation,
    analysis, divergence or output settings, which change no weight."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    student = OmegaConf.to_container(cfg.student, resolve=True)
    identity = {
        "data": {key: value for key, value in data.items()
                 if key not in LOCATION_DATA_KEYS and not (key in UNSET_DATA_KEYS and value == UNSET_DATA_KEYS[key])},
        "student_indices_sha256": hashlib.sha256(
            np.ascontiguousarray(splits.student_indices, dtype=np.int64).tobytes()).hexdigest(),
        "seeds": {"init": seeds.init, "data_order": seeds.data_order, "subset": seeds.subset},
        "model": student["model"],
        "init": student.get("init", "own"),
        "recipe": {key: student.get(key) for key in RECIPE_KEYS},
        "loss": OmegaConf.to_container(cfg.loss, resolve=True),
        "schedule": OmegaConf.to_container(cfg.schedule, resolve=True),
        "teacher": {**teacher, "precision": cfg.teacher.get("precision", "float32")},  # teacher_reference
        "teacher_outputs": cache_mode(cfg, cache_outputs, view_cache),
        "precision": resolve_precision(cfg.trainer.get("precision")),
        "trainer_gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
    }
    files = pretrained_files(cfg.student.model)  # pretrained weights and tokenizers read from directories
    if files:
        identity["model_files"] = files
    return identity


def cache_mode(cfg, cache_outputs: bool, view_cache: bool = False) -> str:
    """online | cached | cached float16 | cached top-8 | view cache | view cache float16: float16 and top-k
    tables give the student other (rounded or approximated) targets; an exact float32 cache keeps the plain name."""
    dtype, top_k = cfg.teacher.get("cache_dtype", "float32"), cfg.teacher.get("cache_top_k")
    if view_cache:
        return "view cache" + (f" {dtype}" if dtype != "float32" else "")
    if not cache_outputs:
        return "online"
    return " ".join(["cached", *([dtype] if dtype != "float32" else []), *([f"top-{top_k}"] if top_k else [])])
