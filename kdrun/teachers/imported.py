"""Teachers trained elsewhere: weights imported from `teacher.checkpoint`, never pickled code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.teachers.store import TeacherResult, file_sha256


def load_teacher_checkpoint(path: Path | str, model: nn.Module, model_name: str | None = None) -> TeacherResult:
    """Load external teacher weights safely (tensors only, no pickled code).

    Accepts a plain state_dict, or a Lightning checkpoint whose `state_dict` keys carry a
    `student.`/`model.` prefix (a kdrun student checkpoint can serve as a teacher).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"teacher.checkpoint={str(path)!r} could not be read as weights: {error}") from error
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"teacher.checkpoint={str(path)!r} holds no state_dict")
    # A distillation checkpoint also holds its frozen teacher ("teacher.*"): keep the student.
    for prefix in ("student.", "model."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(
            f"teacher.checkpoint={str(path)!r} does not fit the teacher architecture "
            f"(teacher={model_name or type(model).__name__}); set teacher= to the checkpoint's model and its "
            f"options (teacher.model.*). {error}"
        ) from error
    return TeacherResult(model, "imported", None, path, {"checkpoint_sha256": file_sha256(path)})
