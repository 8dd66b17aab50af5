"""Token-level losses are the sample-level losses applied per scored position.

A language model's logits are (batch, T, vocabulary) and its labels (batch, T): every window position
is a prediction of the next token. Flattening both to (batch x T, vocabulary) and (batch x T) turns
every logit-based loss of kdrun (written for (samples, classes)) into its token-level form, averaged
over the scored positions: the same formula, the same reductions, no second implementation. Every
position of a window is scored (text windows are full; kdrun.data.text).
"""

from __future__ import annotations

from torch import Tensor


def per_position(student_logits: Tensor, teacher_logits: Tensor | None, batch):
    """(logits, teacher logits, batch) with sequence positions as rows; classifier outputs pass unchanged.

    The batch keeps its inputs (feature losses re-read them) and its window indices; its labels are
    flattened like the logits."""
    if student_logits.dim() != 3:
        return student_logits, teacher_logits, batch
    x, y, index = batch
    vocabulary = student_logits.shape[-1]
    flat_teacher = None if teacher_logits is None else teacher_logits.reshape(-1, vocabulary)
    return student_logits.reshape(-1, vocabulary), flat_teacher, (x, y.reshape(-1), index)
