"""The source every installation has: scikit-learn's bundled 8x8 digits (the default run's data)."""

from __future__ import annotations

import numpy as np

from kdrun.config.checks import check_fraction
from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits, tensor_split


def _check_digits_options(cfg) -> None:
    check_fraction(cfg.get("test_fraction"), "data.test_fraction", False, False,
                   meaning="digits ships without a test split: the share carved for it")


@register_source("digits", options=_check_digits_options)
def load_digits(cfg) -> SourceSplits:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], with stratified seeded splits."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=cfg.val_fraction, stratify=y_rest, random_state=cfg.split_seed
    )
    return SourceSplits(
        train=tensor_split(x_train, y_train),
        val=tensor_split(x_val, y_val),
        test=tensor_split(x_test, y_test),
        num_classes=10,
        input_shape=(1, 8, 8),
    )
