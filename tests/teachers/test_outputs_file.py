"""Teachers known only through their outputs (`teacher.outputs=FILE`): the file formats, their checks against the
data's splits, and the outputs-only teacher's lookup by sample index."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from support import data_cfg
from kdrun.data import load_source
from kdrun.data.sources import SourceSplits, tensor_split
from kdrun.data.text_classification import text_source, text_split
from kdrun.errors import ConfigError
from kdrun.teachers.outputs_file import OutputsTeacher, load_outputs_file, logits_of

SIZES = {"train": 20, "val": 8, "test": 10}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The toy sentiment task with 20 / 8 / 10 samples, 2 classes, ids "train:0", ..."""
    splits = load_source(data_cfg("toy_sentiment", tmp_path_factory.mktemp("data"), train_size=20, val_size=8,
                                  test_size=10))
    assert {name: len(splits.split(name)) for name in SIZES} == SIZES and splits.num_classes == 2
    return splits


def random_logits(seed: int = 0, classes: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {split: rng.normal(size=(size, classes)).astype(np.float32) * 3 for split, size in SIZES.items()}


def softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def random_probs(seed: int = 0) -> dict[str, np.ndarray]:
    return {split: softmax(values.astype(np.float64)) for split, values in random_logits(seed).items()}


def long_table(values: dict[str, np.ndarray], prefix: str = "prob_", seed: int = 0) -> pd.DataFrame:
    """One row per sample (split, index, prefix0, prefix1, ...), rows shuffled."""
    frames = [pd.DataFrame({"split": split, "index": np.arange(len(table)),
                            **{f"{prefix}{c}": table[:, c] for c in range(table.shape[1])}})
              for split, table in values.items()]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def as_numpy(tables: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {split: table.numpy() for split, table in tables.items()}


def assert_probs_equal(tables: dict[str, torch.Tensor], probs: dict[str, np.ndarray]) -> None:
    assert set(tables) == set(SIZES)
    for split, expected in probs.items():
        assert tables[split].dtype == torch.float32 and tables[split].shape == expected.shape
        np.testing.assert_allclose(torch.softmax(tables[split].double(), 1).numpy(), expected, atol=1e-6)


# --- formats --------------------------------------------------------------------------------------------------


def test_npz_logits_round_trip_with_the_file_sha256(tmp_path, source):
    logits = random_logits()
    path = tmp_path / "teacher.npz"
    np.savez(path, **logits)
    tables, digest = load_outputs_file(str(path), source)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(tables) == set(SIZES)
    for split, expected in logits.items():
        assert tables[split].dtype == torch.float32
        assert torch.equal(tables[split], torch.from_numpy(expected))
    np.savez(path, kind="logits", **random_logits(seed=1))  # another file, another digest
    assert load_outputs_file(str(path), source)[1] != digest


def test_npz_probabilities_become_log_probabilities(tmp_path, source):
    probs = random_probs()
    path = tmp_path / "teacher.npz"
    np.savez(path, kind="probs", **probs)
    tables, _ = load_outputs_file(str(path), source)
    assert_probs_equal(tables, probs)
    np.testing.assert_allclose(tables["val"].numpy(), np.log(probs["val"]), rtol=1e-5)


def test_probabilities_within_the_tolerance_are_renormalised(tmp_path, source):
    probs = random_probs()
    probs["train"][0] *= 1.0005
    path = tmp_path / "teacher.npz"
    np.savez(path, kind="probs", **probs)
    tables, _ = load_outputs_file(str(path), source)
    np.testing.assert_allclose(torch.softmax(tables["train"][0].double(), 0).numpy(), probs["train"][0] / 1.0005,
                               atol=1e-6)


def test_a_zero_probability_stays_finite(tmp_path, source):
    probs = random_probs()
    probs["test"][0] = [1.0, 0.0]
    path = tmp_path / "teacher.npz"
    np.savez(path, kind="probs", **probs)
    tables, _ = load_outputs_file(str(path), source)
    assert torch.isfinite(tables["test"]).all()
    assert torch.softmax(tables["test"][0].double(), 0).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def test_pt_file_of_tensors(tmp_path, source):
    logits = random_logits()
    path = tmp_path / "teacher.pt"
    torch.save({**{split: torch.from_numpy(values) for split, values in logits.items()}, "kind": "logits"}, path)
    tables, digest = load_outputs_file(str(path), source)
    assert all(torch.equal(tables[split], torch.from_numpy(logits[split])) for split in SIZES)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.save({split: torch.from_numpy(values) for split, values in random_probs().items()} | {"kind": "probs"}, path)
    assert_probs_equal(load_outputs_file(str(path), source)[0], random_probs())


def test_csv_table_of_shuffled_rows_comes_back_in_index_order(tmp_path, source):
    probs = random_probs()
    frame = long_table(probs)
    assert frame["index"].tolist() != sorted(frame["index"].tolist())
    path = tmp_path / "teacher.csv"
    frame.to_csv(path, index=False)
    tables, _ = load_outputs_file(str(path), source)
    assert_probs_equal(tables, probs)


def test_csv_logit_columns(tmp_path, source):
    logits = random_logits()
    path = tmp_path / "teacher.csv"
    long_table(logits, prefix="logit_").to_csv(path, index=False)
    tables, _ = load_outputs_file(str(path), source)
    for split, expected in logits.items():
        np.testing.assert_allclose(tables[split].numpy(), expected, rtol=1e-6)


def test_jsonl_by_id_with_logit_lists_and_no_split_column(tmp_path, source):
    logits = random_logits()
    rows = [{"id": f"{split}:{i}", "logits": values[i].tolist()} for split, values in logits.items()
            for i in range(len(values))]
    rows.reverse()
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tables, _ = load_outputs_file(str(path), source)
    for split, expected in logits.items():
        np.testing.assert_allclose(tables[split].numpy(), expected, rtol=1e-6)


def test_parquet_by_split_and_id(tmp_path, source):
    logits = random_logits()
    frame = long_table(logits, prefix="logit_")
    frame["id"] = frame["split"] + ":" + frame["index"].astype(str)
    path = tmp_path / "teacher.parquet"
    frame.drop(columns="index").to_parquet(path)
    tables, _ = load_outputs_file(str(path), source)
    for split, expected in logits.items():
        np.testing.assert_allclose(tables[split].numpy(), expected, rtol=1e-6)


def test_parquet_with_a_list_column_of_probabilities(tmp_path, source):
    probs = random_probs()
    frame = pd.DataFrame([{"split": split, "index": i, "probs": table[i].tolist()} for split, table in probs.items()
                          for i in range(len(table))])
    path = tmp_path / "teacher.parquet"
    frame.to_parquet(path)
    assert_probs_equal(load_outputs_file(str(path), source)[0], probs)


def test_ids_must_be_unique_across_splits_without_a_split_column(tmp_path):
    """The data's own ids (data.id_column) may repeat across splits: then a `split` column says which is meant."""
    def split_of(ids):
        return text_split([(f"text {i}",) for i in range(len(ids))], np.arange(len(ids)) % 2, np.asarray(ids))

    data = text_source(split_of(["a", "b"]), split_of(["c", "d"]), split_of(["a", "e"]), ("negative", "positive"))
    rows = [{"id": sample, "logits": [0.0, 1.0]} for sample in ("a", "b", "c", "d", "e")]
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"id 'a' names a sample in train and test; add a `split` column"):
        load_outputs_file(str(path), data)
    rows = [{"split": split, **row} for split, row in zip(["train", "train", "val", "val", "test"], rows)]
    rows.append({"split": "test", "id": "a", "logits": [2.0, 0.0]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tables, _ = load_outputs_file(str(path), data)
    assert tables["test"].tolist() == [[2.0, 0.0], [0.0, 1.0]] and tables["train"].tolist() == [[0.0, 1.0]] * 2


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_ids_that_look_like_numbers_match_the_datas_ids(tmp_path, suffix):
    def split_of(ids):
        return text_split([(f"text {i}",) for i in range(len(ids))], np.arange(len(ids)) % 2, np.asarray(ids))

    data = text_source(split_of(["007", "1e5"]), split_of(["010"]), split_of(["12"]), ("negative", "positive"))
    frame = pd.DataFrame({"id": ["007", "1e5", "010", "12"], "logit_0": [0.0, 1.0, 2.0, 3.0], "logit_1": 0.0})
    path = tmp_path / f"teacher{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    tables, _ = load_outputs_file(str(path), data)
    assert tables["train"][:, 0].tolist() == [0.0, 1.0] and tables["test"][:, 0].tolist() == [3.0]


def test_ids_need_a_source_with_sample_ids(tmp_path):
    def split_of(size):
        return tensor_split(np.zeros((size, 3)), np.arange(size) % 2)

    data = SourceSplits(train=split_of(2), val=split_of(2), test=split_of(2), num_classes=2, input_shape=(3,))
    path = tmp_path / "teacher.csv"
    pd.DataFrame({"id": ["0", "1"], "logit_0": [0.0, 1.0], "logit_1": [1.0, 0.0]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"names samples by `id`, but data.source has no sample ids; allowed: `split` "
                                          r"and `index` columns"):
        load_outputs_file(str(path), data)


# --- bad files ------------------------------------------------------------------------------------------------


def save_npz(tmp_path, **arrays):
    path = tmp_path / "teacher.npz"
    np.savez(path, **arrays)
    return str(path)


def save_csv(tmp_path, frame: pd.DataFrame, name: str = "teacher.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_wrong_class_count_names_both_counts(tmp_path, source):
    path = save_npz(tmp_path, **random_logits(classes=3))
    with pytest.raises(ConfigError, match=r"teacher.outputs=.*teacher.npz: 3 classes per sample, but the data has 2 "
                                          r"\(negative, positive\); allowed: 2"):
        load_outputs_file(path, source)
    table = save_csv(tmp_path, long_table(random_probs(), prefix="logit_").assign(logit_2=0.0))
    with pytest.raises(ConfigError, match=r"3 classes per sample, but the data has 2"):
        load_outputs_file(table, source)


def test_a_missing_split_is_named(tmp_path, source):
    logits = random_logits()
    del logits["test"]
    with pytest.raises(ConfigError, match=r"has no outputs for the test split \(10 samples\); allowed: outputs for "
                                          r"every sample of train, val, test"):
        load_outputs_file(save_npz(tmp_path, **logits), source)
    frame = long_table(random_probs())
    with pytest.raises(ConfigError, match=r"has no outputs for the val split \(8 samples\)"):
        load_outputs_file(save_csv(tmp_path, frame[frame["split"] != "val"]), source)


def test_an_array_of_the_wrong_length_names_the_split_size(tmp_path, source):
    logits = random_logits()
    logits["val"] = logits["val"][:5]
    with pytest.raises(ConfigError, match=r"the val outputs have shape \(5, 2\), but the val split has 8 samples; "
                                          r"allowed: \(8, 2\)"):
        load_outputs_file(save_npz(tmp_path, **logits), source)


def test_samples_without_a_row_are_counted(tmp_path, source):
    frame = long_table(random_probs())
    frame = frame[~((frame["split"] == "val") & frame["index"].isin([3, 5]))]
    with pytest.raises(ConfigError, match=r"2 of the 8 val samples have no row \(e.g. index 3\); allowed: one row per "
                                          r"sample"):
        load_outputs_file(save_csv(tmp_path, frame), source)


def test_an_unknown_id_is_named(tmp_path, source):
    rows = [{"id": f"{split}:{i}", "logits": [0.0, 1.0]} for split, size in SIZES.items() for i in range(size)]
    rows[3]["id"] = "train:99"
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"id 'train:99' is not a sample of the data; allowed: the ids of "
                                          r"data.id_column"):
        load_outputs_file(str(path), source)
    frame = pd.DataFrame({"split": "val", "id": ["train:0"], "logit_0": [0.0], "logit_1": [1.0]})
    with pytest.raises(ConfigError, match=r"id 'train:0' is not a sample of the data's val split"):
        load_outputs_file(save_csv(tmp_path, frame), source)


def frame_with_index(split: str, index: int, value: int) -> pd.DataFrame:
    """A complete table of shuffled rows, the row of (split, index) given index `value` instead."""
    frame = long_table(random_probs())
    frame.loc[frame.index[(frame["split"] == split) & (frame["index"] == index)], "index"] = value
    return frame


@pytest.mark.parametrize("split, index, value", [("train", 7, 20), ("test", 0, -1), ("val", 3, 100)])
def test_an_index_outside_its_split_is_refused(tmp_path, source, split, index, value):
    size = SIZES[split]
    with pytest.raises(ConfigError, match=rf"teacher.csv: {split} index .* is outside the split; allowed: "
                                          rf"0\.\.{size - 1}"):
        load_outputs_file(save_csv(tmp_path, frame_with_index(split, index, value)), source)


def test_an_index_outside_its_split_is_shown_as_a_number(tmp_path, source):
    with pytest.raises(ConfigError) as raised:
        load_outputs_file(save_csv(tmp_path, frame_with_index("train", 7, 20)), source)
    assert ": train index 20 is outside the split; allowed: 0..19" in str(raised.value), str(raised.value)


def test_a_negative_index_is_the_one_named(tmp_path, source):
    with pytest.raises(ConfigError) as raised:
        load_outputs_file(save_csv(tmp_path, frame_with_index("test", 0, -1)), source)
    assert "-1" in str(raised.value).split("is outside")[0], str(raised.value)


def test_duplicated_rows_for_a_sample_are_refused(tmp_path, source):
    frame = long_table(random_probs())
    frame = pd.concat([frame, frame[(frame["split"] == "val") & (frame["index"] == 2)]], ignore_index=True)
    with pytest.raises(ConfigError, match=r"val sample 2 has more than one row; allowed: one row per sample"):
        load_outputs_file(save_csv(tmp_path, frame), source)
    rows = [{"id": f"{split}:{i}", "logits": [0.0, 1.0]} for split, size in SIZES.items() for i in range(size)]
    rows.append({"id": "test:4", "logits": [1.0, 0.0]})
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"test sample 4 has more than one row"):
        load_outputs_file(str(path), source)


def test_probabilities_must_sum_to_one_and_be_non_negative(tmp_path, source):
    probs = random_probs()
    probs["val"][4] = [0.5, 0.4]
    with pytest.raises(ConfigError, match=r"teacher.outputs=.*teacher.npz \(val\): row 4 is not a probability vector "
                                          r"\(\[0.5, 0.4\], sum 0.9000\); allowed: non-negative values summing to 1"):
        load_outputs_file(save_npz(tmp_path, kind="probs", **probs), source)
    probs = random_probs()
    probs["train"][2] = [1.5, -0.5]
    with pytest.raises(ConfigError, match=r"\(train\): row 2 is not a probability vector \(\[1.5, -0.5\], "
                                          r"sum 1.0000\)"):
        load_outputs_file(save_npz(tmp_path, kind="probs", **probs), source)
    frame = long_table(random_probs())
    frame.loc[(frame["split"] == "test") & (frame["index"] == 6), "prob_0"] = 0.0
    frame.loc[(frame["split"] == "test") & (frame["index"] == 6), "prob_1"] = 0.5
    with pytest.raises(ConfigError, match=r"\(test\): row 6 is not a probability vector"):
        load_outputs_file(save_csv(tmp_path, frame), source)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(tmp_path, source, bad):
    logits = random_logits()
    logits["test"][3, 1] = bad
    with pytest.raises(ConfigError, match=r"\(test\): row 3 holds a non-finite value .*; allowed: finite logits"):
        load_outputs_file(save_npz(tmp_path, **logits), source)


def test_a_missing_file_is_named(tmp_path, source):
    missing = tmp_path / "nowhere" / "teacher.npz"
    with pytest.raises(ConfigError, match=rf"teacher.outputs={missing}: no such file; allowed: a .npz, .pt, .csv, "
                                          rf"\.jsonl, .json, .parquet file"):
        load_outputs_file(str(missing), source)


def test_an_unknown_file_type_is_named(tmp_path, source):
    path = tmp_path / "teacher.txt"
    path.write_text("0.1 0.9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"teacher.txt: unknown file type '.txt'; allowed: .npz, .pt, .csv, .jsonl, "
                                          r"\.json, .parquet"):
        load_outputs_file(str(path), source)


def test_a_table_without_index_or_id_column_lists_its_columns(tmp_path, source):
    frame = long_table(random_probs()).drop(columns="index")
    with pytest.raises(ConfigError, match=r"no `index` or `id` column names the samples; columns: split, prob_0, "
                                          r"prob_1"):
        load_outputs_file(save_csv(tmp_path, frame), source)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="split"), r"an `index` column needs a `split` column \(train, val, test\) beside it"),
    (lambda f: f.replace({"split": {"val": "dev"}}), r"split 'dev' is unknown; allowed: train, val, test"),
    (lambda f: f.rename(columns={"prob_1": "prob_2"}), r"columns prob_0, prob_2; allowed: prob_0, prob_1 \(one per "
                                                       r"class, numbered from 0\)"),
    (lambda f: f.rename(columns={"prob_0": "p0", "prob_1": "p1"}),
     r"no teacher values; allowed: a `logits` or `probs` column \(lists\), or columns logit_0.. / prob_0..; columns: "
     r"split, index, p0, p1"),
])
def test_bad_tables_name_what_is_wrong(tmp_path, source, change, message):
    with pytest.raises(ConfigError, match=message):
        load_outputs_file(save_csv(tmp_path, change(long_table(random_probs()))), source)


def test_list_rows_of_different_lengths_are_refused(tmp_path, source):
    rows = [{"id": f"{split}:{i}", "logits": [0.0, 1.0]} for split, size in SIZES.items() for i in range(size)]
    rows[5]["logits"] = [0.0, 1.0, 2.0]
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"the rows of `logits` have different lengths"):
        load_outputs_file(str(path), source)


def test_bad_array_files_name_what_is_wrong(tmp_path, source):
    with pytest.raises(ConfigError, match=r"kind='scores'; allowed: logits, probs"):
        load_outputs_file(save_npz(tmp_path, kind="scores", **random_logits()), source)
    with pytest.raises(ConfigError, match=r"unknown arrays \['dev'\]; allowed: train, val, test, kind"):
        load_outputs_file(save_npz(tmp_path, dev=np.zeros((3, 2)), **random_logits()), source)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"damaged.pt: could not be read"):
        load_outputs_file(str(damaged), source)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"not a parquet file")
    with pytest.raises(ConfigError, match=r"damaged.parquet: could not be read as a table"):
        load_outputs_file(str(damaged), source)


# --- the outputs-only teacher ---------------------------------------------------------------------------------


def test_outputs_teacher_looks_rows_up_and_is_never_run(tmp_path, source):
    logits = random_logits()
    path = save_npz(tmp_path, **logits)
    tables, _ = load_outputs_file(path, source)
    teacher = OutputsTeacher(tables, path)
    rows = teacher.lookup("val", torch.tensor([5, 0, 5]))
    assert torch.equal(rows, torch.from_numpy(logits["val"][[5, 0, 5]]))
    assert rows.device == teacher.device_anchor.device and teacher.state_dict() == {}
    x = source.val.dataset[0][0]
    with pytest.raises(RuntimeError, match=r"teacher.outputs=.*teacher.npz is known only through its outputs: it is "
                                           r"looked up by sample index, never run on an input"):
        teacher(x)
    assert torch.equal(logits_of(teacher, x, torch.tensor([1, 2]), "test"), torch.from_numpy(logits["test"][[1, 2]]))


def test_logits_of_runs_an_ordinary_module_on_its_input(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    out = logits_of(model, x, torch.tensor([10, 11, 12, 13]), "train")  # the index means nothing to it
    assert torch.equal(out, model(x))
