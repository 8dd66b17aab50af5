"""Per-sample quantities of paper 000's scatter plots (M1-M4), from teacher and student logits.

Pure functions on arrays: the pipeline reads predictions.npz and writes the result as a table.

phi(u) = log(u / (1 - u)) is computed from the logits as phi(p_j) = f_j - logsumexp_{i != j} f_i,
an exact identity. Going through probabilities instead would saturate: in float32 a class
ahead by 40 nats has p = 1 exactly, and phi = inf.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_odds(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """phi(p_c) = log(p_c / (1 - p_c)) of class `classes[n]` for each row n, without forming p_c."""
    logits = np.asarray(logits, dtype=np.float64)  # float64: the difference of two large numbers
    rows = np.arange(len(logits))
    others = logits.copy()
    others[rows, classes] = -np.inf
    peak = others.max(axis=1)
    rest = peak + np.log(np.exp(others - peak[:, None]).sum(axis=1))
    return logits[rows, classes] - rest


def per_sample_outputs(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray,
                       noise_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One value per sample for the M1 (teacher's top class), M2 (true class), M3 (correctness)
    and M4 (label noise) scatters.

    `labels` are the true classes (the clean labels where label noise flipped some); `noise_mask`
    marks the flipped samples, None when no label was flipped (e.g. the test split)."""
    teacher_logits, student_logits = np.asarray(teacher_logits), np.asarray(student_logits)
    labels = np.asarray(labels, dtype=np.int64)
    if teacher_logits.shape != student_logits.shape or teacher_logits.ndim != 2:
        raise ValueError(f"teacher logits {teacher_logits.shape} and student logits {student_logits.shape} "
                         f"must both be (samples, classes)")
    if labels.shape != (len(teacher_logits),):
        raise ValueError(f"labels {labels.shape} must hold one class per sample ({len(teacher_logits)})")
    rows = np.arange(len(labels))
    teacher_top = teacher_logits.argmax(axis=1)
    student_top = student_logits.argmax(axis=1)
    teacher_probs, student_probs = np.exp(log_softmax(teacher_logits)), np.exp(log_softmax(student_logits))
    noisy = np.zeros(len(labels), dtype=bool) if noise_mask is None else np.asarray(noise_mask, dtype=bool)
    return {
        "teacher_top_class": teacher_top,
        "student_top_class": student_top,
        "teacher_prob_top": teacher_probs[rows, teacher_top],
        "student_prob_top": student_probs[rows, teacher_top],
        "teacher_prob_true": teacher_probs[rows, labels],
        "student_prob_true": student_probs[rows, labels],
        "teacher_phi_top": log_odds(teacher_logits, teacher_top),
        "student_phi_top": log_odds(student_logits, teacher_top),
        "teacher_phi_true": log_odds(teacher_logits, labels),
        "student_phi_true": log_odds(student_logits, labels),
        "teacher_correct": teacher_top == labels,
        "student_correct": student_top == labels,
        "noisy": noisy,
    }


def per_sample_table(predictions, splits=("train", "test")) -> dict[str, np.ndarray]:
    """Columns over the samples of `splits`, from the arrays evaluate() saves in predictions.npz.

    `label` is the label the student trained on; `true_label` the clean one (they differ where
    label noise flipped it), which the `*_true` and `*_correct` columns use."""
    columns: dict[str, list[np.ndarray]] = {}
    for split in splits:
        label = np.asarray(predictions[f"{split}_label"])
        clean_key = f"{split}_clean_label"
        true_label = np.asarray(predictions[clean_key]) if clean_key in predictions else label
        noise_key = f"{split}_noise_mask"
        noise_mask = predictions[noise_key] if noise_key in predictions else None
        part = {
            "split": np.full(len(label), split),
            "index": np.asarray(predictions[f"{split}_index"]),
            "label": label,
            "true_label": true_label,
            **per_sample_outputs(predictions[f"{split}_teacher_logits"], predictions[f"{split}_student_logits"],
                                 true_label, noise_mask),
        }
        for name, values in part.items():
            columns.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


DEVIATION_QUARTILES = 4


def confidence_deviations(teacher_logits: np.ndarray, student_logits: np.ndarray,
                          noise_mask: np.ndarray | None = None,
                          true_labels: np.ndarray | None = None) -> dict[str, float]:
    """Paper 000's M1, M2, M4 and M5 scatters as numbers, over quarters of the samples ranked by the
    teacher's confidence (q1 the least confident, q4 the most).

    - `phi_gap_q1..q4`: the mean of phi_s - phi_t on the teacher's top class (M1). The paper's
      underfitting of low-confidence points is phi_gap_q1 < 0 and below the other quarters, so
      `phi_gap_q1_minus_q4` < 0 (the shape of the scatter, free of the student's overall confidence
      level: a student less confident everywhere shifts every quarter alike).
    - `kl_q1..q4`: the mean KL(p_t || p_s) in the same quarters (M5: higher on low-confidence points).
    - with `true_labels`, `phi_gap_true_q1`, `phi_gap_true_q4` and `phi_gap_true_q1_minus_q4`: the same
      on the true class, ranked by the teacher's phi on it (M2: weaker on test data, the paper says).
    - with a noise mask that flipped some labels (and kept others), `phi_gap_noisy` / `phi_gap_clean`
      split the samples by it (M4).
    Ranking is by phi, so ties at a saturated probability still order correctly. Fewer samples than
    quarters give no values."""
    teacher_logits, student_logits = np.asarray(teacher_logits), np.asarray(student_logits)
    if teacher_logits.shape != student_logits.shape or teacher_logits.ndim != 2:
        raise ValueError(f"teacher logits {teacher_logits.shape} and student logits {student_logits.shape} "
                         f"must both be (samples, classes)")
    if len(teacher_logits) < DEVIATION_QUARTILES:
        return {}
    teacher_top = teacher_logits.argmax(axis=1)
    teacher_phi = log_odds(teacher_logits, teacher_top)
    gap = log_odds(student_logits, teacher_top) - teacher_phi
    quarters = _quarters(teacher_phi)
    result = _quarter_means("phi_gap", gap, quarters)
    result["phi_gap_q1_minus_q4"] = result["phi_gap_q1"] - result[f"phi_gap_q{DEVIATION_QUARTILES}"]
    log_t, log_s = log_softmax(teacher_logits), log_softmax(student_logits)
    result.update(_quarter_means("kl", (np.exp(log_t) * (log_t - log_s)).sum(axis=1), quarters))
    if true_labels is not None:
        true_labels = np.asarray(true_labels, dtype=np.int64)
        if true_labels.shape != (len(gap),):
            raise ValueError(f"true labels {true_labels.shape} must hold one class per sample ({len(gap)})")
        teacher_true = log_odds(teacher_logits, true_labels)
        true_gap = _quarter_means("phi_gap_true", log_odds(student_logits, true_labels) - teacher_true,
                                  _quarters(teacher_true))
        last = f"phi_gap_true_q{DEVIATION_QUARTILES}"
        result.update({"phi_gap_true_q1": true_gap["phi_gap_true_q1"], last: true_gap[last],
                       "phi_gap_true_q1_minus_q4": true_gap["phi_gap_true_q1"] - true_gap[last]})
    noisy = _both_groups(noise_mask, len(gap))
    if noisy is not None:
        result["phi_gap_noisy"] = float(gap[noisy].mean())
        result["phi_gap_clean"] = float(gap[~noisy].mean())
    return result


def _quarters(confidence: np.ndarray) -> list[np.ndarray]:
    """Sample indices in DEVIATION_QUARTILES groups of rising confidence (the first groups take the
    remainder, as np.array_split does)."""
    return np.array_split(np.argsort(confidence, kind="stable"), DEVIATION_QUARTILES)


def _quarter_means(name: str, values: np.ndarray, quarters: list[np.ndarray]) -> dict[str, float]:
    return {f"{name}_q{index + 1}": float(values[part].mean()) for index, part in enumerate(quarters)}


def confidence_by_noise(logits: np.ndarray, noise_mask: np.ndarray | None) -> dict[str, float]:
    """A model's mean confidence phi(p_top) on its own top class over the samples label noise flipped
    (`phi_noisy`) and those it kept (`phi_clean`): M4's "mislabeled points have the smallest teacher
    probabilities" as two numbers. Empty without a mask that holds both groups."""
    logits = np.asarray(logits)
    noisy = _both_groups(noise_mask, len(logits))
    if noisy is None:
        return {}
    phi = log_odds(logits, logits.argmax(axis=1))
    return {"phi_noisy": float(phi[noisy].mean()), "phi_clean": float(phi[~noisy].mean())}


def _both_groups(noise_mask: np.ndarray | None, samples: int) -> np.ndarray | None:
    """The mask as booleans when it marks some samples and not all of them, else None."""
    if noise_mask is None:
        return None
    noisy = np.asarray(noise_mask, dtype=bool)
    if noisy.shape != (samples,):
        raise ValueError(f"noise mask {noisy.shape} must hold one flag per sample ({samples})")
    return noisy if noisy.any() and (~noisy).any() else None
