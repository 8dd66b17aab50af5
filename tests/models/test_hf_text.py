"""Hugging Face text models: built offline from configurations or from save_pretrained directories, each with its own
tokenizer, and kdrun's own errors for missing or incomplete directories (never transformers' "repo id" message)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from kdrun.errors import ConfigError
from kdrun.models import build_model
from kdrun.models.hf_text import T5LabelScorer, TextClassifier

TINY_BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 64}
TINY_T5 = {"model_type": "t5", "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1,
           "num_heads": 2}
SENTENCES = ["the plot was good", "the acting was not bad but dull", "a red dog runs in the park",
             "a cat sleeps", "the music was superb"] * 4


def bert(**options):
    torch.manual_seed(0)
    return build_model({"name": "hf_classifier", "num_classes": 2, "config": TINY_BERT,
                        "tokenizer": "embedded:wordpiece", "max_length": 32, **options}, (), role="student")


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer trained here with the tokenizers library and saved as transformers does."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
        vocab_size=80, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    directory = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(str(directory))
    return directory


def test_a_random_weight_bert_reads_raw_text_single_and_pairs():
    model = bert()
    assert isinstance(model, TextClassifier) and model.input_kind == "text"
    assert model([["the plot was good", "a cat sleeps"]]).shape == (2, 2)
    pair = model.encode([["a red dog runs", "a cat"], ["a dog runs", "a cat sleeps"]])
    assert pair["input_ids"].shape[0] == 2 and (pair["token_type_ids"] == 1).any()  # the second text's segment
    assert model([["a red dog runs", "a cat"], ["a dog runs", "a cat sleeps"]]).shape == (2, 2)


def test_texts_longer_than_max_length_are_truncated_and_padding_is_per_model():
    model = bert(max_length=8)
    encoded = model.encode([["the plot was good " * 10, "a cat"]])
    assert encoded["input_ids"].shape == (2, 8)
    fixed = bert(max_length=12, padding="max_length").encode([["a cat"]])
    assert fixed["input_ids"].shape == (1, 12)


def test_the_same_seed_builds_the_same_weights():
    first, second = bert(), bert()
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_save_pretrained_directory_loads_offline_with_its_tokenizer(tmp_path, trained_tokenizer):
    model = build_model({"name": "hf_classifier", "num_classes": 3, "config": TINY_BERT,
                         "tokenizer": str(trained_tokenizer), "max_length": 32}, (), role="teacher")
    model.network.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    loaded = build_model({"name": "hf_classifier", "num_classes": 3, "path": str(tmp_path / "model"), "max_length": 32},
                         (), "teacher")
    model.eval(), loaded.eval()
    texts = [["the plot was good", "a red dog runs"]]
    assert torch.allclose(model(texts), loaded(texts))
    # weights imported into a freshly built architecture (teacher.checkpoint=DIR)
    torch.manual_seed(1)
    fresh = build_model({"name": "hf_classifier", "num_classes": 3, "config": TINY_BERT,
                         "tokenizer": str(trained_tokenizer), "max_length": 32}, (), role="teacher").eval()
    assert not torch.allclose(fresh(texts), model(texts))
    fresh.load_pretrained_weights(tmp_path / "model")
    assert torch.allclose(fresh(texts), model(texts))


@pytest.mark.parametrize("problem", ["missing", "no_config", "no_weights", "no_tokenizer"])
def test_a_missing_or_incomplete_model_directory_is_kdruns_own_error(tmp_path, problem):
    directory = tmp_path / "model"
    if problem != "missing":
        model = bert()
        model.network.save_pretrained(str(directory))
        if problem == "no_config":
            (directory / "config.json").unlink()
        if problem == "no_weights":
            for weights in directory.glob("*.safetensors"):
                weights.unlink()
    expected = {"missing": "no such directory", "no_config": "no config.json", "no_weights": "no weights",
                "no_tokenizer": "holds no tokenizer"}[problem]
    with pytest.raises(ConfigError, match=expected) as error:
        build_model({"name": "hf_classifier", "num_classes": 2, "path": str(directory), "max_length": 32}, (),
                    role="teacher")
    assert "repo id" not in str(error.value) and "teacher.model." in str(error.value)


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="set exactly one"):
        build_model({"name": "hf_classifier", "num_classes": 2}, (), role="student")
    with pytest.raises(ConfigError, match="tokenizer=null with random weights"):
        build_model({"name": "hf_classifier", "num_classes": 2, "config": TINY_BERT}, (), role="student")
    with pytest.raises(ConfigError, match="not an embedded tokenizer; allowed: embedded:sentencepiece"):
        bert(tokenizer="embedded:nope")
    with pytest.raises(ConfigError, match=r"max_length=100 is longer than hf_classifier can read \(64 positions\)"):
        bert(max_length=100)
    with pytest.raises(ConfigError, match="student.model.padding"):
        bert(padding="shortest")
    with pytest.raises(ConfigError, match="not a transformers configuration"):
        bert(config={**TINY_BERT, "model_type": "no_such_model"})


def t5(**options):
    torch.manual_seed(0)
    return build_model({"name": "hf_t5_classifier", "num_classes": 2, "config": TINY_T5,
                        "tokenizer": "embedded:sentencepiece", "label_words": ["negative", "positive"],
                        "template": "sst2 sentence: {0}", **options}, (), role="teacher")


def test_a_t5_teacher_scores_classes_by_its_label_words():
    first, whole = t5().eval(), t5(label_scoring="label_words").eval()
    assert isinstance(first, T5LabelScorer)
    texts = [["the plot was good", "the music was dull"]]
    logits = first(texts)
    assert logits.shape == (2, 2)
    # first_token: the decoder's first-step logits at each label word's first token
    encoded = first.encode(texts)
    start = torch.zeros((2, 1), dtype=torch.long)
    full = first.network(**encoded, decoder_input_ids=start).logits[:, 0]
    assert torch.allclose(logits, full[:, [ids[0] for ids in first.label_ids]])
    # label_words: the summed log-probability of each word's tokens; equal to the first token's log-softmax
    # when a word is one token
    scores = whole(texts)
    log_probs = full.log_softmax(-1)
    for cls, ids in enumerate(whole.label_ids):
        if len(ids) == 1:
            assert torch.allclose(scores[:, cls], log_probs[:, ids[0]], atol=1e-5)


def test_t5_options_are_checked():
    with pytest.raises(ConfigError, match="one non-empty word per class"):
        t5(label_words=["negative"])
    with pytest.raises(ConfigError, match="start with the same token"):
        t5(label_words=["dull", "duck"])  # both begin with the piece "▁d" in the embedded vocabulary
    with pytest.raises(ConfigError, match="template"):
        t5(template="no fields here")
    assert t5(label_words=["dull", "duck"], label_scoring="label_words")([["a cat"]]).shape == (1, 2)
