"""Metrics as pure functions of logits and labels (tensors in, floats out)."""

from kdrun.metrics.classification import accuracy, agreement, classification_metrics, expected_calibration_error, nll

__all__ = ["accuracy", "agreement", "classification_metrics", "expected_calibration_error", "nll"]
