"""The forward pass of K stacked models without vmap, for architectures built only from linear layers and
element-wise functions (the MLP family).

`vmap(functional_call)` runs any architecture on stacked weights, but it pays a fixed cost per operation (the
batching rules, swapping the stacked tensors into the skeleton and back) that dwarfs the arithmetic of small
layers: for 8 default digits MLPs, vmap's forward takes about as long as the 8 separate ones. A linear layer's
stacked form is one batched matrix product (`baddbmm`) and an element-wise layer applies to (K, B, ...) as it
is, so these architectures run natively, in the same operations whatever K is. The result is the vmapped one
up to the rounding of the batched kernels (tests/engine/test_packed_students.py).

Only containers whose forward is the plain composition of their children are walked (nn.Sequential and the
zoo's `head(features(x))`, by exact type: a subclass may override forward); anything else keeps vmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdrun.models.registry import ZooModel

ELEMENTWISE_LAYERS = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity)
LEAF_LAYERS = (nn.Linear, nn.Flatten, nn.Dropout, *ELEMENTWISE_LAYERS)


def natively_stackable(model: nn.Module) -> bool:
    """True when every module of `model` is a composing container or a layer with a native stacked form."""
    for module in model.modules():
        if type(module) in (nn.Sequential, ZooModel):
            continue
        if type(module) not in LEAF_LAYERS:
            return False
    return True


def stacked_forward(model: nn.Module, tensors: dict[str, torch.Tensor], x: torch.Tensor, training: bool,
                    prefix: str = "") -> torch.Tensor:
    """`model`'s forward pass for each of K members at once: `tensors` are its parameters stacked (K, ...)
    under their state-dict names, `x` is (K, B, ...). `model` only describes the architecture (its own
    weights, if any, are not read)."""
    if type(model) is ZooModel:
        features = stacked_forward(model.features, tensors, x, training, f"{prefix}features.")
        return stacked_forward(model.head, tensors, features, training, f"{prefix}head.")
    if type(model) is nn.Sequential:
        for name, child in model.named_children():
            x = stacked_forward(child, tensors, x, training, f"{prefix}{name}.")
        return x
    if isinstance(model, nn.Linear):
        weight = tensors[f"{prefix}weight"]  # (K, out, in)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (K, rows, in): a linear layer acts on the last dimension
        bias = tensors.get(f"{prefix}bias")
        out = (torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2)) if bias is not None
               else torch.bmm(flat, weight.transpose(1, 2)))
        return out.reshape(*x.shape[:-1], weight.shape[1])
    if isinstance(model, nn.Flatten):  # its dimensions count from the batch dimension, one after the members'
        start = model.start_dim + 1 if model.start_dim >= 0 else model.start_dim
        end = model.end_dim + 1 if model.end_dim >= 0 else model.end_dim
        return x.flatten(start, end)
    if isinstance(model, nn.Dropout):
        return F.dropout(x, model.p, training)  # one mask over (K, B, ...): each member's own draws
    if isinstance(model, ELEMENTWISE_LAYERS):
        return model(x)
    raise TypeError(f"{type(model).__name__} has no native stacked form; check natively_stackable first")
