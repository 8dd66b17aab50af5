"""The tokenizers of text sources: characters, bytes, or a tokenizer saved in a local directory.

A language-model source owns its tokenizer: teacher and student read the same token ids, and the
vocabulary size is the number of classes both predict. `data.tokenizer`:

- `char`: one token per distinct character of the source's text (sorted, so a corpus always gives
  the same ids; TinyShakespeare has 65);
- `byte`: the 256 byte values of the UTF-8 encoding (any text, a fixed vocabulary);
- a path: a Hugging Face tokenizer saved with `save_pretrained`, loaded offline: its tokenizer.json with
  the `tokenizers` library, or a slow tokenizer's files with transformers (`local_files_only`).
"""

from __future__ import annotations

from pathlib import Path

from kdrun.errors import ConfigError

BUILT_IN = ("char", "byte")


class CharTokenizer:
    """One id per distinct character, in sorted order."""

    kind = "char"

    def __init__(self, text: str):
        self.characters = sorted(set(text))
        self.ids = {character: index for index, character in enumerate(self.characters)}

    @property
    def vocab_size(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[character] for character in text]
        except KeyError as error:
            raise ConfigError(f"the character {error.args[0]!r} is not in the corpus's vocabulary of "
                              f"{self.vocab_size} characters") from None

    def decode(self, ids) -> str:
        return "".join(self.characters[int(i)] for i in ids)


class ByteTokenizer:
    """The 256 byte values of UTF-8; decoding replaces an incomplete multi-byte character."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class PretrainedTokenizer:
    """A tokenizer directory written by `save_pretrained` (Hugging Face), read without the network: its
    tokenizer.json through the `tokenizers` library (every fast tokenizer has one), else (a slow tokenizer's
    files only) through transformers' AutoTokenizer with `local_files_only`."""

    kind = "pretrained"

    def __init__(self, directory: Path):
        self.directory = directory
        self.fast = None
        self.slow = None
        if (directory / "tokenizer.json").is_file():
            try:
                from tokenizers import Tokenizer
            except ImportError as error:
                raise ConfigError(f"data.tokenizer={directory} needs the `tokenizers` package; install it with "
                                  f"pip install -e \".[text]\"") from error
            try:
                self.fast = Tokenizer.from_file(str(directory / "tokenizer.json"))
            except Exception as error:  # the Rust library's parse errors carry no common type
                raise ConfigError(f"data.tokenizer={directory}: tokenizer.json does not load ({error})") from error
            return
        try:
            from transformers import AutoTokenizer
        except ImportError as error:
            raise ConfigError(f"data.tokenizer={directory} has no tokenizer.json; loading a slow tokenizer's files "
                              f"needs the `transformers` package (pip install transformers)") from error
        try:
            self.slow = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ConfigError(f"data.tokenizer={directory} holds no tokenizer that transformers can load ({error}); "
                              f"allowed: a directory written by tokenizer.save_pretrained(...)") from error

    @property
    def vocab_size(self) -> int:  # the base vocabulary plus added tokens
        return self.fast.get_vocab_size(with_added_tokens=True) if self.fast is not None else len(self.slow)

    def encode(self, text: str) -> list[int]:
        if self.fast is not None:
            return self.fast.encode(text, add_special_tokens=False).ids
        return self.slow(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.fast.decode(ids) if self.fast is not None else self.slow.decode(ids)


def build_tokenizer(spec, text: str):
    """The tokenizer `data.tokenizer` names; `text` is the corpus (a character vocabulary is built from it)."""
    if spec in BUILT_IN:
        return CharTokenizer(text) if spec == "char" else ByteTokenizer()
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"data.tokenizer={spec!r}; allowed: char, byte, or the path of a tokenizer directory")
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"data.tokenizer={spec}: no such directory; allowed: char, byte, or the path of a directory "
                          f"written by tokenizer.save_pretrained(...)")
    return PretrainedTokenizer(directory)
