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
from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import dropout_probability, image_input, one_of, option_key, whole, width_multiplier
from kdrun.config.checks import check_number


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


@register_model("vit")
def vit(input_shape, num_classes: int, patch_size: int = 4, dim: int = 128, depth: int = 4, heads: int = 4,
        mlp_ratio: float = 2.0, dropout: float = 0.0, pool: str = "cls", width: float = 1.0) -> ZooModel:
    channels, height, width_px = image_input("vit", input_shape)
    for option, value in (("patch_size", patch_size), ("dim", dim), ("heads", heads)):
        whole("vit", option, value)
    whole("vit", "depth", depth, minimum=0, meaning="encoder layers")
    if dim % heads:
        raise ConfigError(f"{option_key('dim')}={dim} is not divisible by heads={heads}; allowed: a multiple of "
                          f"heads (vit)")
    if height % patch_size or width_px % patch_size:
        raise ConfigError(f"{option_key('patch_size')}={patch_size} does not divide the image height and width of "
                          f"input shape {list(input_shape)}; allowed: a divisor of both (vit)")
    check_number(mlp_ratio, option_key("mlp_ratio"), low=0, low_inclusive=False, meaning="vit: MLP hidden size / dim")
    dropout = dropout_probability("vit", dropout)
    one_of("vit", "pool", pool, ("cls", "mean"))
    head_dim = max(1, round(dim * width_multiplier("vit", width) / heads))
    scaled_dim = head_dim * heads
    num_patches = (height // patch_size) * (width_px // patch_size)
    features = ViTFeatures(channels, num_patches, patch_size, scaled_dim, depth, heads,
                           max(1, round(scaled_dim * mlp_ratio)), dropout, pool)
    return ZooModel(features, nn.Linear(scaled_dim, num_classes))
