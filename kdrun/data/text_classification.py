"""Labelled text for classification: local files (CSV, TSV, JSON Lines, Parquet, `save_to_disk`) and the
embedded generated tasks.

A sample is one text, or a pair of texts (NLI, paraphrase), with one class. Its input `x` is a
tuple of one or two strings: no tokenizer belongs to the data, because teacher and student may
read the text with different tokenizers (a T5 teacher, a BERT student). Each text model tokenizes
the raw text itself (kdrun.models.hf_text), with its own vocabulary, maximum length and padding;
a batch carries the texts and their sample indices, so cached teacher outputs are looked up by
index exactly as for images.

Files are read with the `datasets` library (`data.files.{train,val,test}`: a file, or a directory
written by `save_to_disk`, `DIR#SPLIT` for one split of a saved DatasetDict). `text_columns`
names one or two columns, `label_column` the label; `label_names` are the classes in index order,
and `label_map` maps the file's raw label values (ints, strings, booleans) to a class index or
name. Without `data.files.val`, the validation split is carved from the training file (seeded,
stratified; `data.val_size` samples, else `data.val_fraction`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from kdrun.config.checks import (check_choice, check_flag, check_fraction, check_list, check_mapping, check_seed,
                                 check_string, check_whole_number)
from kdrun.data.generated_text import TASKS, generate
from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits, Split, carve_validation
from kdrun.errors import ConfigError

log = logging.getLogger("kdrun")

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
FILE_SPLITS = ("train", "val", "test")


class TextExamples(Dataset):
    """(texts, label) samples: `texts` a tuple of one or two strings."""

    def __init__(self, texts: list[tuple[str, ...]], labels: np.ndarray):
        self.texts, self.labels = texts, labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int):
        return self.texts[index], int(self.labels[index])


def text_split(texts: list[tuple[str, ...]], labels: np.ndarray, ids: np.ndarray | None = None,
               oracle: np.ndarray | None = None) -> Split:
    labels = np.asarray(labels, dtype=np.int64)
    return Split(TextExamples(texts, labels), labels, oracle, ids=ids)


def text_source(train: Split, val: Split, test: Split, class_names) -> SourceSplits:
    return SourceSplits(train=train, val=val, test=test, num_classes=len(class_names), input_shape=(),
                        input_kind="text", class_names=tuple(class_names))


# --- reading files --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """Which columns of a file hold what, and what its labels mean."""

    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    label_map: dict[str, int]  # raw label (as `label_key`) -> class index
    drop_labels: frozenset[str]
    id_column: str | None


def label_key(value) -> str:
    """A raw label as a comparable string: booleans as true/false, integral numbers as integers."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def table_spec(cfg) -> TableSpec:
    """The column and label settings of a text-classification source, checked."""
    columns = check_list(cfg.get("text_columns"), "data.text_columns",
                         meaning="one text column, or two for a pair (premise, hypothesis)")
    if len(columns) not in (1, 2):
        raise ConfigError(f"data.text_columns={list(columns)} names {len(columns)} columns; allowed: one column, or "
                          f"two for a pair of texts")
    for index, column in enumerate(columns):
        check_string(column, f"data.text_columns[{index}]")
    label_column = check_string(cfg.get("label_column"), "data.label_column", meaning="the column of the labels")
    names = check_list(cfg.get("label_names"), "data.label_names",
                       meaning="the classes in index order, e.g. [negative, positive]")
    if len(names) < 2 or len(set(map(str, names))) != len(names):
        raise ConfigError(f"data.label_names={list(names)}; allowed: two or more distinct class names")
    names = tuple(str(name) for name in names)
    mapping = {}
    for raw, target in dict(check_mapping(cfg.get("label_map"), "data.label_map", allow_none=True) or {}).items():
        if isinstance(target, str) and target in names:
            target = names.index(target)
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < len(names):
            raise ConfigError(f"data.label_map.{raw}={target!r}; allowed: a class index 0..{len(names) - 1} or one of "
                              f"data.label_names ({', '.join(names)})")
        mapping[label_key(raw)] = target
    if not mapping:  # the file holds the class indices, or the class names themselves
        mapping = {**{str(index): index for index in range(len(names))}, **{name: i for i, name in enumerate(names)}}
    drop = check_list(cfg.get("drop_labels") or [], "data.drop_labels", meaning="raw labels whose rows are left out "
                      "(e.g. -1 for unlabelled rows)")
    id_column = check_string(cfg.get("id_column"), "data.id_column", allow_none=True,
                             meaning="a column of sample ids (teacher.outputs files may name samples by id)")
    return TableSpec(tuple(columns), label_column, names, mapping, frozenset(label_key(v) for v in drop), id_column)


def binarized(names: tuple[str, ...]) -> tuple[str, ...]:
    """`data.binarize`: class 0 against all others (MNLI: entailment vs not entailment)."""
    return names[0], f"not_{names[0]}"


def binarized_labels(labels) -> np.ndarray:
    return (np.asarray(labels) != 0).astype(np.int64)


def read_table(location: str, root: Path, key: str, id_column: str | None = None):
    """A `datasets.Dataset` from a file or a `save_to_disk` directory (`DIR#SPLIT`: one split of a DatasetDict)."""
    try:
        import datasets
    except ImportError as error:
        raise ConfigError(f"{key}={location}: reading text files needs the `datasets` package; install it with "
                          f"pip install -e \".[text]\"") from error
    datasets.disable_progress_bars()
    path_text, _, split = str(location).partition("#")
    path = Path(path_text).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        try:
            table = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"{key}={location}: {path} is not a directory written by save_to_disk ({error})") from None
        if split and not isinstance(table, datasets.DatasetDict):
            raise ConfigError(f"{key}={location}: {path} holds one Dataset, not a DatasetDict with splits; allowed: "
                              f"{path_text} (without #{split})")
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise ConfigError(f"{key}={location}: {path} holds a DatasetDict; name one of its splits as "
                                  f"{path_text}#SPLIT; allowed splits: {', '.join(table)}")
            table = table[split]
        return table
    if not path.is_file():
        raise ConfigError(f"{key}={location}: {path} does not exist. Put the file there (data.root={root}), set "
                          f"data.download=true where the preset has a download, or point {key} at the file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{key}={location}: unknown file type {path.suffix!r}; allowed: "
                          f"{', '.join(sorted(FORMATS))} files, or a save_to_disk directory")
    try:
        if fmt == "csv":  # through pandas, so ids keep their spelling ("007" stays "007")
            import pandas as pd

            tsv = path.suffix.lower() == ".tsv"  # GLUE's TSVs: tab-separated, no quoting
            frame = pd.read_csv(path, sep="\t" if tsv else ",", quoting=3 if tsv else 0,
                                dtype={id_column: str} if id_column else None)
            return datasets.Dataset.from_pandas(frame, preserve_index=False)
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as error:  # the readers raise their own types (pyarrow, pandas)
        raise ConfigError(f"{key}={location}: {path} could not be read as {fmt} ({type(error).__name__}: "
                          f"{error})") from None


def table_split(table, spec: TableSpec, key: str, binarize: bool, file_split: str) -> Split:
    """A split from a table: its texts, class labels and ids, after the label map (and data.binarize)."""
    missing = [column for column in (*spec.text_columns, spec.label_column, spec.id_column)
               if column is not None and column not in table.column_names]
    if missing:
        raise ConfigError(f"{key}: column {', '.join(map(repr, missing))} is not in the file; allowed: "
                          f"{', '.join(table.column_names)} (data.text_columns, data.label_column, data.id_column)")
    raw_labels = table[spec.label_column]
    keep, labels, unknown = [], [], {}
    for row, raw in enumerate(raw_labels):
        raw_key = label_key(raw)
        if raw_key in spec.drop_labels:
            continue
        if raw_key not in spec.label_map:
            unknown.setdefault(raw_key, row)
            continue
        keep.append(row)
        labels.append(spec.label_map[raw_key])
    if unknown:
        shown = ", ".join(f"{value!r} (row {row})" for value, row in list(unknown.items())[:5])
        allowed = sorted(spec.label_map, key=lambda value: spec.label_map[value])
        raise ConfigError(f"{key}: label {shown} of column {spec.label_column!r} is not in the label map; allowed: "
                          f"{', '.join(allowed)} (data.label_map, data.label_names, or data.drop_labels to leave "
                          f"such rows out)")
    if not keep:
        raise ConfigError(f"{key}: no labelled rows (all {len(raw_labels)} dropped by data.drop_labels)")
    columns = [table[column] for column in spec.text_columns]
    texts = []
    for row in keep:
        values = tuple(column[row] for column in columns)
        bad = [c for c, v in zip(spec.text_columns, values) if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{key}: row {row} has no text in column {bad[0]!r} ({values!r}); allowed: strings")
        texts.append(values)
    ids = table[spec.id_column] if spec.id_column else None
    ids = np.asarray([f"{file_split}:{row}" for row in keep] if ids is None else [label_key(ids[row]) for row in keep])
    return text_split(texts, binarized_labels(labels) if binarize else labels, ids)


def carve(train: Split, cfg, seed: int) -> tuple[Split, Split]:
    """(training pool, validation split): `data.val_size` samples (or `data.val_fraction`), stratified and seeded."""
    size = check_whole_number(cfg.get("val_size"), "data.val_size", minimum=1, maximum=len(train) - 1,
                              allow_none=True, meaning="validation samples carved from the training file; null: "
                                                       "data.val_fraction of it")
    if size is None:
        return carve_validation(train, float(cfg.val_fraction), seed)
    return carve_validation(train, size, seed, "data.val_size")


def check_text_classification_options(cfg) -> None:
    table_spec(cfg)
    files = check_mapping(cfg.get("files"), "data.files", meaning="{train: ..., val: ..., test: ...} file paths")
    for name in files:
        if name not in FILE_SPLITS:
            raise ConfigError(f"data.files.{name} is not a split; allowed: {', '.join(FILE_SPLITS)}")
    for name in ("train", "test"):
        check_string(files.get(name), f"data.files.{name}", meaning="a file (csv, tsv, json, jsonl, parquet) or a "
                                                                    "save_to_disk directory")
    check_string(files.get("val"), "data.files.val", allow_none=True, meaning="null: carved from the training file")
    check_flag(cfg.get("binarize", False), "data.binarize", meaning="class 0 against all the others")
    check_flag(cfg.get("download", False), "data.download")
    hub = cfg.get("hub")
    if cfg.get("download", False) and hub is None:
        raise ConfigError("data.download=true, but this source names no data.hub repository to download from; "
                          "allowed: download=false (put the files under data.root)")


def download_files(cfg, root: Path) -> None:
    """The preset's files from the Hugging Face Hub (`data.hub`: {repo, files}) into data.root."""
    from huggingface_hub import hf_hub_download

    hub = cfg.hub
    for location in cfg.files.values():
        if location is None:
            continue
        relative = str(location).partition("#")[0]
        if not (root / relative).exists():
            log.info("downloading %s from %s", relative, hub.repo)
            hf_hub_download(hub.repo, relative, repo_type="dataset", local_dir=str(root), revision=hub.get("revision"))


@register_source("text_classification", options=check_text_classification_options)
def load_text_classification(cfg) -> SourceSplits:
    spec = table_spec(cfg)
    root = Path(str(cfg.root)).expanduser()
    if cfg.get("download", False):
        download_files(cfg, root)
    binarize = bool(cfg.get("binarize", False))
    names = binarized(spec.label_names) if binarize else spec.label_names
    splits = {}
    for name in FILE_SPLITS:
        location = cfg.files.get(name)
        if location is not None:
            splits[name] = table_split(read_table(location, root, f"data.files.{name}", spec.id_column), spec,
                                       f"data.files.{name}={location}", binarize, name)
    if "val" not in splits:
        splits["train"], splits["val"] = carve(splits["train"], cfg, int(cfg.split_seed))
    for name, split in splits.items():
        log.info("text_classification: %s %s samples", name, f"{len(split):,}")
    return text_source(splits["train"], splits["val"], splits["test"], names)


# --- the embedded generated tasks -----------------------------------------------------------------------------


def check_generated_options(cfg) -> None:
    check_choice(cfg.get("task"), "data.task", tuple(TASKS), meaning="the generated task")
    for key in ("train_size", "val_size", "test_size"):
        check_whole_number(cfg.get(key), f"data.{key}", minimum=2, meaning="generated samples")
    check_fraction(cfg.get("label_noise_rate", 0.0), "data.label_noise_rate", True, False,
                   meaning="the share of generated labels flipped (all splits: the task's Bayes error)")
    check_seed(cfg.get("generator_seed", 0), "data.generator_seed", meaning="the generated texts")
    check_flag(cfg.get("binarize", False), "data.binarize", meaning="class 0 against all the others")


@register_source("generated_text", options=check_generated_options)
def load_generated_text(cfg) -> SourceSplits:
    """The embedded task `data.task` (kdrun.data.generated_text): train, val and test drawn independently."""
    task = cfg.task
    names = TASKS[task]
    binarize = bool(cfg.get("binarize", False))
    splits = {}
    for offset, name in enumerate(FILE_SPLITS):
        texts, labels, _ = generate(task, int(cfg[f"{name}_size"]), int(cfg.get("generator_seed", 0)) * 3 + offset,
                                    float(cfg.get("label_noise_rate", 0.0)))
        splits[name] = text_split(texts, binarized_labels(labels) if binarize else labels, np.asarray([f"{name}:{row}" for row in range(len(texts))]))
    return text_source(splits["train"], splits["val"], splits["test"], binarized(names) if binarize else names)
