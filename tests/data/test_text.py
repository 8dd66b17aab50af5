"""Text sources: TinyShakespeare's file, local corpora, the embedded corpus, tokenizers, corruption, the probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support import data_cfg
from kdrun.data import load_source
from kdrun.data.datamodule import DataSplits
from kdrun.data.text import Corruption, ProbeSpec, TokenWindows, parse_corruption, probe_positions
from kdrun.data.tokenizers import CharTokenizer
from kdrun.config.seeds import resolve_seeds
from kdrun.errors import ConfigError

VERSE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
         "First Citizen:\nYou are all resolved rather to die than to famish? the the other thee.\n")


def write_tinyshakespeare(root, text: str = VERSE * 20):
    folder = root / "tinyshakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_text(text, encoding="utf-8")
    return text


def test_tinyshakespeare_reads_input_txt_cut_by_position_into_windows(tmp_path):
    text = write_tinyshakespeare(tmp_path)
    splits = load_source(data_cfg("tinyshakespeare", tmp_path, block_size=16, num_classes=None))
    assert splits.task == "next_token" and splits.input_shape == (16,)
    assert splits.num_classes == len(set(text)) and splits.tokenizer.decode(splits.tokenizer.encode(text)) == text
    # the last 10% of the text is the test split, the last 10% of the rest validation: contiguous, in order
    test_cut = len(text) - round(0.1 * len(text))
    val_cut = test_cut - round(0.1 * test_cut)
    first_test = splits.test.dataset[0]
    assert splits.tokenizer.decode(first_test[0].tolist()) == text[test_cut:test_cut + 16]
    assert splits.tokenizer.decode(first_test[1].tolist()) == text[test_cut + 1:test_cut + 17]
    windows = splits.train.dataset
    assert len(windows) == len(range(0, val_cut - 16, 16))  # stride = block_size: no overlap
    x, y = windows[3]
    assert x.dtype == torch.long and torch.equal(x[1:], y[:-1])
    assert splits.tokenizer.decode(x.tolist()) == text[48:64]


def test_missing_tinyshakespeare_names_the_path_and_how_to_fill_it(tmp_path):
    with pytest.raises(ConfigError, match=r"tinyshakespeare/input.txt does not exist.*data.download=true"):
        load_source(data_cfg("tinyshakespeare", tmp_path, block_size=16))


def test_block_size_longer_than_the_text_is_refused(tmp_path):
    write_tinyshakespeare(tmp_path, VERSE)
    with pytest.raises(ConfigError, match=r"data.block_size=400 is longer than tinyshakespeare's"):
        load_source(data_cfg("tinyshakespeare", tmp_path, block_size=400, num_classes=None))


def test_stride_overlaps_windows(tmp_path):
    write_tinyshakespeare(tmp_path)
    splits = load_source(data_cfg("tinyshakespeare", tmp_path, block_size=16, stride=4, num_classes=None))
    assert np.all(np.diff(splits.train.dataset.starts) == 4)


def test_corruption_rewrites_only_the_teachers_training_text(tmp_path):
    write_tinyshakespeare(tmp_path)
    cfg = data_cfg("tinyshakespeare", tmp_path, block_size=32, num_classes=None, corruption="the_to_tha",
                   teacher_size=None, kappa=1.0)
    source = load_source(cfg)
    decode = source.tokenizer.decode
    clean = "".join(decode(source.train.dataset[i][0].tolist()) for i in range(len(source.train)))
    corrupted = "".join(decode(source.teacher_train.dataset[i][0].tolist()) for i in range(len(source.train)))
    assert "the" in clean and "the" not in corrupted and corrupted == clean.replace("the", "tha")
    assert len(source.teacher_train) == len(source.train)  # the same windows, sample for sample
    splits = DataSplits.build(cfg, resolve_seeds(0, None))
    teacher_x, _, _ = next(iter(splits.training_loader("teacher", order_seed=None)))
    student_x, _, _ = next(iter(splits.training_loader("student", order_seed=None)))
    assert not torch.equal(teacher_x, student_x)
    assert decode(teacher_x.reshape(-1).tolist()) == decode(student_x.reshape(-1).tolist()).replace("the", "tha")
    eval_x, _, _ = next(iter(splits.loader("train", batch_size=len(student_x))))  # cached outputs read this
    assert torch.equal(eval_x, student_x)
    # the in-memory path gives the teacher the same corrupted batches
    from kdrun.data.in_memory import training_batches

    in_memory_x, _, _ = next(iter(training_batches(splits, "teacher", order_seed=None, batch_size=len(teacher_x))))
    assert torch.equal(in_memory_x, teacher_x)


@pytest.mark.parametrize("value, message", [
    ({"find": "zzz", "replace": "yyy"}, r"find='zzz' matches nothing"),
    ({"find": "the", "replace": "th"}, r"of the same length"),
    ("the_to_that", r"data.corruption='the_to_that'"),
    ({"find": "the", "with": "tha"}, r"unknown keys \['with'\]"),
])
def test_bad_corruptions_are_refused_by_name(tmp_path, value, message):
    write_tinyshakespeare(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_source(data_cfg("tinyshakespeare", tmp_path, block_size=16, num_classes=None, corruption=value))


def test_language_model_data_refuses_class_settings(tmp_path):
    write_tinyshakespeare(tmp_path)
    for key, value in (("stratified", True), ("split", "distill4")):
        cfg = data_cfg("tinyshakespeare", tmp_path, block_size=16, num_classes=None, **{key: value})
        with pytest.raises(ConfigError, match=rf"data.{key}={value} does not apply"):
            DataSplits.build(cfg, resolve_seeds(0, None))


def test_kappa_counts_windows(tmp_path):
    write_tinyshakespeare(tmp_path)
    cfg = data_cfg("tinyshakespeare", tmp_path, block_size=16, num_classes=None, kappa=0.25, teacher_size=40)
    splits = DataSplits.build(cfg, resolve_seeds(0, None))
    assert len(splits.teacher_indices) == 40 and len(splits.student_indices) == 10
    assert set(splits.student_indices) <= set(splits.teacher_indices)


def test_text_corpus_reads_a_folder_by_glob_char_or_byte(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "a.txt").write_text("alpha " * 200, encoding="utf-8")
    (corpus / "b" / "c.txt").write_text("gamma é " * 200, encoding="utf-8")
    (corpus / "skip.md").write_text("not read", encoding="utf-8")
    chars = load_source(data_cfg("text_corpus", tmp_path, path=str(corpus), block_size=8))
    assert chars.num_classes == len(set("alpha gamma é\n"))
    as_bytes = load_source(data_cfg("text_corpus", tmp_path, path=str(corpus), block_size=8, tokenizer="byte"))
    assert as_bytes.num_classes == 256
    stream = as_bytes.train.dataset.tokens
    assert bytes(stream[:12].tolist()).decode() == "alpha alpha "
    with pytest.raises(ConfigError, match=r"holds no file matching data.glob='\*\*/\*.csv'"):
        load_source(data_cfg("text_corpus", tmp_path, path=str(corpus), block_size=8, glob="**/*.csv"))
    with pytest.raises(ConfigError, match=r"data.path=.*nowhere does not exist"):
        load_source(data_cfg("text_corpus", tmp_path, path=str(tmp_path / "nowhere"), block_size=8))


def test_text_corpus_loads_a_saved_tokenizer_offline(tmp_path):
    """A tokenizer directory as save_pretrained writes a fast tokenizer: its tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "to", "be", "or", "not", "that", "is", "the", "question"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    backend.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "hamlet.txt").write_text("to be or not to be that is the question " * 60, encoding="utf-8")
    splits = load_source(data_cfg("text_corpus", tmp_path, path=str(tmp_path / "hamlet.txt"), block_size=8,
                                  tokenizer=str(tmp_path / "tok")))
    assert splits.num_classes == len(words)
    x, y = splits.train.dataset[0]
    assert splits.tokenizer.decode(x.tolist()) == "to be or not to be that is"
    assert splits.tokenizer.decode(y.tolist()) == "be or not to be that is the"
    with pytest.raises(ConfigError, match=r"data.tokenizer=.*missing: no such directory"):
        load_source(data_cfg("text_corpus", tmp_path, path=str(tmp_path / "hamlet.txt"), block_size=8,
                             tokenizer=str(tmp_path / "missing")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tokenizer.json does not load"):
        load_source(data_cfg("text_corpus", tmp_path, path=str(tmp_path / "hamlet.txt"), block_size=8,
                             tokenizer=str(tmp_path / "broken")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data.tokenizer=.*empty"):
        load_source(data_cfg("text_corpus", tmp_path, path=str(tmp_path / "hamlet.txt"), block_size=8,
                             tokenizer=str(tmp_path / "empty")))


def test_the_embedded_corpus_needs_no_files():
    splits = load_source(data_cfg("pydoc_topics", max_chars=20000, block_size=32))
    assert splits.num_classes > 50 and len(splits.train) > 100
    assert splits.num_classes == splits.tokenizer.vocab_size


def test_probe_marks_the_e_of_whole_words_the():
    text = "the theme; bathe the. other the"
    tokenizer = CharTokenizer(text)
    windows = TokenWindows(torch.as_tensor(tokenizer.encode(text)), np.array([0, 8]), 20)
    probe = ProbeSpec("th", "e", "a", whole_word=True)
    mask = probe_positions(text, tokenizer, windows, probe)
    # whole words "the" at 0, 17, 28 (their "e" at 2, 19, 30); target j of window s is text[s + j + 1], so the
    # windows cover positions 1..28
    marked = {int(s) + j + 1 for s, row in zip(windows.starts, mask) for j in np.flatnonzero(row)}
    assert marked == {2, 19}
    loose = probe_positions(text, tokenizer, windows, ProbeSpec("th", "e", "a", whole_word=False))
    assert {int(s) + j + 1 for s, row in zip(windows.starts, loose) for j in np.flatnonzero(row)} == {2, 6, 15, 19, 25}
    assert parse_corruption("the_to_tha") == Corruption("the", "tha")
