"""What a batch's input can be, for the code that handles inputs without knowing the model: a tensor (images,
vectors, token windows) or raw text (columns of strings, kdrun.data.text_classification), which the model
tokenizes and moves to its own device itself."""

from __future__ import annotations

import hashlib

import torch


def to_device(x, device: torch.device):
    """A tensor input on `device`; text passes unchanged (each text model tokenizes onto its own device)."""
    return x.to(device) if isinstance(x, torch.Tensor) else x


def input_digest(x, digest: "hashlib._Hash") -> None:
    """Feed a batch's inputs into `digest` (tensors by value as float32, texts as UTF-8)."""
    if isinstance(x, torch.Tensor):
        digest.update(x.float().contiguous().numpy().tobytes())
        return
    for column in x:
        for text in column:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
