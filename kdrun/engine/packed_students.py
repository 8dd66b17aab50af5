"""K students of one architecture trained as one module: parameters and buffers stacked along a new first
dimension, the forward pass of every member at once with `torch.func.vmap(functional_call)` (architectures
of linear and element-wise layers run natively instead, as batched matrix products: kdrun.engine.stacked_forward).

The core of packed sweeps (a sweep's students that share architecture, data shape, batch size and step count
train in one process and one pass). Each member keeps its own weights, BatchNorm running statistics (the
buffers are stacked, so each member's statistics update from its own batch) and optimiser state: an
element-wise optimiser (SGD, Adam, AdamW) over the stacked tensors takes exactly the K separate steps, since
no element of one member meets another's. What reduces over a model's parameters must act per member:
gradient-norm clipping (`clip_grad_norm_per_member`) and non-finite checks (`finite_members`).

Inputs are stacked as well, (K, B, ...): every member draws its own batch (its own seed's order, subset and
views). Dropout draws a different mask per member (`randomness="different"`), from one generator, so a
packed member with dropout is not the separately trained run bit for bit. Without random layers
(tests/engine/test_packed_students.py): forward passes agree with the separate models to float32 rounding
(1e-5); training agrees to 1e-7 relative in float64. In float32 the batched kernels round differently
(~1e-7), and Adam turns that noise on parameters whose exact gradient is zero (a convolution's bias before
BatchNorm) into steps of about lr in either direction, so such parameters are not comparable there; the
members' functions are.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from kdrun.engine.stacked_forward import natively_stackable, stacked_forward


def _mangled(name: str) -> str:
    return name.replace(".", "__")  # module attribute names cannot hold dots


def check_same_architecture(models: Sequence[nn.Module]) -> None:
    """Members must have the same parameter and buffer names, shapes and dtypes; the first difference is named."""
    if not models:
        raise ValueError("a pack needs at least one model")
    reference = {name: (tuple(value.shape), value.dtype) for name, value in models[0].state_dict().items()}
    for position, model in enumerate(models[1:], start=1):
        state = {name: (tuple(value.shape), value.dtype) for name, value in model.state_dict().items()}
        if state == reference:
            continue
        names = sorted(set(state) ^ set(reference))
        if names:
            raise ValueError(f"member {position} differs from member 0 in its tensors: {', '.join(names[:4])}")
        name = next(name for name in reference if state[name] != reference[name])
        raise ValueError(f"member {position}'s {name} is {state[name]}, member 0's {reference[name]}")


class StackedModels(nn.Module):
    """K models of one architecture as one module; `forward(x)` takes (K, B, ...) and returns (K, B, ...)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        models = list(models)
        check_same_architecture(models)
        self.count = len(models)
        params, buffers = stack_module_state(models)
        self.parameter_names, self.buffer_names = list(params), list(buffers)
        for name, value in params.items():
            self.register_parameter(_mangled(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(_mangled(name), value.detach().clone())
        # the architecture without storage, called functionally; a list keeps it out of the module tree
        self._skeleton = [copy.deepcopy(models[0]).to("meta")]
        self.native = natively_stackable(models[0])  # batched matrix products instead of vmap (the MLP family)

    def _tensors(self) -> tuple[dict, dict]:
        return ({name: getattr(self, _mangled(name)) for name in self.parameter_names},
                {name: getattr(self, _mangled(name)) for name in self.buffer_names})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.count:
            raise ValueError(f"stacked input of {x.shape[0]} members for a pack of {self.count}")
        skeleton = self._skeleton[0].train(self.training)  # BatchNorm and dropout follow the pack's mode
        if self.native:
            params, buffers = self._tensors()
            return stacked_forward(skeleton, {**params, **buffers}, x, self.training)

        def member(params, buffers, inputs):
            return functional_call(skeleton, (params, buffers), (inputs,))

        params, buffers = self._tensors()
        return vmap(member, randomness="different")(params, buffers, x)

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s weights and buffers under the original model's names (what its student.pt holds)."""
        params, buffers = self._tensors()
        return {name: value[member].detach().clone() for name, value in {**params, **buffers}.items()}

    def load_member_state_dict(self, member: int, state: dict[str, torch.Tensor]) -> None:
        params, buffers = self._tensors()
        expected = set(params) | set(buffers)
        if set(state) != expected:
            raise ValueError(f"member state has {sorted(set(state) ^ expected)[:4]} that the pack does not")
        with torch.no_grad():
            for name, value in {**params, **buffers}.items():
                value[member].copy_(state[name])


def member_gradient_norms(parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """(K,) the 2-norm of each member's gradient over all its parameters (stacked along dim 0)."""
    squares = [p.grad.detach().flatten(1).float().pow(2).sum(dim=1) for p in parameters if p.grad is not None]
    return torch.stack(squares).sum(dim=0).sqrt()


@torch.no_grad()
def clip_grad_norm_per_member(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` applied to each member alone (same coefficient rule); returns the norms."""
    parameters = [p for p in parameters if p.grad is not None]
    norms = member_gradient_norms(parameters)
    coefficients = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in parameters:
        p.grad.mul_(coefficients.to(p.grad.dtype).view(-1, *([1] * (p.grad.dim() - 1))))
    return norms


def finite_members(losses: torch.Tensor) -> torch.Tensor:
    """(K,) True where a member's loss is finite: one diverging member is stopped, the others go on."""
    return torch.isfinite(losses.detach())
