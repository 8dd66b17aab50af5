"""Final evaluation: logits of teacher and student on the splits, metrics, per-sample outputs.

The metrics and their keys are listed in `kdrun.metrics`; `evaluation.*` in the config sets their knobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdrun.atomic_files import atomic_path
from kdrun.metrics import (BINARY_CONVENTIONS, classification_metrics, linear_cka, mse_to_bayes,
                           similarity_metrics)
from kdrun.metrics.per_sample import confidence_by_noise, confidence_deviations
from kdrun.models import ZooModel
from kdrun.config.checks import check_choice, check_keys, check_list, check_mapping, check_whole_number

CKA_SPLIT = "test"  # representations are compared on held-out inputs only
AUROC_AVERAGES = ("macro", "weighted")


@dataclass(frozen=True)
class EvaluationOptions:
    """The `evaluation:` config block (every key optional; these are the defaults)."""

    ece_bins: int = 15
    precision_at_k: tuple[int, ...] = (1, 5)
    auroc_average: str = "macro"
    cka_samples: int = 2000        # 0 turns CKA off
    mse_binary: str = "vector"     # see kdrun.metrics.oracle

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> "EvaluationOptions":
        """The options of an `evaluation:` block; ConfigError names a wrong key or value."""
        options = {key: value for key, value in dict(check_mapping(cfg, "evaluation", allow_none=True) or {}).items()
                   if value is not None}
        check_keys(options, "evaluation", [field.name for field in fields(cls)])
        check_whole_number(options.get("ece_bins", 15), "evaluation.ece_bins", minimum=1,
                           meaning="equal-width confidence bins of the ECE")
        if "precision_at_k" in options:
            ks = check_list(options["precision_at_k"], "evaluation.precision_at_k",
                            meaning="precision@k and top{k}_acc for each k")
            options["precision_at_k"] = tuple(check_whole_number(k, f"evaluation.precision_at_k[{index}]", minimum=1)
                                              for index, k in enumerate(ks))
        check_whole_number(options.get("cka_samples", 2000), "evaluation.cka_samples", minimum=0,
                           meaning="test inputs for linear CKA; 0 turns it off")
        check_choice(options.get("auroc_average", "macro"), "evaluation.auroc_average", AUROC_AVERAGES)
        check_choice(options.get("mse_binary", "vector"), "evaluation.mse_binary", BINARY_CONVENTIONS)
        return cls(**options)

    def classification(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return classification_metrics(logits, labels, self.ece_bins, self.precision_at_k, self.auroc_average)


@dataclass
class Outputs:
    """One model's pass over a loader, in loader order."""

    index: np.ndarray
    labels: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor | None  # penultimate features of the first samples, when asked for


@torch.inference_mode()
def collect_outputs(model: nn.Module, loader: DataLoader, feature_samples: int = 0) -> Outputs:
    """Logits over a loader with the model in eval mode, plus `model.features(x)` of the first
    `feature_samples` inputs for zoo models (other models, e.g. oracles, have no features)."""
    was_training = model.training
    model.eval()
    keep_features = feature_samples > 0 and isinstance(model, ZooModel)
    indices, labels, logits, features = [], [], [], []
    kept = 0
    # parameter-free teachers (oracles) still carry a buffer that follows the module's device
    device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(())).device
    for x, y, index in loader:
        x = x.to(device)
        if keep_features:  # the same single pass: head(features(x)) is the model's forward
            representation = model.features(x)
            logits.append(model.head(representation).float().cpu())
            if kept < feature_samples:
                features.append(representation[: feature_samples - kept].float().cpu())
                kept += len(features[-1])
        else:
            logits.append(model(x).float().cpu())
        labels.append(y)
        indices.append(index)
    model.train(was_training)
    return Outputs(torch.cat(indices).numpy(), torch.cat(labels), torch.cat(logits),
                   torch.cat(features) if features else None)


def collect_logits(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(dataset indices, labels, logits) over a loader, in loader order, with the model in eval mode."""
    outputs = collect_outputs(model, loader)
    return outputs.index, outputs.labels, outputs.logits


def evaluate(teacher: nn.Module, student: nn.Module, loaders: dict[str, DataLoader], output_dir: Path,
             per_sample: dict[str, dict[str, np.ndarray]] | None = None,
             evaluation: Mapping | None = None) -> dict:
    """Metrics of both models on each split, written with per-sample logits to predictions.npz.

    `per_sample[split][name]` is an array over the whole split (indexed by dataset index) that
    is saved alongside as `<split>_<name>` for the evaluated samples (e.g. the label-noise mask).
    An `oracle_probs` entry (p*(y|x) of synthetic sources) adds each model's `mse_to_bayes`."""
    options = evaluation if isinstance(evaluation, EvaluationOptions) else EvaluationOptions.from_config(evaluation)
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for split, loader in loaders.items():
        feature_samples = options.cka_samples if split == CKA_SPLIT else 0
        teacher_out = collect_outputs(teacher, loader, feature_samples)
        student_out = collect_outputs(student, loader, feature_samples)
        index, labels = teacher_out.index, teacher_out.labels
        extra = {name: np.asarray(values)[index] for name, values in (per_sample or {}).get(split, {}).items()}
        for role, outputs in (("teacher", teacher_out), ("student", student_out)):
            for name, value in options.classification(outputs.logits, labels).items():
                metrics[f"{role}/{split}/{name}"] = value
            if "oracle_probs" in extra:
                metrics[f"{role}/{split}/mse_to_bayes"] = mse_to_bayes(
                    outputs.logits.double().softmax(-1).numpy(), extra["oracle_probs"], options.mse_binary)
            for name, value in confidence_by_noise(outputs.logits.numpy(), extra.get("noise_mask")).items():
                metrics[f"{role}/{split}/{name}"] = value
        for name, value in similarity_metrics(student_out.logits, teacher_out.logits, labels).items():
            # undefined values (agreement on an empty subset, e.g. a teacher right on every training
            # input) are left out: metrics.json stays strict JSON and tables read the gap as NaN
            if not math.isnan(value):
                metrics[f"student/{split}/{name}"] = value
        true_labels = extra.get("clean_label", labels.numpy())  # the label before any noise flipped it
        for name, value in confidence_deviations(teacher_out.logits.numpy(), student_out.logits.numpy(),
                                                 extra.get("noise_mask"), true_labels).items():
            metrics[f"student/{split}/{name}"] = value
        if teacher_out.features is not None and student_out.features is not None:
            metrics[f"student/{split}/cka"] = linear_cka(student_out.features, teacher_out.features)
        arrays.update({
            f"{split}_index": index,
            f"{split}_label": labels.numpy(),
            f"{split}_teacher_logits": teacher_out.logits.numpy(),
            f"{split}_student_logits": student_out.logits.numpy(),
        })
        arrays.update({f"{split}_{name}": values for name, values in extra.items()})
    with atomic_path(output_dir / "predictions.npz") as staging, open(staging, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return metrics


def bayes_metrics(splits, evaluation: Mapping | None = None) -> dict:
    """`bayes/<split>/{acc,nll,ece,auroc,...}`: the Bayes classifier p*(y|x), where the source knows it.

    `train` is the student's training samples with the labels as trained on (label noise
    included), as for the student's own `train` metrics."""
    options = evaluation if isinstance(evaluation, EvaluationOptions) else EvaluationOptions.from_config(evaluation)
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
        for name, value in options.classification(log_probs, torch.as_tensor(labels)).items():
            metrics[f"bayes/{split}/{name}"] = value
    return metrics
