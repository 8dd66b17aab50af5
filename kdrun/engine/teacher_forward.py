"""The one rule for the teacher's numerics, shared by its online forward pass and its cached outputs.

`teacher.precision: float32` (the default) runs the teacher in full precision, also inside a
student stage that trains under bf16 autocast (`trainer.precision=bf16-mixed`: the teacher's
forward pass is taken out of the student's autocast); `bf16` runs it under bf16 autocast on the
device it is on (meant for GPUs; CPUs support it too, slowly). Either way the logits are returned
as float32, and a cached file records the precision it was computed in, so online and cached
teachers of a run agree, and a cache made in another precision is recomputed, never reused.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn

from kdrun.config.checks import check_choice

TEACHER_PRECISIONS = ("float32", "bf16")


def check_teacher_precision(value) -> str:
    return check_choice(value, "teacher.precision", TEACHER_PRECISIONS,
                        meaning="the teacher's forward pass, online and cached; bf16 is meant for GPUs")


def teacher_forward(model: nn.Module, x: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """The teacher's logits on `x` as float32, computed in `precision` (the caller picks no_grad or inference mode)."""
    # text inputs are tokenized by the model onto its own device (kdrun.data.batches)
    device = x.device if isinstance(x, torch.Tensor) else next(chain(model.parameters(), model.buffers())).device
    weight = next(model.parameters(), None)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and weight is not None and weight.dtype == torch.float64:
        x = x.to(torch.float64)  # a teacher trained under trainer.precision=64-true keeps float64 weights
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x).float()
