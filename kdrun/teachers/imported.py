"""Teachers trained elsewhere: weights imported from `teacher.checkpoint`, never pickled code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.torchvision_weights import looks_like_torchvision, zoo_state_dict
from kdrun.teachers.store import TeacherResult, file_sha256


def load_teacher_checkpoint(path: Path | str, model: nn.Module, model_name: str | None = None) -> TeacherResult:
    """Load external teacher weights safely (tensors only, no pickled code).

    Accepts a plain state_dict, a Lightning checkpoint whose `state_dict` keys carry a `student.`/`model.` prefix
    (a kdrun student checkpoint can serve as a teacher), or torchvision's pretrained file of a zoo model
    (resnet18, resnet50, mobilenet_v2: kdrun.models.torchvision_weights).
    """
    path = Path(path)
    if path.is_dir():
        return _load_pretrained_directory(path, model, model_name)
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
    zoo_keys = model.state_dict().keys()
    if looks_like_torchvision(state, zoo_keys):  # torchvision's own file: its names mapped onto the zoo's
        state = zoo_state_dict(state, zoo_keys)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(
            f"teacher.checkpoint={str(path)!r} does not fit the teacher architecture "
            f"(teacher={model_name or type(model).__name__}); set teacher= to the checkpoint's model and its "
            f"options (teacher.model.*). {error}"
        ) from error
    return TeacherResult(model, "imported", None, path, {"checkpoint_sha256": file_sha256(path)})


def _load_pretrained_directory(path: Path, model: nn.Module, model_name: str | None) -> TeacherResult:
    """A Hugging Face teacher fine-tuned elsewhere: the weights of its save_pretrained directory."""
    from kdrun.models.hf_files import directory_digest, model_directory

    if not hasattr(model, "load_pretrained_weights"):
        raise ConfigError(f"teacher.checkpoint={str(path)!r} is a directory, which only a Hugging Face teacher "
                          f"(hf_classifier, hf_t5_classifier) can load; teacher={model_name} needs a weights file")
    directory = model_directory(str(path), "teacher.checkpoint")
    try:
        model.load_pretrained_weights(directory)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"teacher.checkpoint={str(path)!r} does not fit the teacher architecture "
                          f"(teacher={model_name}): {str(error)[:400]}") from None
    return TeacherResult(model, "imported", None, path, {"checkpoint_sha256": directory_digest(directory)})
