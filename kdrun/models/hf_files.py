"""Local Hugging Face model and tokenizer directories: what must be in them, checked before anything loads.

transformers, given a path that does not exist, reports it as an invalid "repo id" and may try the
network; kdrun never lets it: every directory is checked here first, with kdrun's own message, and
loaded with `local_files_only=True`. A directory's digest (its config, weights and tokenizer files)
goes into the teacher's store key and the student's identity, so changed weights under the same
path are a different teacher.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from kdrun.errors import ConfigError

EMBEDDED_TOKENIZERS = Path(__file__).resolve().parents[1] / "data" / "embedded_tokenizers"
EMBEDDED_PREFIX = "embedded:"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


def embedded_tokenizer_names() -> list[str]:
    return sorted(path.name for path in EMBEDDED_TOKENIZERS.iterdir() if path.is_dir())


def tokenizer_directory(spec, key: str) -> Path:
    """The directory `model.tokenizer` names: `embedded:NAME` (shipped with kdrun) or a path."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{key}={spec!r}; allowed: the path of a tokenizer directory (save_pretrained), or "
                          f"{', '.join(EMBEDDED_PREFIX + name for name in embedded_tokenizer_names())}")
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec[len(EMBEDDED_PREFIX):]
        if name not in embedded_tokenizer_names():
            raise ConfigError(f"{key}={spec} is not an embedded tokenizer; allowed: "
                              f"{', '.join(EMBEDDED_PREFIX + n for n in embedded_tokenizer_names())}")
        return EMBEDDED_TOKENIZERS / name
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"{key}={spec}: no such directory; allowed: a directory written by "
                          f"tokenizer.save_pretrained(...), or {EMBEDDED_PREFIX}NAME")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{key}={spec} holds no tokenizer: none of {', '.join(TOKENIZER_FILES)} is in it; allowed: "
                          f"a directory written by tokenizer.save_pretrained(...)")
    return directory


def model_directory(spec, key: str) -> Path:
    """A directory written by `model.save_pretrained`: config.json and its weights, checked."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{key}={spec!r}; allowed: the path of a model directory (save_pretrained)")
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"{key}={spec}: no such directory. kdrun loads models from local directories only "
                          f"(download one beforehand, e.g. huggingface-cli download roberta-base --local-dir DIR); "
                          f"allowed: a directory written by model.save_pretrained(...)")
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{key}={spec} has no config.json; allowed: a directory written by model.save_pretrained")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"{key}={spec} has config.json but no weights (none of {', '.join(WEIGHT_FILES)}); "
                          f"allowed: a directory written by model.save_pretrained(...)")
    return directory


def model_type(directory: Path) -> str | None:
    try:
        return json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        raise ConfigError(f"{directory}/config.json does not read as JSON ({error})") from None


def directory_digest(directory: Path) -> str:
    """SHA-256 over a model or tokenizer directory's files (names and contents, sorted), cached by size and mtime."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    stamp = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _digest(stamp)


@lru_cache(maxsize=16)
def _digest(stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        path = Path(name)
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def pretrained_files(model_cfg) -> dict:
    """Digests of the local directories a model config reads (`path`, `tokenizer`), for identities; {} if none."""
    files = {}
    for option in ("path", "tokenizer"):
        value = model_cfg.get(option) if hasattr(model_cfg, "get") else None
        if not isinstance(value, str) or not value:
            continue
        directory = (EMBEDDED_TOKENIZERS / value[len(EMBEDDED_PREFIX):] if value.startswith(EMBEDDED_PREFIX)
                     else Path(value).expanduser())
        if directory.is_dir():
            files[f"{option}_sha256"] = directory_digest(directory)
    return files
