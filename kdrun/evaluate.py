"""Final evaluation: logits of teacher and student on the splits, metrics, per-sample outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdrun.metrics import agreement, classification_metrics


@torch.inference_mode()
def collect_logits(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(dataset indices, labels, logits) over a loader, in loader order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    indices, labels, logits = [], [], []
    # parameter-free teachers (oracles) still carry a buffer that follows the module's device
    device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(())).device
    for x, y, index in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
        indices.append(index)
    model.train(was_training)
    return torch.cat(indices).numpy(), torch.cat(labels), torch.cat(logits)


def evaluate(teacher: nn.Module, student: nn.Module, loaders: dict[str, DataLoader], output_dir: Path,
             per_sample: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Metrics of both models on each split, written with per-sample logits to predictions.npz.

    `per_sample[split][name]` is an array over the whole split (indexed by dataset index) that
    is saved alongside as `<split>_<name>` for the evaluated samples (e.g. the label-noise mask)."""
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for split, loader in loaders.items():
        index, labels, teacher_logits = collect_logits(teacher, loader)
        _, _, student_logits = collect_logits(student, loader)
        for role, logits in (("teacher", teacher_logits), ("student", student_logits)):
            for name, value in classification_metrics(logits, labels).items():
                metrics[f"{role}/{split}/{name}"] = value
        metrics[f"student/{split}/agreement"] = agreement(student_logits, teacher_logits)
        arrays.update({
            f"{split}_index": index,
            f"{split}_label": labels.numpy(),
            f"{split}_teacher_logits": teacher_logits.numpy(),
            f"{split}_student_logits": student_logits.numpy(),
        })
        for name, values in (per_sample or {}).get(split, {}).items():
            arrays[f"{split}_{name}"] = np.asarray(values)[index]
    np.savez_compressed(output_dir / "predictions.npz", **arrays)
    return metrics


def bayes_metrics(splits) -> dict:
    """`bayes/<split>/{acc,nll,ece}`: the Bayes classifier p*(y|x), where the source knows it.

    `train` is the student's training samples with the labels as trained on (label noise
    included), as for the student's own `train` metrics."""
    metrics: dict[str, float] = {}
    train, test = splits.source.train.oracle_probs, splits.source.test.oracle_probs
    chosen = splits.student_indices
    for split, probs, labels in (
        ("train", None if train is None else train[chosen], splits.train_labels[chosen]),
        ("test", test, splits.source.test.targets),
    ):
        if probs is None:
            continue
        log_probs = torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-300).log()
        for name, value in classification_metrics(log_probs, torch.as_tensor(labels)).items():
            metrics[f"bayes/{split}/{name}"] = value
    return metrics
