"""Linear models: logistic regression, random features (paper 000 §C.4) and the channel-wise model (§C.5).

- `logistic_regression`: one Linear on the flattened input (`bias` is the intercept). L2
  regularisation (paper 001) is the optimiser's weight decay, not a model option.
- `random_features`: phi(x) = ReLU(W x) with W of shape (num_features x width, D) drawn once
  from N(0, 1/D) (D = flattened input size) by a generator seeded with `feature_seed`, then a
  trainable Linear. Paper 000 does not give the distribution (nor a random bias: none is used).
  W is a buffer, not a parameter: no optimiser touches it, it is saved in checkpoints, and it
  does not depend on the global seed, so teacher and student share the feature map unless
  their `feature_seed`s differ. `model.features` is the feature map (the eigen-analysis input);
  `model.head.weight` is the trained matrix.
- `channelwise_linear`: K = num_classes channels of D dims each, input shape (K*D,) or (K, D);
  node k sees only channel k: f_k(x) = w_k . x_k (+ b_k if `bias`, off by default as in
  §C.5). `features` only flattens (the identity on (K*D,) input) and `head` is a
  `ChannelwiseLinear` — not an nn.Linear — whose `weight` (K, D) holds the w_k. Init: uniform
  in +-1/sqrt(D), nn.Linear's default (the paper does not say).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import flag, scaled, seed, whole, width_multiplier


@register_model("logistic_regression")
def logistic_regression(input_shape, num_classes: int, bias: bool = True) -> ZooModel:
    bias = flag("logistic_regression", "bias", bias)
    return ZooModel(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes, bias=bias))


class RandomReLUFeatures(nn.Module):
    """x -> ReLU(W flatten(x)), W ~ N(0, 1/in_features) fixed by `seed` and never trained."""

    def __init__(self, in_features: int, num_features: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(num_features, in_features, generator=generator) / math.sqrt(in_features)
        self.register_buffer("weight", weight)

    def forward(self, x):
        return torch.relu(x.flatten(1) @ self.weight.T)


@register_model("random_features")
def random_features(input_shape, num_classes: int, num_features: int = 5000, feature_seed: int = 0,
                    bias: bool = True, width: float = 1.0) -> ZooModel:
    model = "random_features"
    whole(model, "num_features", num_features, meaning="random features")
    seed(model, "feature_seed", feature_seed)
    size = scaled(num_features, width_multiplier(model, width))
    features = RandomReLUFeatures(math.prod(input_shape), size, feature_seed)
    return ZooModel(features, nn.Linear(size, num_classes, bias=flag(model, "bias", bias)))


class ChannelwiseLinear(nn.Module):
    """f_k(x) = w_k . x_k for channel k of the (batch, K*D) input; `weight` is (K, D)."""

    def __init__(self, num_channels: int, channel_dim: int, bias: bool):
        super().__init__()
        bound = 1 / math.sqrt(channel_dim)
        self.weight = nn.Parameter(torch.empty(num_channels, channel_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_channels).uniform_(-bound, bound)) if bias else None

    def forward(self, x):
        out = (x.reshape(len(x), *self.weight.shape) * self.weight).sum(dim=-1)
        return out if self.bias is None else out + self.bias


@register_model("channelwise_linear")
def channelwise_linear(input_shape, num_classes: int, channel_dim: int | None = None,
                       bias: bool = False) -> ZooModel:
    model = "channelwise_linear"
    size = math.prod(input_shape)
    if len(input_shape) not in (1, 2):
        raise ConfigError(f"{model} needs input of shape (K*D,) or (K, D) with K = num_classes; "
                          f"got input shape {list(input_shape)}")
    if len(input_shape) == 2 and input_shape[0] != num_classes:
        raise ConfigError(f"{model} needs one channel per class: input shape {list(input_shape)} has "
                          f"{input_shape[0]} channels but num_classes={num_classes}; allowed: ({num_classes}, D)")
    whole(model, "channel_dim", channel_dim, allow_none=True, meaning="D; null infers it from the input")
    if channel_dim is None:
        if size % num_classes:
            raise ConfigError(f"{model} input size {size} (shape {list(input_shape)}) is not num_classes={num_classes} "
                              f"x D; allowed: a multiple of {num_classes}")
        channel_dim = size // num_classes
    elif size != num_classes * channel_dim:
        raise ConfigError(f"{model} input size {size} (shape {list(input_shape)}) is not num_classes={num_classes} "
                          f"x channel_dim={channel_dim} = {num_classes * channel_dim}")
    return ZooModel(nn.Flatten(), ChannelwiseLinear(num_classes, channel_dim, flag(model, "bias", bias)))
