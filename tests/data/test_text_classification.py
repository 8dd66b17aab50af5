"""Labelled text for classification: local files in their real formats (CSV, GLUE TSV, JSON Lines, Parquet,
save_to_disk directories), the presets' file layouts, and the embedded generated tasks and their tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from support import data_cfg
from kdrun.config.tree import config_dir
from kdrun.data import load_source
from kdrun.data import generated_text as gen
from kdrun.data.generated_text import generate
from kdrun.errors import ConfigError

TOKENIZERS = Path(gen.__file__).parent / "embedded_tokenizers"


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """`datasets` caches what it reads from CSV/JSON/Parquet files: keep that cache inside the test's tmp_path."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


def reviews(count: int, start: int = 0, labels=None) -> pd.DataFrame:
    """`count` one-text samples, labels alternating 0, 1 unless given."""
    labels = [i % 2 for i in range(count)] if labels is None else list(labels)
    return pd.DataFrame({"text": [f"review number {start + i}" for i in range(count)], "label": labels})


def files_cfg(root: Path, train="train.csv", test="test.csv", val=None, **values):
    """A `data=text_classification` node reading the files under `root`."""
    return data_cfg("text_classification", root, files={"train": train, "val": val, "test": test}, **values)


def samples(split) -> list:
    return [split.dataset[i] for i in range(len(split))]


# --- formats --------------------------------------------------------------------------------------------------


def test_csv_files_give_one_text_tuples_class_indices_and_default_ids(tmp_path):
    reviews(6).to_csv(tmp_path / "train.csv", index=False)
    reviews(3, start=100).to_csv(tmp_path / "val.csv", index=False)
    reviews(4, start=200).to_csv(tmp_path / "test.csv", index=False)
    cfg = files_cfg(tmp_path, val="val.csv")
    assert cfg.num_classes is None
    source = load_source(cfg)
    assert source.input_kind == "text" and source.input_shape == ()
    assert source.class_names == ("negative", "positive") and source.num_classes == 2
    assert cfg.num_classes == 2  # null is filled in from label_names
    assert samples(source.train) == [((f"review number {i}",), i % 2) for i in range(6)]
    assert samples(source.val) == [((f"review number {100 + i}",), i % 2) for i in range(3)]
    assert source.test.dataset[3] == (("review number 203",), 1)
    text, label = source.train.dataset[0]
    assert isinstance(text, tuple) and isinstance(text[0], str) and type(label) is int
    assert source.train.targets.dtype == np.int64 and source.train.targets.tolist() == [0, 1, 0, 1, 0, 1]
    assert source.train.ids.tolist() == [f"train:{i}" for i in range(6)]
    assert source.val.ids.tolist() == ["val:0", "val:1", "val:2"]
    assert source.test.ids.tolist() == [f"test:{i}" for i in range(4)]


def test_glue_style_tsv_is_tab_separated_without_quoting(tmp_path):
    """GLUE's TSVs leave quote characters as they are: a sentence may start with one and never close it."""
    sentences = ['" the film is a mess', "it 's \"funny\" , really", "a 'so-so' , \"odd ending", "fine"]
    lines = ["sentence\tlabel", *(f"{s}\t{i % 2}" for i, s in enumerate(sentences))]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n\"quoted start\t1\nplain\t0\n", encoding="utf-8")
    source = load_source(files_cfg(tmp_path, train="train.tsv", val="dev.tsv", test="dev.tsv",
                                   text_columns=["sentence"]))
    assert samples(source.train) == [((s,), i % 2) for i, s in enumerate(sentences)]
    assert samples(source.test) == [(('"quoted start',), 1), (("plain",), 0)]


def test_json_lines_text_pairs_with_labels_given_by_name(tmp_path):
    names = ["entailment", "neutral", "contradiction"]
    rows = pd.DataFrame({"premise": [f"premise {i}" for i in range(6)], "hypothesis": [f"hyp {i}" for i in range(6)],
                         "gold": [names[i % 3] for i in range(6)]})
    rows.to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    rows.iloc[:3].to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    cfg = files_cfg(tmp_path, train="train.jsonl", val="test.jsonl", test="test.jsonl",
                    text_columns=["premise", "hypothesis"], label_column="gold", label_names=names)
    source = load_source(cfg)
    assert source.num_classes == 3 and cfg.num_classes == 3 and source.class_names == tuple(names)
    assert samples(source.train) == [((f"premise {i}", f"hyp {i}"), i % 3) for i in range(6)]
    assert all(len(x) == 2 for x, _ in samples(source.test))


def test_ids_of_a_csv_keep_their_spelling(tmp_path):
    reviews(4).assign(uid=["007", "010", "1e5", "9"]).to_csv(tmp_path / "train.csv", index=False)
    source = load_source(files_cfg(tmp_path, val="train.csv", test="train.csv", id_column="uid"))
    assert source.train.ids.tolist() == ["007", "010", "1e5", "9"], source.train.ids.tolist()


def test_parquet_with_an_id_column_and_unlabelled_rows_dropped(tmp_path):
    train = reviews(6, labels=[0, 1, -1, 0, -1, 1]).assign(idx=[10, 11, 12, 13, 14, 15])
    train.to_parquet(tmp_path / "train.parquet")
    reviews(2, start=50).assign(idx=[7, 8]).to_parquet(tmp_path / "test.parquet")
    common = dict(train="train.parquet", val="test.parquet", test="test.parquet", drop_labels=[-1])
    source = load_source(files_cfg(tmp_path, id_column="idx", **common))
    assert samples(source.train) == [(("review number 0",), 0), (("review number 1",), 1), (("review number 3",), 0),
                                     (("review number 5",), 1)]
    assert source.train.ids.tolist() == ["10", "11", "13", "15"]  # the file's own ids, as strings
    assert source.test.ids.tolist() == ["7", "8"]
    # without an id column, a sample's id is its row in the file (dropped rows keep their numbers)
    assert load_source(files_cfg(tmp_path, **common)).train.ids.tolist() == ["train:0", "train:1", "train:3",
                                                                             "train:5"]


def test_unlabelled_rows_without_drop_labels_are_refused(tmp_path):
    reviews(4, labels=[0, 1, -1, 1]).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(ConfigError, match=r"label '-1' \(row 2\) of column 'label' is not in the label map; allowed: "
                                          r"0, negative, 1, positive \(.*data.drop_labels"):
        load_source(files_cfg(tmp_path, train="train.parquet", val="train.parquet", test="train.parquet"))


def test_save_to_disk_dataset_and_datasetdict_splits(tmp_path):
    import datasets

    datasets.Dataset.from_pandas(reviews(6)).save_to_disk(str(tmp_path / "train_dir"))
    saved = datasets.DatasetDict({"validation": datasets.Dataset.from_pandas(reviews(2, start=20)),
                                  "test": datasets.Dataset.from_pandas(reviews(3, start=30))})
    saved.save_to_disk(str(tmp_path / "dd"))
    source = load_source(files_cfg(tmp_path, train="train_dir", val="dd#validation", test="dd#test"))
    assert [len(source.train), len(source.val), len(source.test)] == [6, 2, 3]
    assert source.val.dataset[1] == (("review number 21",), 1)
    assert source.test.dataset[0] == (("review number 30",), 0)
    assert source.test.ids.tolist() == ["test:0", "test:1", "test:2"]


def test_datasetdict_directory_without_a_split_lists_its_splits(tmp_path):
    import datasets

    reviews(4).to_csv(tmp_path / "train.csv", index=False)
    datasets.DatasetDict({"validation": datasets.Dataset.from_pandas(reviews(2)),
                          "test": datasets.Dataset.from_pandas(reviews(2))}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"data.files.test=dd: .*dd holds a DatasetDict; name one of its splits as "
                                          r"dd#SPLIT; allowed splits: validation, test"):
        load_source(files_cfg(tmp_path, test="dd"))
    with pytest.raises(ConfigError, match=r"data.files.test=dd#train: .*allowed splits: validation, test"):
        load_source(files_cfg(tmp_path, test="dd#train"))


def test_a_split_name_on_a_single_dataset_directory_is_refused(tmp_path):
    import datasets

    datasets.Dataset.from_pandas(reviews(6)).save_to_disk(str(tmp_path / "train_dir"))
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    try:
        source = load_source(files_cfg(tmp_path, train="train_dir", val="train_dir#validation"))
    except ConfigError:
        return
    raise AssertionError(f"train_dir#validation read {len(source.val)} samples from a directory without splits")


def test_a_directory_not_written_by_save_to_disk_is_refused(tmp_path):
    reviews(4).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match=r"data.files.test=plain: .*plain is not a directory written by save_to_disk"):
        load_source(files_cfg(tmp_path, test="plain"))


# --- labels ---------------------------------------------------------------------------------------------------


def test_boolean_answers_are_mapped_by_label_map(tmp_path):
    """BoolQ's answers are booleans: label_map {"false": 0, "true": 1} maps them."""
    answers = [True, False, False, True, True, False]
    frame = pd.DataFrame({"question": [f"is it {i}?" for i in range(6)], "passage": [f"passage {i}" for i in range(6)],
                          "answer": answers})
    frame.to_parquet(tmp_path / "train.parquet")
    assert pd.read_parquet(tmp_path / "train.parquet")["answer"].dtype == bool
    cfg = files_cfg(tmp_path, train="train.parquet", val="train.parquet", test="train.parquet",
                    text_columns=["question", "passage"], label_column="answer", label_names=["false", "true"],
                    label_map={"false": 0, "true": 1})
    source = load_source(cfg)
    assert source.train.targets.tolist() == [int(a) for a in answers]
    assert source.train.dataset[0] == (("is it 0?", "passage 0"), 1)


def test_label_map_maps_raw_strings_to_class_names_or_indices(tmp_path):
    reviews(6, labels=["yes", "no", "yes", "no", "meh", "meh"]).to_csv(tmp_path / "train.csv", index=False)
    reviews(2, labels=["no", "yes"]).to_csv(tmp_path / "test.csv", index=False)
    cfg = files_cfg(tmp_path, val="test.csv", label_names=["bad", "okay", "good"],
                    label_map={"no": "bad", "meh": 1, "yes": "good"})
    source = load_source(cfg)
    assert source.train.targets.tolist() == [2, 0, 2, 0, 1, 1] and source.test.targets.tolist() == [0, 2]
    assert source.num_classes == 3


def test_string_labels_are_read_as_class_names_without_a_label_map(tmp_path):
    reviews(4, labels=["negative", "positive", "positive", "negative"]).to_csv(tmp_path / "train.csv", index=False)
    reviews(2, labels=[1, 0]).to_csv(tmp_path / "test.csv", index=False)  # indices work as well
    source = load_source(files_cfg(tmp_path, val="test.csv"))
    assert source.train.targets.tolist() == [0, 1, 1, 0] and source.test.targets.tolist() == [1, 0]


def test_a_label_outside_the_label_map_names_the_value_and_its_row(tmp_path):
    reviews(4).to_csv(tmp_path / "train.csv", index=False)
    reviews(4, labels=["negative", "positive", "maybe", "positive"]).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(ConfigError, match=r"data.files.test=test.csv: label 'maybe' \(row 2\) of column 'label' is not "
                                          r"in the label map; allowed: 0, negative, 1, positive"):
        load_source(files_cfg(tmp_path, val="train.csv"))


def test_binarize_reads_class_zero_against_the_rest(tmp_path):
    names = ["entailment", "neutral", "contradiction"]
    frame = pd.DataFrame({"premise": [f"p{i}" for i in range(9)], "hypothesis": [f"h{i}" for i in range(9)],
                          "label": [i % 3 for i in range(9)]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "test.csv", index=False)
    cfg = files_cfg(tmp_path, val="test.csv", text_columns=["premise", "hypothesis"], label_names=names, binarize=True)
    source = load_source(cfg)
    assert source.class_names == ("entailment", "not_entailment")
    assert source.num_classes == 2 and cfg.num_classes == 2
    assert source.train.targets.tolist() == [0, 1, 1] * 3


def test_a_declared_class_count_must_match_the_label_names(tmp_path):
    reviews(4).to_csv(tmp_path / "train.csv", index=False)
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    assert load_source(files_cfg(tmp_path, val="test.csv", num_classes=2)).num_classes == 2
    with pytest.raises(ConfigError, match=r"data.num_classes=3 but source 'text_classification' has 2 classes"):
        load_source(files_cfg(tmp_path, val="test.csv", num_classes=3))


# --- the validation split -------------------------------------------------------------------------------------


def test_val_size_carves_an_exact_stratified_seeded_validation_split(tmp_path):
    reviews(20, labels=[0] * 12 + [1] * 8).to_csv(tmp_path / "train.csv", index=False)
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    first = load_source(files_cfg(tmp_path, val_size=5))
    again = load_source(files_cfg(tmp_path, val_size=5))
    assert len(first.val) == 5 and len(first.train) == 15
    assert sorted(first.val.targets.tolist()) == [0, 0, 0, 1, 1]  # 12:8 kept
    assert first.val.ids.tolist() == again.val.ids.tolist() and first.train.ids.tolist() == again.train.ids.tolist()
    assert sorted([*first.train.ids, *first.val.ids], key=lambda i: int(i.split(":")[1])) == \
        [f"train:{i}" for i in range(20)]
    # the carved samples keep their own texts, labels and ids
    for position, sample_id in enumerate(first.val.ids):
        row = int(sample_id.split(":")[1])
        assert first.val.dataset[position] == ((f"review number {row}",), 0 if row < 12 else 1)
    other = {tuple(load_source(files_cfg(tmp_path, val_size=5, split_seed=seed)).val.ids) for seed in (1, 2, 3)}
    assert other - {tuple(first.val.ids)}  # another split seed, another validation split
    fraction = load_source(files_cfg(tmp_path, val_size=None, val_fraction=0.25))
    assert len(fraction.val) == 5 and len(fraction.train) == 15


def test_bad_val_sizes_are_refused(tmp_path):
    reviews(9, labels=[i % 3 for i in range(9)]).to_csv(tmp_path / "train.csv", index=False)
    reviews(3, labels=[0, 1, 2]).to_csv(tmp_path / "test.csv", index=False)
    three = dict(label_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"data.val_size=9 "):
        load_source(files_cfg(tmp_path, val_size=9, **three))
    with pytest.raises(ConfigError, match=r"data.val_size=2: a validation split cannot be carved from the 9 training "
                                          r"samples class by class"):
        load_source(files_cfg(tmp_path, val_size=2, **three))
    assert len(load_source(files_cfg(tmp_path, val_size=3, **three)).val) == 3


# --- bad settings and files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"text_columns": ["review"]},
     r"data.files.train=train.csv: column 'review' is not in the file; allowed: text, label"),
    ({"text_columns": ["text", "label"], "label_column": "gold"},
     r"column 'gold' is not in the file; allowed: text, label"),
    ({"id_column": "uid"}, r"column 'uid' is not in the file; allowed: text, label"),
    ({"text_columns": ["a", "b", "c"]},
     r"data.text_columns=\['a', 'b', 'c'\] names 3 columns; allowed: one column, or two for a pair"),
    ({"label_names": ["only"]}, r"data.label_names=\['only'\]; allowed: two or more distinct class names"),
    ({"label_names": ["same", "same"]}, r"data.label_names=\['same', 'same'\]; allowed: two or more distinct"),
    ({"label_map": {"x": 2}}, r"data.label_map.x=2; allowed: a class index 0..1 or one of data.label_names "
                              r"\(negative, positive\)"),
    ({"label_map": {"x": "neutral"}}, r"data.label_map.x='neutral'; allowed: a class index 0..1"),
    ({"download": True}, r"data.download=true, but this source names no data.hub repository.*allowed: download=false"),
    ({"files": {"train": "train.csv", "dev": "test.csv", "test": "test.csv"}},
     r"data.files.dev is not a split; allowed: train, val, test"),
    ({"files": {"train": "missing.csv", "test": "test.csv"}},
     r"data.files.train=missing.csv: .*missing.csv does not exist.*set data.download=true"),
    ({"files": {"train": "train.txt", "test": "test.csv"}},
     r"data.files.train=train.txt: unknown file type '.txt'; allowed: .csv, .json, .jsonl, .parquet, .tsv files, "
     r"or a save_to_disk directory"),
    ({"drop_labels": [0, 1]}, r"data.files.train=train.csv: no labelled rows \(all 6 dropped by data.drop_labels\)"),
])
def test_bad_settings_name_the_value_and_what_is_allowed(tmp_path, values, message):
    reviews(6).to_csv(tmp_path / "train.csv", index=False)
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "train.txt").write_text("text,label\na,0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_source(data_cfg("text_classification", tmp_path, **values))


def test_a_missing_file_names_its_full_path_and_data_download(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_source(data_cfg("text_classification", tmp_path))
    message = str(raised.value)
    assert f"{tmp_path / 'train.csv'} does not exist" in message and "data.download=true" in message
    assert f"data.root={tmp_path}" in message


def test_a_row_without_text_is_refused(tmp_path):
    reviews(4).assign(text=["one", None, "three", "four"]).to_csv(tmp_path / "train.csv", index=False)
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(ConfigError, match=r"data.files.train=train.csv: row 1 has no text in column 'text'"):
        load_source(files_cfg(tmp_path, val="test.csv"))


def test_an_unreadable_file_is_a_config_error(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"not a parquet file at all")
    reviews(2).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(ConfigError, match=r"data.files.train=train.parquet: .*could not be read as parquet"):
        load_source(files_cfg(tmp_path, train="train.parquet", val="test.csv"))


# --- the presets --------------------------------------------------------------------------------------------

PRESET_TRAIN_FILES = {
    "sst2": "glue/sst2/train-00000-of-00001.parquet",
    "mnli": "glue/mnli/train-00000-of-00001.parquet",
    "qqp": "glue/qqp/train-00000-of-00001.parquet",
    "imdb": "imdb/plain_text/train-00000-of-00001.parquet",
    "ag_news": "ag_news/data/train-00000-of-00001.parquet",
    "anli": "anli/plain_text/train_r3-00000-of-00001.parquet",
    "boolq": "boolq/data/train-00000-of-00001.parquet",
}


def preset_cfg(name: str, root: Path, **values):
    """The `data` node of `kdrun data=NAME` for a preset built on text_classification. support.data_cfg reads the
    preset's file alone and does not follow its Hydra `defaults` (text_classification, then _self_), so the preset's
    own settings are laid over text_classification's here, as Hydra composes them."""
    cfg = data_cfg("text_classification", root)
    own = OmegaConf.to_container(OmegaConf.load(config_dir() / "data" / f"{name}.yaml"), resolve=False)
    assert own.pop("defaults") == ["text_classification", "_self_"]
    for key, value in {**own, **values}.items():
        cfg[key] = value
    return cfg


@pytest.mark.parametrize("preset", sorted(PRESET_TRAIN_FILES))
def test_every_preset_without_its_files_names_the_missing_file(tmp_path, preset):
    cfg = preset_cfg(preset, tmp_path)
    assert cfg.source == "text_classification" and cfg.download is False and cfg.hub.repo
    relative = PRESET_TRAIN_FILES[preset].split("/", 1)[1]
    with pytest.raises(ConfigError) as raised:
        load_source(cfg)
    message = str(raised.value)
    assert message.startswith(f"data.files.train={relative}: ")
    assert f"{tmp_path / PRESET_TRAIN_FILES[preset]} does not exist" in message
    assert "data.download=true" in message


def write_parquet(root: Path, relative: str, frame: pd.DataFrame) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)


def test_sst2_preset_reads_glue_parquet_files(tmp_path):
    train = pd.DataFrame({"sentence": [f"sentence {i}" for i in range(10)],
                          "label": [0, 1, 0, 1, 0, 1, 0, 1, -1, -1], "idx": list(range(100, 110))})
    write_parquet(tmp_path, "glue/sst2/train-00000-of-00001.parquet", train)
    write_parquet(tmp_path, "glue/sst2/validation-00000-of-00001.parquet",
                  pd.DataFrame({"sentence": ["good", "bad", "fine"], "label": [1, 0, 1], "idx": [0, 1, 2]}))
    cfg = preset_cfg("sst2", tmp_path, val_size=2)
    source = load_source(cfg)
    assert cfg.num_classes == 2 and source.class_names == ("negative", "positive")
    assert [len(source.train), len(source.val), len(source.test)] == [6, 2, 3]  # the two -1 rows dropped
    assert sorted([*source.train.ids, *source.val.ids]) == [str(i) for i in range(100, 108)]
    assert sorted(source.val.targets.tolist()) == [0, 1]
    assert samples(source.test) == [(("good",), 1), (("bad",), 0), (("fine",), 1)]
    assert source.test.ids.tolist() == ["0", "1", "2"]


def mnli_files(root: Path) -> None:
    rows = 12
    frame = pd.DataFrame({"premise": [f"premise {i}" for i in range(rows)],
                          "hypothesis": [f"hyp {i}" for i in range(rows)],
                          "label": [i % 3 for i in range(rows)], "idx": list(range(rows))})
    write_parquet(root, "glue/mnli/train-00000-of-00001.parquet", frame)
    write_parquet(root, "glue/mnli/validation_mismatched-00000-of-00001.parquet", frame.iloc[:4])


@pytest.mark.parametrize("binarize, names", [(False, ("entailment", "neutral", "contradiction")),
                                             (True, ("entailment", "not_entailment"))])
def test_mnli_preset_reads_pairs_from_glue_parquet_files(tmp_path, binarize, names):
    mnli_files(tmp_path)
    cfg = preset_cfg("mnli", tmp_path, val_size=3, binarize=binarize)
    source = load_source(cfg)
    assert source.class_names == names and cfg.num_classes == len(names)
    assert [len(source.train), len(source.val), len(source.test)] == [9, 3, 4]
    assert sorted(source.val.targets.tolist()) == ([0, 1, 1] if binarize else [0, 1, 2])
    assert source.test.dataset[2] == (("premise 2", "hyp 2"), 1 if binarize else 2)
    first_id = source.train.ids[0]
    assert source.train.dataset[0][0] == (f"premise {first_id}", f"hyp {first_id}")


def test_boolq_preset_maps_its_boolean_answers(tmp_path):
    frame = pd.DataFrame({"question": [f"q{i}" for i in range(8)], "answer": [True, False] * 4,
                          "passage": [f"p{i}" for i in range(8)]})
    write_parquet(tmp_path, "boolq/data/train-00000-of-00001.parquet", frame)
    write_parquet(tmp_path, "boolq/data/validation-00000-of-00001.parquet", frame.iloc[:3])
    source = load_source(preset_cfg("boolq", tmp_path, val_size=2))
    assert source.class_names == ("false", "true")
    assert samples(source.test) == [(("q0", "p0"), 1), (("q1", "p1"), 0), (("q2", "p2"), 1)]
    assert source.test.ids.tolist() == ["test:0", "test:1", "test:2"]


def test_download_fetches_the_presets_missing_files_from_its_hub_repository(tmp_path, monkeypatch):
    """data.download=true asks huggingface_hub for each file not yet under data.root (here a stand-in writes it)."""
    import huggingface_hub

    calls = []
    frame = pd.DataFrame({"sentence": [f"s{i}" for i in range(6)], "label": [0, 1] * 3, "idx": list(range(6))})

    def fake_download(repo_id, filename, repo_type=None, local_dir=None, revision=None):
        calls.append((repo_id, filename, repo_type, local_dir, revision))
        write_parquet(Path(local_dir), filename, frame)
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    source = load_source(preset_cfg("sst2", tmp_path, val_size=2, download=True))
    root = str(tmp_path / "glue")
    assert calls == [("nyu-mll/glue", "sst2/train-00000-of-00001.parquet", "dataset", root, None),
                     ("nyu-mll/glue", "sst2/validation-00000-of-00001.parquet", "dataset", root, None)]
    assert [len(source.train), len(source.val), len(source.test)] == [4, 2, 6]
    load_source(preset_cfg("sst2", tmp_path, val_size=2, download=True))
    assert len(calls) == 2  # files already there are not fetched again


# --- the generated tasks ------------------------------------------------------------------------------------

SMALL = dict(train_size=30, val_size=10, test_size=12)


def all_samples(source) -> list:
    return [samples(source.split(name)) for name in ("train", "val", "test")]


def test_generated_sentiment_is_deterministic_per_generator_seed(tmp_path):
    cfg = data_cfg("toy_sentiment", tmp_path, **SMALL)
    first, again = load_source(cfg), load_source(data_cfg("toy_sentiment", tmp_path, **SMALL))
    assert [len(first.train), len(first.val), len(first.test)] == [30, 10, 12]
    assert first.input_kind == "text" and first.class_names == ("negative", "positive") and first.num_classes == 2
    assert all_samples(first) == all_samples(again)
    assert all(len(x) == 1 and isinstance(x[0], str) and label in (0, 1) for x, label in samples(first.train))
    assert first.train.ids.tolist() == [f"train:{i}" for i in range(30)] and first.test.ids[-1] == "test:11"
    # the splits are drawn independently, and another seed draws other texts
    assert samples(first.train)[:10] != samples(first.val)
    other = load_source(data_cfg("toy_sentiment", tmp_path, generator_seed=1, **SMALL))
    for mine, theirs in zip(all_samples(first), all_samples(other)):
        assert mine != theirs


def test_generated_entailment_gives_pairs_of_three_classes(tmp_path):
    source = load_source(data_cfg("toy_entailment", tmp_path, train_size=60, val_size=5, test_size=5))
    assert source.class_names == ("entailment", "neutral", "contradiction") and source.num_classes == 3
    pairs = samples(source.train)
    assert all(len(x) == 2 and all(isinstance(t, str) and t for t in x) for x, _ in pairs)
    assert {label for _, label in pairs} == {0, 1, 2}
    assert samples(source.train) == samples(load_source(data_cfg("toy_entailment", tmp_path, train_size=60,
                                                                 val_size=5, test_size=5)).train)
    assert samples(source.train) != samples(load_source(data_cfg("toy_entailment", tmp_path, train_size=60, val_size=5,
                                                                 test_size=5, generator_seed=7)).train)


def test_generated_splits_are_the_generator_output_for_their_seeds(tmp_path):
    """Split k of generator_seed s is generate(task, size, 3 * s + k): train 0, val 1, test 2."""
    source = load_source(data_cfg("toy_sentiment", tmp_path, generator_seed=2, label_noise_rate=0.3, **SMALL))
    for offset, name in enumerate(("train", "val", "test")):
        texts, noisy, _ = generate("sentiment", SMALL[f"{name}_size"], 6 + offset, 0.3)
        assert [x for x, _ in samples(source.split(name))] == texts
        assert source.split(name).targets.tolist() == noisy.tolist()


def test_generated_entailment_binarized_by_the_preset_alone(tmp_path):
    source = load_source(data_cfg("toy_entailment", tmp_path, binarize=True, **SMALL))
    assert source.class_names == ("entailment", "not_entailment")


def test_generated_entailment_binarized(tmp_path):
    plain = load_source(data_cfg("toy_entailment", tmp_path, **SMALL))
    binary = load_source(data_cfg("toy_entailment", tmp_path, binarize=True, num_classes=2, **SMALL))
    assert binary.class_names == ("entailment", "not_entailment") and binary.num_classes == 2
    assert binary.train.targets.tolist() == (plain.train.targets != 0).astype(int).tolist()


@pytest.mark.parametrize("values, message", [
    ({"task": "poetry"}, r"data.task='poetry'.*sentiment.*entailment"),
    ({"train_size": 1}, r"data.train_size=1 "),
    ({"label_noise_rate": 1.0}, r"data.label_noise_rate=1.0 "),
    ({"generator_seed": -1}, r"data.generator_seed=-1 "),
])
def test_bad_generated_settings_are_refused(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        load_source(data_cfg("toy_sentiment", tmp_path, **{**SMALL, **values}))


def sentiment_rule(text: str) -> int:
    """The sentiment rule, read back from the text: a clause's adjective decides its polarity, a negation flips it;
    after "but" the last clause decides, else the majority (ties: the first clause)."""
    for filler in gen.FILLERS:
        if filler and text.startswith(filler):
            text = text[len(filler):]
    if " but " in text:
        clauses = [text.split(" but ")[-1]]
    else:
        clauses = text.split(" and ")

    def polarity(part: str) -> int:
        words = part.split()
        assert words[-1] in gen.POSITIVE + gen.NEGATIVE, part
        return int((words[-1] in gen.POSITIVE) != any(word in ("not", "never") for word in words))

    votes = [polarity(part) for part in clauses]
    return votes[0] if sum(votes) * 2 == len(votes) else int(sum(votes) * 2 > len(votes))


def entailment_rule(premise: str, hypothesis: str) -> int:
    """A changed colour, animal or action contradicts; an added place or manner is neutral; else entailment."""
    said, claimed = premise.split(), hypothesis.split()
    for vocabulary in (gen.COLOURS, gen.ANIMALS, gen.ACTIONS):
        if {w for w in claimed if w in vocabulary} - {w for w in said if w in vocabulary}:
            return gen.CONTRADICTION
    if "happily" in claimed or any(place in hypothesis for place in gen.PLACES):
        return gen.NEUTRAL
    assert set(claimed) <= set(said), (premise, hypothesis)
    return gen.ENTAILMENT


def test_without_label_noise_the_labels_follow_the_rule():
    texts, noisy, clean = generate("sentiment", 400, seed=3, label_noise_rate=0.0)
    assert np.array_equal(noisy, clean)
    assert clean.tolist() == [sentiment_rule(text) for (text,) in texts]
    assert 0.3 < clean.mean() < 0.7
    pairs, noisy, clean = generate("entailment", 400, seed=3, label_noise_rate=0.0)
    assert np.array_equal(noisy, clean)
    assert clean.tolist() == [entailment_rule(*pair) for pair in pairs]
    assert np.bincount(clean, minlength=3).min() > 80


@pytest.mark.parametrize("task", ["sentiment", "entailment"])
def test_label_noise_flips_about_its_rate_of_labels(task):
    texts, noisy, clean = generate(task, 1000, seed=11, label_noise_rate=0.2)
    assert texts[:100] == generate(task, 100, seed=11, label_noise_rate=0.0)[0]  # noise changes labels only
    flipped = noisy != clean
    assert 0.15 < flipped.mean() < 0.25
    assert noisy.min() >= 0 and noisy.max() < len(gen.TASKS[task])


@pytest.mark.parametrize("name", ["wordpiece", "sentencepiece"])
def test_embedded_tokenizers_know_every_generated_word(name):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZERS / name), local_files_only=True)
    unknown = tokenizer.unk_token_id
    assert unknown is not None
    assert unknown in tokenizer("zebra ⚡")["input_ids"]  # the check below can fail
    sentences = [text for (text,) in generate("sentiment", 300, seed=5, label_noise_rate=0.1)[0]]
    sentences += [text for pair in generate("entailment", 300, seed=5)[0] for text in pair]
    words = sorted({word for text in sentences for word in text.split()}
                   | {word for group in (gen.POSITIVE, gen.NEGATIVE, gen.SUBJECTS, gen.INTENSIFIERS, gen.NEGATIONS,
                                         gen.FILLERS, gen.COLOURS, gen.SIZES, gen.ANIMALS, gen.ACTIONS, gen.PLACES)
                      for phrase in group for word in phrase.split()})
    encoded = tokenizer(sentences + words)["input_ids"]
    bad = [text for text, ids in zip(sentences + words, encoded) if unknown in ids]
    assert not bad
