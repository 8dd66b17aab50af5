"""Text sources for next-token prediction: TinyShakespeare, any local corpus, and an embedded corpus.

A training sample is a fixed window of `block_size` tokens (inputs) and the same window shifted by
one (targets), starting at an offset that is a multiple of `data.stride` (default: block_size, so
windows do not overlap). A sample index is a window, so kappa fractions (M windows out of N),
per-sample outputs, cached teacher outputs (one row of logits per window position) and paired seeds
mean what they mean for images. The text is cut by position, not shuffled: the test split is the
last `test_fraction` of the text, the validation split the last `val_fraction` of what precedes it.

`data.corruption` rewrites the teacher's training text only (paper 003's adversarial teacher,
"the" -> "tha"): a find -> replace of equal length, so every window covers the same positions in
both texts. Students train on the clean text and every evaluation (and the cached teacher
outputs the students distil from) reads the clean text. The completion probe measures what the
corruption taught: at clean test positions whose text reads `find`, how often a model predicts the
replacement's character instead of the original's (kdrun.metrics.completion_probe).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kdrun.config.checks import check_choice, check_fraction, check_mapping, check_string, check_whole_number
from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits, Split
from kdrun.data.tokenizers import BUILT_IN, build_tokenizer
from kdrun.errors import ConfigError

log = logging.getLogger("kdrun")

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CORRUPTIONS = {"the_to_tha": ("the", "tha")}  # paper 003 Sec. 4.5


class TokenWindows(Dataset):
    """(inputs, targets) windows over one split's token stream: inputs tokens[s:s+T], targets tokens[s+1:s+T+1]."""

    def __init__(self, tokens: torch.Tensor, starts: np.ndarray, block_size: int):
        self.tokens, self.starts, self.block_size = tokens, starts, int(block_size)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int):
        start = int(self.starts[index])
        window = self.tokens[start:start + self.block_size + 1]
        return window[:-1], window[1:]


@dataclass(frozen=True)
class Corruption:
    find: str
    replace: str

    def apply(self, text: str) -> str:
        return text.replace(self.find, self.replace)


@dataclass(frozen=True)
class ProbeSpec:
    """Where the corruption shows: after `context`, the clean text reads `expected`, the corrupted `adversarial`."""

    context: str
    expected: str
    adversarial: str
    whole_word: bool


def parse_corruption(value) -> Corruption | None:
    """`data.corruption`: null, a named corruption, or {find, replace} of equal length."""
    if value is None or value == "none":
        return None
    if isinstance(value, str):
        check_choice(value, "data.corruption", (*CORRUPTIONS, "none"),
                     meaning="or a mapping {find: ..., replace: ...} of equal length")
        return Corruption(*CORRUPTIONS[value])
    spec = check_mapping(value, "data.corruption")
    unknown = set(spec) - {"find", "replace"}
    if unknown:
        raise ConfigError(f"data.corruption has unknown keys {sorted(unknown)}; allowed: find, replace")
    find = check_string(spec.get("find"), "data.corruption.find", meaning="the text to replace")
    replace = check_string(spec.get("replace"), "data.corruption.replace", meaning="what replaces it")
    if not find or len(find) != len(replace) or find == replace:
        raise ConfigError(f"data.corruption find={find!r} replace={replace!r}; allowed: a non-empty find and a "
                          f"different replace of the same length (windows must cover the same positions)")
    return Corruption(str(find), str(replace))


def probe_of(corruption: Corruption | None, whole_word: bool) -> ProbeSpec | None:
    """The probe a corruption implies: the shared prefix, then the first character where they differ."""
    if corruption is None:
        return None
    shared = 0
    while corruption.find[shared] == corruption.replace[shared]:
        shared += 1
    return ProbeSpec(corruption.find[:shared], corruption.find[shared], corruption.replace[shared], whole_word)


def check_text_options(cfg) -> None:
    """The settings every text source shares (configs/data/tinyshakespeare.yaml lists them)."""
    check_whole_number(cfg.get("block_size"), "data.block_size", minimum=1, meaning="tokens per training window")
    check_whole_number(cfg.get("stride"), "data.stride", minimum=1, allow_none=True,
                       meaning="tokens between window starts; null: block_size (no overlap)")
    check_fraction(cfg.get("test_fraction", 0.1), "data.test_fraction", False, False,
                   meaning="the share at the end of the text held out for testing")
    check_whole_number(cfg.get("max_chars"), "data.max_chars", minimum=2, allow_none=True,
                       meaning="read only the first max_chars characters of the text; null: all")
    parse_corruption(cfg.get("corruption"))
    tokenizer = cfg.get("tokenizer", "char")
    if not isinstance(tokenizer, str):
        raise ConfigError(f"data.tokenizer={tokenizer!r}; allowed: {', '.join(BUILT_IN)} or a tokenizer directory")


def text_splits(cfg, text: str, title: str) -> SourceSplits:
    """The splits of a text: tokenized, cut by position into train / val / test, in windows."""
    if cfg.get("max_chars") is not None:
        text = text[: int(cfg.max_chars)]
    corruption = parse_corruption(cfg.get("corruption"))
    test_cut = len(text) - round(float(cfg.get("test_fraction", 0.1)) * len(text))
    val_cut = test_cut - round(float(cfg.val_fraction) * test_cut)
    parts = {"train": text[:val_cut], "val": text[val_cut:test_cut], "test": text[test_cut:]}
    corrupted = None
    if corruption is not None:
        matches = parts["train"].count(corruption.find)
        if matches == 0:
            raise ConfigError(f"data.corruption find={corruption.find!r} matches nothing in the {len(parts['train']):,} "
                              f"characters of {title}'s training text; allowed: text that occurs in it")
        corrupted = corruption.apply(parts["train"])
        log.info("data.corruption: %s occurrences of %r -> %r in the teacher's training text", f"{matches:,}",
                 corruption.find, corruption.replace)
    # the vocabulary covers every text a model reads, the corrupted one included
    tokenizer = build_tokenizer(cfg.get("tokenizer", "char"), text + (corrupted or ""))
    block_size = int(cfg.block_size)
    stride = int(cfg.get("stride") or block_size)
    streams = {name: torch.as_tensor(tokenizer.encode(part), dtype=torch.long) for name, part in parts.items()}
    splits = {name: _windows(cfg, title, name, stream, block_size, stride) for name, stream in streams.items()}
    teacher_train = None
    if corrupted is not None:
        stream = torch.as_tensor(tokenizer.encode(corrupted), dtype=torch.long)
        if len(stream) != len(streams["train"]):
            raise ConfigError(f"data.corruption {corruption.find!r} -> {corruption.replace!r} changes the number of "
                              f"tokens under data.tokenizer={cfg.get('tokenizer')}; allowed: a tokenizer that keeps "
                              f"positions (char or byte)")
        teacher_train = Split(TokenWindows(stream, splits["train"].dataset.starts, block_size), splits["train"].targets)
    probe = probe_of(corruption, bool(cfg.get("probe_whole_word", True)))
    probe_masks = None
    if probe is not None and tokenizer.kind in BUILT_IN:
        probe_masks = {name: probe_positions(parts[name], tokenizer, splits[name].dataset, probe)
                       for name in ("train", "test")}
    return SourceSplits(train=splits["train"], val=splits["val"], test=splits["test"], num_classes=tokenizer.vocab_size,
                        input_shape=(block_size,), task="next_token", tokenizer=tokenizer,
                        teacher_train=teacher_train, probe=probe, probe_masks=probe_masks)


def _windows(cfg, title: str, split: str, tokens: torch.Tensor, block_size: int, stride: int) -> Split:
    if len(tokens) < block_size + 1:
        raise ConfigError(f"data.block_size={block_size} is longer than {title}'s {split} text ({len(tokens)} tokens; "
                          f"a window needs block_size + 1); allowed: block_size <= {max(len(tokens) - 1, 0)}, or more "
                          f"text (data.max_chars, data.test_fraction, data.val_fraction)")
    starts = np.arange(0, len(tokens) - block_size, stride, dtype=np.int64)
    # one "label" per window for the shared machinery (kappa subsets); windows have no class
    return Split(TokenWindows(tokens, starts, block_size), np.zeros(len(starts), dtype=np.int64))


def probe_positions(text: str, tokenizer, windows: TokenWindows, probe: ProbeSpec) -> np.ndarray:
    """(windows, block_size) booleans: target positions whose clean text reads context + expected (as a whole
    word when asked: no letter before the context, none after the expected character)."""
    after = re.escape(probe.expected) + ("(?![A-Za-z])" if probe.whole_word else "")
    pattern = ("(?<![A-Za-z])" if probe.whole_word else "") + re.escape(probe.context) + f"(?={after})"
    # a match ends where the expected character stands: the position of that target token
    haystack = text.encode("utf-8") if tokenizer.kind == "byte" else text
    if tokenizer.kind == "byte":
        pattern = pattern.encode("utf-8")
    hits = np.zeros(len(haystack) + 1, dtype=bool)
    for match in re.finditer(pattern, haystack):
        hits[match.end()] = True
    # target j of window s is token s + j + 1
    return hits[windows.starts[:, None] + 1 + np.arange(windows.block_size)[None, :]]


def _text_file(path: Path, cfg, title: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{title}: {path} is not UTF-8 text ({error}); allowed: UTF-8 files") from error


def _check_tinyshakespeare(cfg) -> None:
    check_text_options(cfg)


@register_source("tinyshakespeare", options=_check_tinyshakespeare)
def load_tinyshakespeare(cfg) -> SourceSplits:
    """`<root>/tinyshakespeare/input.txt` (1,115,394 characters, 65 distinct), fetched by data.download=true."""
    path = Path(os.path.expanduser(str(cfg.root))).absolute() / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        if not cfg.get("download", False):
            raise ConfigError(f"tinyshakespeare: {path} does not exist. Get it with data.download=true on a machine "
                              f"with internet access, or copy input.txt from {TINYSHAKESPEARE_URL} to {path} "
                              f"(data.root={cfg.root})")
        _download(TINYSHAKESPEARE_URL, path)
    return text_splits(cfg, _text_file(path, cfg, "tinyshakespeare"), "tinyshakespeare")


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(staging, "wb") as handle:
            handle.write(response.read())
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise ConfigError(f"downloading {url} to {path} failed ({type(error).__name__}: {error}); copy the file "
                          f"there by hand") from error
    staging.replace(path)


def _check_text_corpus(cfg) -> None:
    check_text_options(cfg)
    check_string(cfg.get("path"), "data.path", meaning="a UTF-8 text file, or a folder of them")
    check_string(cfg.get("glob", "**/*.txt"), "data.glob", meaning="which files of a folder are read")


@register_source("text_corpus", options=_check_text_corpus)
def load_text_corpus(cfg) -> SourceSplits:
    """A local UTF-8 file, or the files of a folder matching data.glob (sorted by path, joined by newlines)."""
    path = Path(os.path.expanduser(str(cfg.path))).absolute()
    if path.is_file():
        text = _text_file(path, cfg, "text_corpus")
    elif path.is_dir():
        files = sorted(p for p in path.glob(str(cfg.get("glob", "**/*.txt"))) if p.is_file())
        if not files:
            raise ConfigError(f"data.path={path} holds no file matching data.glob={cfg.get('glob', '**/*.txt')!r}")
        text = "\n".join(_text_file(file, cfg, "text_corpus") for file in files)
    else:
        raise ConfigError(f"data.path={path} does not exist; allowed: a UTF-8 text file or a folder of them")
    return text_splits(cfg, text, f"text_corpus {path.name}")


def pydoc_topics_text() -> str:
    """The standard library's help topics (pydoc_data): English prose and code in every Python installation."""
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))


@register_source("pydoc_topics", options=check_text_options)
def load_pydoc_topics(cfg) -> SourceSplits:
    """The embedded corpus (about 470k characters; the exact text and vocabulary follow the Python version)."""
    return text_splits(cfg, pydoc_topics_text(), "pydoc_topics")
