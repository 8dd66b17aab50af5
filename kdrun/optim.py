"""Optimisers selected by name from a stage's `optimizer` config."""

from __future__ import annotations

import torch

from kdrun.errors import ConfigError


def build_optimizer(cfg, parameters, where: str) -> torch.optim.Optimizer:
    name = cfg.name
    if name == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.get("momentum", 0.0))
    raise ConfigError(f"{where}.optimizer.name={name!r} is unknown; allowed: adam, adamw, sgd")
