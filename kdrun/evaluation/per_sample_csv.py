"""per_sample.csv: paper 000's per-sample quantities, one row per train and test sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kdrun.atomic_files import atomic_path
from kdrun.metrics.per_sample import per_sample_table


def write_per_sample_csv(output_dir: Path, splits=("train", "test")) -> Path:
    """Reads the predictions.npz that evaluate() wrote in `output_dir`, so the table and the
    reported metrics come from the same logits."""
    with np.load(output_dir / "predictions.npz") as predictions:
        table = per_sample_table(predictions, splits)
    path = output_dir / "per_sample.csv"
    with atomic_path(path) as staging:
        pd.DataFrame(table).to_csv(staging, index=False)
    return path
