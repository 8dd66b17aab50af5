"""Hugging Face transformers as zoo models for text classification: `hf_classifier` and `hf_t5_classifier`.

A text model owns its tokenizer: a batch's input is raw text (kdrun.data.text_classification: one
or two columns of strings), which each model tokenizes with its own vocabulary, `max_length`
(truncating) and `padding` (`longest`: to the batch's longest text; `max_length`: fixed shapes).
So a T5 teacher and a BERT student read the same samples, each in its own tokens.

- `hf_classifier`: any `AutoModelForSequenceClassification` (BERT, RoBERTa, DistilBERT, DeBERTa, ...):
  `path=DIR` loads a local `save_pretrained` directory (weights, and its tokenizer unless `tokenizer`
  names another); a base checkpoint without a classification head gets a new one of
  `num_classes` outputs (seeded like any initialisation). `config={model_type: bert, ...}` builds
  the architecture with random weights instead (transformers' configuration keys; `vocab_size` and
  `pad_token_id` come from the tokenizer).
- `hf_t5_classifier`: an encoder-decoder (T5) that scores each class by the word it would answer
  (`label_words`, one per class). Paper 004 does not say how its T5 teachers gave class
  probabilities; `label_scoring: first_token` (the default) reads the decoder's first-step logits at
  each label word's first token, the usual choice; `label_words` scores each class by the summed
  log-probability of its word's whole token sequence (teacher-forced). Softmax over the class scores
  gives the class probabilities either way. `template` turns the text(s) into T5's input,
  e.g. "mnli hypothesis: {1} premise: {0}" ({0}, {1}: the first and second text).

Loading never touches the network (`local_files_only`); a missing or incomplete directory is a
ConfigError from kdrun.models.hf_files before transformers sees it.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.hf_files import model_directory, model_type, tokenizer_directory
from kdrun.models.options import one_of, option_key, whole
from kdrun.models.registry import register_model

PADDINGS = ("longest", "max_length")
LABEL_SCORINGS = ("first_token", "label_words")
# models whose position ids start after the padding index (RoBERTa's 514 positions hold 512 tokens)
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


def text_columns(texts) -> list[list[str]]:
    """A collated batch of texts as columns: the DataLoader gives one list per text column (one, or two for a
    pair); a list of strings is one column."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise TypeError(f"a text model reads a batch of texts (columns of strings), got {type(texts).__name__}")
    if isinstance(texts[0], str):
        return [list(texts)]
    columns = [list(column) for column in texts]
    if len(columns) not in (1, 2) or len({len(column) for column in columns}) != 1:
        raise TypeError("a text batch has one or two columns of strings of equal length")
    return columns


class TextClassifier(nn.Module):
    """A sequence classifier with its tokenizer: raw text in, class logits out."""

    input_kind = "text"

    def __init__(self, network: nn.Module, tokenizer, max_length: int, padding: str, template: str | None = None):
        super().__init__()
        self.network, self.tokenizer = network, tokenizer
        self.max_length, self.padding, self.template = int(max_length), padding, template
        # a template must place every text: one that names only {0} would silently drop a pair's hypothesis
        self.template_fields = None if template is None else {
            int(name) for _, name, _, _ in string.Formatter().parse(template) if name is not None}

    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def encode(self, texts) -> dict[str, torch.Tensor]:
        """The batch in this model's tokens, on its device."""
        columns = text_columns(texts)
        if self.template is not None:
            if self.template_fields != set(range(len(columns))):
                raise ValueError(f"template={self.template!r} places the texts {sorted(self.template_fields)}, but each "
                                 f"sample has {len(columns)}; allowed: a template naming each of "
                                 f"{', '.join('{' + str(i) + '}' for i in range(len(columns)))}, or template=null")
            columns = [[self.template.format(*row) for row in zip(*columns)]]
        encoded = self.tokenizer(*columns, max_length=self.max_length, truncation=True, padding=self.padding,
                                 return_tensors="pt")
        device = self.device()
        return {name: tensor.to(device) for name, tensor in encoded.items()}

    def forward(self, texts) -> torch.Tensor:
        return self.network(**self.encode(texts)).logits

    def load_pretrained_weights(self, directory: Path) -> None:
        """Weights from a `save_pretrained` directory of this architecture (teacher.checkpoint=DIR)."""
        loaded = type(self.network).from_pretrained(str(directory), config=self.network.config, local_files_only=True)
        self.network.load_state_dict(loaded.state_dict())


class T5LabelScorer(TextClassifier):
    """An encoder-decoder scoring each class by its label word (see the module docstring)."""

    def __init__(self, network: nn.Module, tokenizer, max_length: int, padding: str, template: str | None,
                 label_ids: list[list[int]], scoring: str):
        super().__init__(network, tokenizer, max_length, padding, template)
        self.label_ids, self.scoring = label_ids, scoring
        self.register_buffer("first_ids", torch.tensor([ids[0] for ids in label_ids]), persistent=False)
        self.start_id = int(network.config.decoder_start_token_id)

    def forward(self, texts) -> torch.Tensor:
        encoded = self.encode(texts)
        batch = encoded["input_ids"].shape[0]
        start = torch.full((batch, 1), self.start_id, dtype=torch.long, device=encoded["input_ids"].device)
        if self.scoring == "first_token":
            logits = self.network(**encoded, decoder_input_ids=start).logits[:, 0]
            return logits[:, self.first_ids]
        encoder_outputs = self.network.get_encoder()(**encoded)
        scores = []
        for ids in self.label_ids:  # teacher-forced: log p(word) = sum of its tokens' log-probabilities
            target = torch.tensor(ids, device=start.device).expand(batch, -1)
            decoder_input = torch.cat([start, target[:, :-1]], dim=1)
            logits = self.network(encoder_outputs=encoder_outputs, attention_mask=encoded["attention_mask"],
                                  decoder_input_ids=decoder_input).logits
            scores.append(logits.float().log_softmax(-1).gather(-1, target[..., None]).squeeze(-1).sum(-1))
        return torch.stack(scores, dim=-1)


def _transformers():
    try:
        import transformers
    except ImportError as error:
        raise ConfigError(f"{option_key('name')}: Hugging Face models need the `transformers` package; install it "
                          f"with pip install -e \".[text]\"") from error
    return transformers


def load_tokenizer(spec):
    directory = tokenizer_directory(spec, option_key("tokenizer"))
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{option_key('tokenizer')}={spec}: the tokenizer in {directory} does not load ({error}); "
                          f"allowed: a directory written by tokenizer.save_pretrained(...)") from None
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"{option_key('tokenizer')}={spec} has no padding token, and batches of texts of different "
                          f"lengths need one; allowed: a tokenizer with pad_token set (tokenizer.pad_token = ...)")
    return tokenizer


def _sources(path, config, tokenizer) -> tuple[Path | None, object]:
    """(the model directory or None, the tokenizer's spec): exactly one of path and config."""
    if (path is None) == (config is None):
        raise ConfigError(f"{option_key('path')}={path!r} and {option_key('config')}={config!r}: set exactly one; "
                          f"allowed: path=DIR (a save_pretrained directory) or config={{model_type: ..., ...}} "
                          f"(random weights)")
    directory = model_directory(path, option_key("path")) if path is not None else None
    if tokenizer is None:
        if directory is None:
            raise ConfigError(f"{option_key('tokenizer')}=null with random weights (config=...): name a tokenizer "
                              f"directory, or embedded:wordpiece / embedded:sentencepiece")
        tokenizer = str(directory)
    return directory, tokenizer


def _configuration(transformers, config, tokenizer, num_classes: int, extra: dict):
    """A transformers configuration of `model_type` with random-weight shapes from `config`."""
    options = dict(config)
    kind = options.pop("model_type", None)
    try:
        return transformers.AutoConfig.for_model(kind, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                                 num_labels=num_classes, **extra, **options)
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"{option_key('config')}={dict(config)}: not a transformers configuration ({error}); "
                          f"allowed: model_type (bert, roberta, t5, ...) and that configuration's keys") from None


def _check_length(model: str, max_length: int, config) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:  # relative positions (T5): any length
        return
    usable = positions - (config.pad_token_id + 1 if config.model_type in OFFSET_POSITIONS else 0)
    if max_length > usable:
        raise ConfigError(f"{option_key('max_length')}={max_length} is longer than {model} can read ({usable} "
                          f"positions); allowed: 1..{usable}")


def _from_pretrained(loader, directory: Path, config, kind: str):
    try:
        return loader.from_pretrained(str(directory), config=config, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{option_key('path')}={directory} (model_type {kind}) does not load as this model "
                          f"({type(error).__name__}: {str(error)[:400]})") from None


@register_model("hf_classifier")
def hf_classifier(input_shape, num_classes: int, path: str | None = None, config=None, tokenizer: str | None = None,
                  max_length: int = 128, padding: str = "longest") -> TextClassifier:
    model = "hf_classifier"
    whole(model, "num_classes", num_classes, minimum=2)
    whole(model, "max_length", max_length, minimum=2, meaning="tokens per text (longer ones are truncated)")
    one_of(model, "padding", padding, PADDINGS)
    directory, tokenizer_spec = _sources(path, config, tokenizer)
    tok = load_tokenizer(tokenizer_spec)
    transformers = _transformers()
    if directory is None:
        configuration = _configuration(transformers, config, tok, num_classes, {})
        network = transformers.AutoModelForSequenceClassification.from_config(configuration)
    else:
        kind = model_type(directory)
        try:
            configuration = transformers.AutoConfig.from_pretrained(str(directory), num_labels=num_classes,
                                                                    local_files_only=True)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{option_key('path')}={path}: config.json does not load ({error})") from None
        network = _from_pretrained(transformers.AutoModelForSequenceClassification, directory, configuration, kind)
    _check_length(model, int(max_length), network.config)
    return TextClassifier(network, tok, max_length, padding)


@register_model("hf_t5_classifier")
def hf_t5_classifier(input_shape, num_classes: int, label_words, path: str | None = None, config=None,
                     tokenizer: str | None = None, max_length: int = 128, padding: str = "longest",
                     template: str | None = None, label_scoring: str = "first_token") -> T5LabelScorer:
    model = "hf_t5_classifier"
    whole(model, "num_classes", num_classes, minimum=2)
    whole(model, "max_length", max_length, minimum=2, meaning="tokens per input (longer ones are truncated)")
    one_of(model, "padding", padding, PADDINGS)
    one_of(model, "label_scoring", label_scoring, LABEL_SCORINGS)
    words = list(label_words) if isinstance(label_words, Sequence) and not isinstance(label_words, str) else None
    if words is None or len(words) != num_classes or not all(isinstance(w, str) and w for w in words):
        raise ConfigError(f"{option_key('label_words')}={label_words!r}: one non-empty word per class; allowed: a list "
                          f"of {num_classes} words in class order")
    if template is not None:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if not fields or not fields <= {"0", "1"}:
            raise ConfigError(f"{option_key('template')}={template!r}; allowed: a text with {{0}} (the first text) "
                              f"and, for pairs, {{1}} (the second), e.g. 'mnli hypothesis: {{1}} premise: {{0}}'")
    directory, tokenizer_spec = _sources(path, config, tokenizer)
    tok = load_tokenizer(tokenizer_spec)
    transformers = _transformers()
    if directory is None:
        configuration = _configuration(transformers, config, tok, num_classes,
                                       {"decoder_start_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id})
        network = transformers.AutoModelForSeq2SeqLM.from_config(configuration)
    else:
        kind = model_type(directory)
        configuration = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
        network = _from_pretrained(transformers.AutoModelForSeq2SeqLM, directory, configuration, kind)
    if getattr(network.config, "decoder_start_token_id", None) is None:
        raise ConfigError(f"{option_key('path')}={path}: the model has no decoder_start_token_id; allowed: an "
                          f"encoder-decoder model (T5)")
    label_ids = [tok(word, add_special_tokens=False)["input_ids"] for word in words]
    empty = [word for word, ids in zip(words, label_ids) if not ids]
    if empty:
        raise ConfigError(f"{option_key('label_words')}: {empty[0]!r} has no tokens under the tokenizer")
    firsts = [ids[0] for ids in label_ids]
    if label_scoring == "first_token" and len(set(firsts)) != len(firsts):
        clash = [w for w, first in zip(words, firsts) if firsts.count(first) > 1]
        raise ConfigError(f"{option_key('label_words')}: {', '.join(map(repr, clash))} start with the same token, so "
                          f"label_scoring=first_token cannot tell them apart; allowed: other words, or "
                          f"label_scoring=label_words")
    return T5LabelScorer(network, tok, max_length, padding, template, label_ids, label_scoring)
