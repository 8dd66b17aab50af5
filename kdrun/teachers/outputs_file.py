"""Teachers known only through their outputs (`teacher.outputs=PATH`): per-sample probabilities or logits in a file.

Paper 004's motivation is a teacher behind an API: its weights are out of reach, its answers are not.
Such a teacher enters a run through the cached-outputs contract: its tables *are* the cache (the
student looks its rows up by sample index, every loss including PTLoss reads them), evaluation and
the PTLoss coefficient search read them by index, and nothing ever calls it on an input.

File formats:
- `.npz` or `.pt`: one array per split, `train`, `val`, `test`, of shape (samples, classes), row i the
  split's sample i; the key `kind` (`logits` or `probs`, default logits) says what the values are.
- `.csv`, `.jsonl`, `.parquet` (a table): one row per sample, with `split` (train, val or test) and
  `index` (the sample's index in kdrun's split), or `id` (the data's own ids, `data.id_column`; then
  `split` may be left out when ids are unique across splits); the values in a list column `logits` or
  `probs` (CSV: a JSON list), or in columns `logit_0..logit_{C-1}` / `prob_0..prob_{C-1}`.

Every sample of the train, val and test splits needs a row; the class count must be the data's;
probabilities must be non-negative and sum to 1 (within 1e-3). Probabilities become log-probabilities,
which every loss reads as logits (softmax gives the probabilities back). Anything else is a ConfigError
naming the file and the value, before training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdrun.atomic_files import file_sha256
from kdrun.errors import ConfigError

SPLITS = ("train", "val", "test")
KINDS = ("logits", "probs")
TABLE_TYPES = (".csv", ".jsonl", ".json", ".parquet")
ARRAY_TYPES = (".npz", ".pt")
PROBABILITY_TOLERANCE = 1e-3


class OutputsTeacher(nn.Module):
    """A teacher that is a table of outputs by (split, sample index)."""

    def __init__(self, tables: dict[str, torch.Tensor], path: Path):
        super().__init__()
        self.tables, self.path = tables, path
        self.register_buffer("device_anchor", torch.zeros(()), persistent=False)  # follows .to(device)

    def lookup(self, split: str, index: torch.Tensor) -> torch.Tensor:
        return self.tables[split][index.cpu()].to(self.device_anchor.device)

    def forward(self, x):
        raise RuntimeError(f"the teacher of teacher.outputs={self.path} is known only through its outputs: it is "
                           f"looked up by sample index, never run on an input")


def logits_of(model: nn.Module, x, index: torch.Tensor, split: str) -> torch.Tensor:
    """A model's logits on a batch of `split`: looked up by index for an outputs-only teacher, else computed."""
    if isinstance(model, OutputsTeacher):
        return model.lookup(split, index)
    return model(x)


def load_outputs_file(path_text: str, source) -> tuple[dict[str, torch.Tensor], str]:
    """(logits per split, the file's SHA-256), checked against the source's splits."""
    key = "teacher.outputs"
    path = Path(str(path_text)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={path_text}: no such file; allowed: a {', '.join(ARRAY_TYPES + TABLE_TYPES)} file "
                          f"of per-sample teacher logits or probabilities")
    suffix = path.suffix.lower()
    if suffix in ARRAY_TYPES:
        values, kind = _arrays(path, key)
    elif suffix in TABLE_TYPES:
        values, kind = _table(path, key, source)
    else:
        raise ConfigError(f"{key}={path_text}: unknown file type {suffix!r}; allowed: "
                          f"{', '.join(ARRAY_TYPES + TABLE_TYPES)}")
    tables = {}
    for split in SPLITS:
        size = len(source.split(split))
        table = values.get(split)
        if table is None:
            raise ConfigError(f"{key}={path_text} has no outputs for the {split} split ({size} samples); allowed: "
                              f"outputs for every sample of {', '.join(SPLITS)}")
        if table.ndim != 2 or table.shape[0] != size:
            raise ConfigError(f"{key}={path_text}: the {split} outputs have shape {tuple(table.shape)}, but the "
                              f"{split} split has {size} samples; allowed: ({size}, {source.num_classes})")
        if table.shape[1] != source.num_classes:
            raise ConfigError(f"{key}={path_text}: {table.shape[1]} classes per sample, but the data has "
                              f"{source.num_classes} ({', '.join(source.class_names or ())}); allowed: "
                              f"{source.num_classes}")
        tables[split] = _as_logits(table, kind, f"{key}={path_text} ({split})")
    return tables, file_sha256(path)


def _as_logits(table: np.ndarray, kind: str, where: str) -> torch.Tensor:
    values = torch.as_tensor(np.asarray(table, dtype=np.float64))
    if not torch.isfinite(values).all():
        row = int((~torch.isfinite(values)).any(1).nonzero()[0])
        raise ConfigError(f"{where}: row {row} holds a non-finite value ({values[row].tolist()}); allowed: finite "
                          f"{kind}")
    if kind == "probs":
        sums = values.sum(1)
        bad = ((values < 0).any(1) | ((sums - 1).abs() > PROBABILITY_TOLERANCE)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ConfigError(f"{where}: row {row} is not a probability vector ({values[row].tolist()}, sum "
                              f"{float(sums[row]):.4f}); allowed: non-negative values summing to 1")
        values = (values / sums[:, None]).clamp_min(1e-30).log()
    return values.float()


def _arrays(path: Path, key: str) -> tuple[dict[str, np.ndarray], str]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as payload:
                content = {name: payload[name] for name in payload.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # numpy and torch raise their own types for a damaged file
        raise ConfigError(f"{key}={path}: could not be read ({type(error).__name__}: {error})") from None
    kind = str(np.asarray(content.get("kind", "logits")))
    if kind not in KINDS:
        raise ConfigError(f"{key}={path}: kind={kind!r}; allowed: {', '.join(KINDS)}")
    unknown = set(content) - {*SPLITS, "kind"}
    if unknown:
        raise ConfigError(f"{key}={path}: unknown arrays {sorted(unknown)}; allowed: {', '.join(SPLITS)}, kind")
    return {split: np.asarray(content[split]) for split in SPLITS if split in content}, kind


def _table(path: Path, key: str, source) -> tuple[dict[str, np.ndarray], str]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype={"id": str, "split": str})  # ids as written ("007" stays "007")
        elif path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype={"id": str, "split": str})
    except Exception as error:  # pandas and pyarrow raise their own types
        raise ConfigError(f"{key}={path}: could not be read as a table ({type(error).__name__}: {error})") from None
    columns = list(frame.columns)
    values, kind = _value_matrix(frame, columns, key, path)
    if "index" in columns:
        if "split" not in columns:
            raise ConfigError(f"{key}={path}: an `index` column needs a `split` column (train, val, test) beside it")
        rows = {split: frame.index[frame["split"] == split] for split in SPLITS}
        unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
        if unknown:
            raise ConfigError(f"{key}={path}: split {unknown[0]!r} is unknown; allowed: {', '.join(SPLITS)}")
        positions = {split: frame.loc[rows[split], "index"].to_numpy() for split in SPLITS}
    elif "id" in columns:
        positions, rows = _positions_by_id(frame, key, path, source)
    else:
        raise ConfigError(f"{key}={path}: no `index` or `id` column names the samples; columns: {', '.join(columns)}")
    tables = {}
    for split in SPLITS:
        size = len(source.split(split))
        where = positions[split]
        if len(where) == 0:
            continue
        if where.dtype.kind not in "iu":
            raise ConfigError(f"{key}={path}: {split} index {where[0].item()!r} is not a whole number; allowed: "
                              f"0..{size - 1}")
        outside = where[(where < 0) | (where >= size)]
        if len(outside):
            raise ConfigError(f"{key}={path}: {split} index {int(outside[0])} is outside the split; allowed: "
                              f"0..{size - 1}")
        table = np.full((size, values.shape[1]), np.nan)
        covered = np.zeros(size, dtype=bool)
        values_, counts = np.unique(where, return_counts=True)
        if (counts > 1).any():
            raise ConfigError(f"{key}={path}: {split} sample {int(values_[counts > 1][0])} has more than one row; "
                              f"allowed: one row per sample")
        table[where] = values[frame.index.get_indexer(rows[split])]
        covered[where] = True
        if not covered.all():
            raise ConfigError(f"{key}={path}: {int((~covered).sum())} of the {size} {split} samples have no row "
                              f"(e.g. index {int(np.flatnonzero(~covered)[0])}); allowed: one row per sample")
        tables[split] = table
    return tables, kind


def _value_matrix(frame, columns: list, key: str, path: Path) -> tuple[np.ndarray, str]:
    for kind, prefix in (("logits", "logit_"), ("probs", "prob_")):
        if kind in columns:
            cells = [json.loads(cell) if isinstance(cell, str) else list(cell) for cell in frame[kind]]
            if len({len(cell) for cell in cells}) > 1:
                raise ConfigError(f"{key}={path}: the rows of `{kind}` have different lengths; allowed: one value "
                                  f"per class in every row")
            return np.asarray(cells, dtype=np.float64), kind
        numbered = sorted((c for c in columns if str(c).startswith(prefix)), key=lambda c: int(str(c)[len(prefix):]))
        if numbered:
            expected = [f"{prefix}{i}" for i in range(len(numbered))]
            if [str(c) for c in numbered] != expected:
                raise ConfigError(f"{key}={path}: columns {', '.join(map(str, numbered))}; allowed: "
                                  f"{', '.join(expected)} (one per class, numbered from 0)")
            return frame[numbered].to_numpy(dtype=np.float64), kind
    raise ConfigError(f"{key}={path}: no teacher values; allowed: a `logits` or `probs` column (lists), or columns "
                      f"logit_0.. / prob_0..; columns: {', '.join(map(str, columns))}")


def _positions_by_id(frame, key: str, path: Path, source):
    """Dataset positions of the rows named by id, per split (the source's ids: data.id_column)."""
    ids = {split: source.split(split).ids for split in SPLITS}
    if any(value is None for value in ids.values()):
        raise ConfigError(f"{key}={path} names samples by `id`, but data.source has no sample ids; allowed: "
                          f"`split` and `index` columns")
    lookup = {split: {str(value): position for position, value in enumerate(ids[split])} for split in SPLITS}
    has_split = "split" in frame.columns
    positions, rows = {split: [] for split in SPLITS}, {split: [] for split in SPLITS}
    for row, sample in zip(frame.index, frame["id"].astype(str)):
        if has_split:
            split = str(frame.at[row, "split"])
            if split not in SPLITS:
                raise ConfigError(f"{key}={path}: split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
            candidates = [split] if sample in lookup[split] else []
        else:
            candidates = [split for split in SPLITS if sample in lookup[split]]
        if not candidates:
            raise ConfigError(f"{key}={path}: id {sample!r} is not a sample of the data"
                              + (f"'s {split} split" if has_split else "") + "; allowed: the ids of data.id_column")
        if len(candidates) > 1:
            raise ConfigError(f"{key}={path}: id {sample!r} names a sample in {' and '.join(candidates)}; add a "
                              f"`split` column (train, val, test)")
        positions[candidates[0]].append(lookup[candidates[0]][sample])
        rows[candidates[0]].append(row)
    return {split: np.asarray(p, dtype=np.int64) for split, p in positions.items()}, rows
