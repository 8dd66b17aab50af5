"""A small Vision Transformer (Dosovitskiy et al. 2021) for low-resolution images.

Non-overlapping `patch_size` patches are embedded by a strided conv (= a Linear on each
flattened patch), a class token and learned position embeddings are added, then `depth`
pre-norm encoder layers (multi-head attention with `heads` heads, GELU MLP of
`mlp_ratio` x dim), a final LayerNorm, and the class token (`pool: cls`) or the mean token
(`pool: mean`) is the penultimate representation; `head` is one Linear.

- `width` scales `dim`, rounded to a multiple of `heads` (at least one unit per head), so
  the head count stays fixed across a width sweep and the MLP follows via `mlp_ratio`.
- The defaults (patch 4, dim 128, depth 4, heads 4, mlp_ratio 2: 546,186 parameters for
  3x32x32 input and 10 classes) train a batch step in milliseconds on a CPU. Papers 002/003
  give no ViT configuration; `vit_6m.yaml` is a guess at paper 002's "6.3M" CIFAR ViT
  (omihub777/ViT-CIFAR: patch 8, dim 384, depth 7, 12 heads, MLP 384).
- Init: position embeddings and class token truncated-normal (std 0.02), layers at
  PyTorch's defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models import ZooModel, register_model
from kdrun.models.options import image_input, one_of, width_multiplier


class ViTFeatures(nn.Module):
    def __init__(self, in_channels: int, num_patches: int, patch_size: int, dim: int, depth: int, heads: int,
                 mlp_dim: int, dropout: float, pool: str):
        super().__init__()
        self.pool = pool
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + (pool == "cls"), dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=mlp_dim, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        ))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(self.dropout(tokens + self.pos_embed)))
        return tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)


def _positive_int(option: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"vit {option}={value!r} must be a whole number >= {minimum}")
    return value


@register_model("vit")
def vit(input_shape, num_classes: int, patch_size: int = 4, dim: int = 128, depth: int = 4, heads: int = 4,
        mlp_ratio: float = 2.0, dropout: float = 0.0, pool: str = "cls", width: float = 1.0) -> ZooModel:
    channels, height, width_px = image_input("vit", input_shape)
    for option, value in (("patch_size", patch_size), ("dim", dim), ("heads", heads)):
        _positive_int(option, value)
    _positive_int("depth", depth, minimum=0)
    if dim % heads:
        raise ConfigError(f"vit dim={dim} is not divisible by heads={heads}; allowed: a multiple of heads")
    if height % patch_size or width_px % patch_size:
        raise ConfigError(f"vit patch_size={patch_size} must divide the image height and width; "
                          f"got input shape {list(input_shape)}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ConfigError(f"vit mlp_ratio={mlp_ratio!r} must be a number > 0")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"vit dropout={dropout!r}; allowed: a probability in [0, 1)")
    one_of("vit", "pool", pool, ("cls", "mean"))
    head_dim = max(1, round(dim * width_multiplier("vit", width) / heads))
    scaled_dim = head_dim * heads
    num_patches = (height // patch_size) * (width_px // patch_size)
    features = ViTFeatures(channels, num_patches, patch_size, scaled_dim, depth, heads,
                           max(1, round(scaled_dim * mlp_ratio)), dropout, pool)
    return ZooModel(features, nn.Linear(scaled_dim, num_classes))
