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
from kdrun.data.batches import to_device
from kdrun.teachers.outputs_file import logits_of
from kdrun.metrics import (BINARY_CONVENTIONS, classification_metrics, completion_probe, linear_cka,
                           mse_to_bayes, similarity_metrics)
from kdrun.metrics.per_sample import confidence_by_noise, confidence_deviations
from kdrun.models import ZooModel
from kdrun.config.checks import (check_choice, check_keys, check_list, check_mapping, check_number,
                                 check_whole_number)
from kdrun.errors import ConfigError

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
    saved_positions: int = 16384   # language models: token positions per split kept in predictions.npz
    sample_prompts: tuple[str, ...] = ()  # language models: prompts continued in samples.txt; (): from the test text
    sample_tokens: int = 200       # tokens generated per prompt; 0: no samples.txt
    sample_temperature: float = 1.0  # 0: greedy

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
        check_whole_number(options.get("saved_positions", 16384), "evaluation.saved_positions", minimum=0,
                           meaning="language models: token positions per split saved in predictions.npz "
                                   "(the metrics use every position)")
        if "sample_prompts" in options:
            prompts = check_list(options["sample_prompts"], "evaluation.sample_prompts",
                                 meaning="texts the language models continue in samples.txt")
            for index, prompt in enumerate(prompts):
                if not isinstance(prompt, str) or not prompt:
                    raise ConfigError(f"evaluation.sample_prompts[{index}]={prompt!r}; allowed: a non-empty string")
            options["sample_prompts"] = tuple(prompts)
        check_whole_number(options.get("sample_tokens", 200), "evaluation.sample_tokens", minimum=0,
                           meaning="tokens each language model generates per prompt; 0: no samples.txt")
        check_number(options.get("sample_temperature", 1.0), "evaluation.sample_temperature", low=0,
                     meaning="sampling temperature of samples.txt; 0: greedy")
        return cls(**options)

    def classification(self, logits: torch.Tensor, labels: torch.Tensor, auroc: bool = True) -> dict[str, float]:
        return classification_metrics(logits, labels, self.ece_bins, self.precision_at_k, self.auroc_average, auroc)


@dataclass
class Outputs:
    """One model's pass over a loader, in loader order."""

    index: np.ndarray
    labels: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor | None  # penultimate features of the first samples, when asked for


@torch.inference_mode()
def collect_outputs(model: nn.Module, loader: DataLoader, feature_samples: int = 0, split: str = "") -> Outputs:
    """Logits over a loader with the model in eval mode, plus `model.features(x)` of the first
    `feature_samples` inputs for zoo models (other models, e.g. oracles, have no features)."""
    was_training = model.training
    model.eval()
    keep_features = feature_samples > 0 and isinstance(model, ZooModel)
    indices, labels, logits, features = [], [], [], []
    kept = 0
    # parameter-free teachers (oracles) still carry a buffer that follows the module's device
    reference = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(()))
    device = reference.device
    # a model trained under trainer.precision=64-true keeps float64 weights: its inputs follow them
    dtype = reference.dtype if reference.is_floating_point() else None
    for x, y, index in loader:
        x = to_device(x, device)
        if dtype is not None and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)
        if keep_features:  # the same single pass: head(features(x)) is the model's forward
            representation = model.features(x)
            logits.append(model.head(representation).float().cpu())
            if kept < feature_samples:
                features.append(representation[: feature_samples - kept].float().cpu())
                kept += len(features[-1])
        else:
            logits.append(logits_of(model, x, index, split).float().cpu())  # `split`: outputs-only teachers
        labels.append(y)
        indices.append(index)
    model.train(was_training)
    return Outputs(torch.cat(indices).numpy(), torch.cat(labels), torch.cat(logits),
                   torch.cat(features) if features else None)


def as_positions(outputs: Outputs) -> tuple[Outputs, int | None]:
    """A language model's outputs with one row per window position, and the window length (None for a
    classifier, whose outputs pass unchanged): every metric then reads a position as a sample."""
    if outputs.logits.dim() != 3:
        return outputs, None
    windows, time, vocabulary = outputs.logits.shape
    features = None if outputs.features is None else outputs.features.reshape(-1, outputs.features.shape[-1])
    return Outputs(np.repeat(outputs.index, time), outputs.labels.reshape(-1), outputs.logits.reshape(-1, vocabulary),
                   features), time


def _per_position(values: np.ndarray, time: int | None) -> np.ndarray:
    """A per-window array as one value per position: (windows, T) flattened, (windows,) repeated."""
    if time is None:
        return values
    return values.reshape(-1) if values.ndim == 2 and values.shape[1] == time else np.repeat(values, time, axis=0)


def collect_logits(model: nn.Module, loader: DataLoader, split: str = "") -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(dataset indices, labels, logits) over a loader of `split`, in loader order, with the model in eval mode."""
    outputs = collect_outputs(model, loader, split=split)
    return outputs.index, outputs.labels, outputs.logits


def evaluate(teacher: nn.Module, student: nn.Module, loaders: dict[str, DataLoader], output_dir: Path,
             per_sample: dict[str, dict[str, np.ndarray]] | None = None,
             evaluation: Mapping | None = None, probe_tokens: tuple[int, int] | None = None) -> dict:
    """Metrics of both models on each split, written with per-sample logits to predictions.npz.

    `per_sample[split][name]` is an array over the whole split (indexed by dataset index) that
    is saved alongside as `<split>_<name>` for the evaluated samples (e.g. the label-noise mask).
    An `oracle_probs` entry (p*(y|x) of synthetic sources) adds each model's `mse_to_bayes`.
    Language models are evaluated per token position (`as_positions`, plus `perplexity`); a
    `probe_mask` entry with `probe_tokens` (expected, adversarial) adds the completion probe, and
    predictions.npz keeps the first `evaluation.saved_positions` positions of each split."""
    options = evaluation if isinstance(evaluation, EvaluationOptions) else EvaluationOptions.from_config(evaluation)
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for split, loader in loaders.items():
        feature_samples = options.cka_samples if split == CKA_SPLIT else 0
        teacher_out = collect_outputs(teacher, loader, feature_samples, split)
        student_out = collect_outputs(student, loader, feature_samples, split)
        windows = teacher_out.index
        (teacher_out, time), (student_out, _) = as_positions(teacher_out), as_positions(student_out)
        index, labels = teacher_out.index, teacher_out.labels
        extra = {name: _per_position(np.asarray(values)[windows], time)
                 for name, values in (per_sample or {}).get(split, {}).items()}
        for role, outputs in (("teacher", teacher_out), ("student", student_out)):
            # one-vs-rest AUROC over a vocabulary whose rare tokens are absent from a split says little
            for name, value in options.classification(outputs.logits, labels, auroc=time is None).items():
                metrics[f"{role}/{split}/{name}"] = value
            if time is not None:
                metrics[f"{role}/{split}/perplexity"] = math.exp(min(metrics[f"{role}/{split}/nll"], 700.0))
            if "probe_mask" in extra and probe_tokens is not None:
                for name, value in completion_probe(outputs.logits, torch.as_tensor(extra["probe_mask"]),
                                                    *probe_tokens).items():
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
            rows = options.cka_samples  # positions of a language model: as many as a classifier's inputs
            metrics[f"student/{split}/cka"] = linear_cka(student_out.features[:rows], teacher_out.features[:rows])
        kept = slice(None) if time is None else slice(options.saved_positions)
        arrays.update({
            f"{split}_index": index[kept],
            f"{split}_label": labels.numpy()[kept],
            f"{split}_teacher_logits": teacher_out.logits.numpy()[kept],
            f"{split}_student_logits": student_out.logits.numpy()[kept],
        })
        if time is not None:  # the window position of each row
            arrays[f"{split}_position"] = np.tile(np.arange(time), len(windows))[kept]
        arrays.update({f"{split}_{name}": values[kept] for name, values in extra.items()})
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
