"""A GPT-2-style decoder for next-token prediction (paper 003's Nano-GPT and Pico-GPT).

Token and position embeddings, `n_layer` pre-norm blocks (causal self-attention, a 4x GELU MLP),
a final LayerNorm and a linear head over the vocabulary, by default tied to the token embedding.
As a zoo model it is `head(features(x))`: `features` maps tokens (batch, T) to the final
normalised residual stream (batch, T, n_embd), so feature losses can tap `features.blocks.<i>`
(0-based) and the logits are (batch, T, vocabulary).

`width` scales n_embd; the result is rounded to the nearest multiple of n_head (at least n_head),
since attention splits n_embd into n_head equal heads. Paper 003 does not say how it rounded
(0.9 x 384 = 345.6 -> 348 here); `width_rounding: floor` takes the multiple below instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.options import dropout_probability, flag, one_of, option_key, whole, width_multiplier
from kdrun.models.registry import ZooModel, register_model

ROUNDINGS = ("nearest", "floor")


def scaled_embedding(n_embd: int, n_head: int, width: float, rounding: str = "nearest") -> int:
    """n_embd x width as a multiple of n_head (never below one unit per head)."""
    heads = n_embd * width / n_head
    units = math.floor(heads) if rounding == "floor" else math.floor(heads + 0.5)
    return n_head * max(1, units)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x):
        batch, time, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, time, self.n_head, channels // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.residual_dropout(self.proj(y.transpose(1, 2).contiguous().view(batch, time, channels)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd, bias=bias), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))  # the block's output: the residual stream after it


class GPTFeatures(nn.Module):
    """Tokens (batch, T) -> the final normalised residual stream (batch, T, n_embd)."""

    def __init__(self, vocabulary: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float,
                 bias: bool):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocabulary, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)

    def forward(self, tokens):
        time = tokens.shape[1]
        if time > self.block_size:
            raise ValueError(f"a sequence of {time} tokens is longer than the model's block_size {self.block_size}")
        positions = torch.arange(time, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


class GPT(ZooModel):
    input_dtype = torch.long  # token ids (what a probe of the model's shapes must feed it)


def _init_weights(model: GPT, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layer)."""
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(parameter)
        elif parameter.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
            nn.init.normal_(parameter, mean=0.0, std=std)
    # LayerNorm weights stay at 1 (their own initialisation)


@register_model("gpt")
def gpt(input_shape, num_classes: int, n_layer: int = 6, n_head: int = 6, n_embd: int = 384, block_size=None,
        dropout: float = 0.2, bias: bool = True, tie_weights: bool = True, width: float = 1.0,
        width_rounding: str = "nearest") -> GPT:
    for option, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
        whole("gpt", option, value)
    whole("gpt", "block_size", block_size, allow_none=True, meaning="the longest context; null: the data's windows")
    dropout = dropout_probability("gpt", dropout)
    bias, tie_weights = flag("gpt", "bias", bias), flag("gpt", "tie_weights", tie_weights)
    one_of("gpt", "width_rounding", width_rounding, ROUNDINGS)
    width = width_multiplier("gpt", width)
    if len(input_shape) != 1:
        raise ConfigError(f"gpt reads token windows (block_size,); got input shape {list(input_shape)}: use a text "
                          f"source (data=tinyshakespeare, pydoc_topics, text_corpus)")
    block_size = int(input_shape[0]) if block_size is None else block_size
    if input_shape[0] > block_size:
        raise ConfigError(f"{option_key('block_size')}={block_size} is shorter than the data's windows "
                          f"(data.block_size={input_shape[0]}); allowed: block_size >= {input_shape[0]}")
    if n_embd % n_head:
        raise ConfigError(f"{option_key('n_embd')}={n_embd} is not a multiple of n_head={n_head}; allowed: a multiple "
                          f"of n_head (attention splits n_embd into n_head heads)")
    embedding = scaled_embedding(n_embd, n_head, width, width_rounding)
    features = GPTFeatures(num_classes, block_size, n_layer, n_head, embedding, dropout, bias)
    model = GPT(features, nn.Linear(embedding, num_classes, bias=False))
    _init_weights(model, n_layer)
    if tie_weights:  # the head reads the token embedding's rows (GPT-2; nanoGPT)
        model.head.weight = features.token_embedding.weight
    return model
