"""What determines a trained teacher: its identity, hashed into its key in the store (kdrun.teachers.store),
which is also what the teacher stage's checkpoints belong to (kdrun.engine.resume)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from kdrun.engine.recipes import RECIPE_KEYS
from kdrun.engine.resume import StageOwner
from kdrun.engine.trainer import resolve_precision
from kdrun.models.hf_files import pretrained_files
from kdrun.teachers.store import teacher_key

# Data keys that change what the student sees but not the teacher (or only where files live).
NOT_TEACHER_DATA_KEYS = {"kappa", "student_size", "stratified", "num_workers", "root", "download", "verify_checksums",
                         "fast_path", "view_pool", "view_pool_seed"}


def teacher_identity(cfg: DictConfig, splits) -> dict:
    """Everything that determines a trained teacher: its key in the store."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    identity = {
        "data": {k: v for k, v in data.items() if k not in NOT_TEACHER_DATA_KEYS},
        "teacher_indices_sha256": splits.teacher_indices_digest(),
        "architecture": OmegaConf.to_container(cfg.teacher.model, resolve=True),
        "recipe": {
            **{key: OmegaConf.to_container(cfg.teacher, resolve=True).get(key) for key in RECIPE_KEYS},
            "precision": resolve_precision(cfg.trainer.get("precision")),
            "trainer_gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        },
        "seed": cfg.teacher.seed,
    }
    files = pretrained_files(cfg.teacher.model)  # pretrained weights and tokenizers read from directories
    if files:
        identity["architecture_files"] = files
    return identity


def teacher_owner(cfg: DictConfig, splits) -> StageOwner:
    """The owner of the teacher stage's checkpoints: its store key."""
    identity = teacher_identity(cfg, splits)
    return StageOwner.of("teacher", identity, digest=teacher_key(identity))
