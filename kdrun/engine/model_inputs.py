"""Whether the run's models can read its data, checked before anything trains: a language model needs token
windows, a text classifier raw text (which it must be able to tokenize), every other model tensors."""

from __future__ import annotations

import torch

from kdrun.errors import ConfigError

LANGUAGE_MODELS = "a language model (gpt, nano_gpt, pico_gpt, micro_gpt)"
TEXT_MODELS = "a text model (hf_classifier, hf_t5_classifier, or their presets: bert_*, roberta_*, t5_*)"
PROBE_SAMPLES = 2


def check_model_inputs(cfg, source, models: dict) -> None:
    """`models`: role -> the built model (None where the role has none, e.g. an oracle teacher)."""
    for role, model in models.items():
        if model is None:
            continue
        name = cfg[role].model.name
        reads_text = getattr(model, "input_kind", "tensor") == "text"
        if source.task == "next_token":
            if getattr(model, "input_dtype", None) != torch.long:
                raise ConfigError(f"{role}.model.name={name} does not read token ids, but data.source={cfg.data.source} "
                                  f"gives next-token windows; allowed: {LANGUAGE_MODELS}")
        elif source.input_kind == "text":
            if not reads_text:
                raise ConfigError(f"{role}.model.name={name} does not read text, but data.source={cfg.data.source} "
                                  f"gives raw text; allowed: {TEXT_MODELS}")
            probe_text_model(role, name, model, source, cfg.data.source)
        elif reads_text:
            raise ConfigError(f"{role}.model.name={name} reads text, but data.source={cfg.data.source} gives "
                              f"tensors; allowed: a text source (data=toy_sentiment, text_classification, sst2, ...)")


def probe_text_model(role: str, name: str, model, source, source_name: str) -> None:
    """Tokenize the first training samples as the model will in training: a template that does not fit the
    number of texts, or a tokenizer that cannot read them, fails now."""
    samples = [source.train.dataset[index][0] for index in range(min(PROBE_SAMPLES, len(source.train)))]
    columns = [list(column) for column in zip(*samples)]
    try:
        model.encode(columns)
    except (IndexError, KeyError, ValueError, TypeError) as error:
        raise ConfigError(f"{role}.model ({name}) cannot tokenize data.source={source_name}'s samples "
                          f"({len(columns)} text column(s), e.g. {samples[0]!r}): {type(error).__name__}: {error}"
                          ) from None

