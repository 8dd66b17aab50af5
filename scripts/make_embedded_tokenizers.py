"""Build the tokenizers that ship with kdrun for its embedded text tasks (kdrun/data/embedded_tokenizers/).

Two tokenizers of different kinds, so that a teacher and a student can read the same text differently
as T5 and BERT do: `wordpiece` (BERT-style: lower-cased WordPiece, [CLS] a [SEP] b [SEP]) and `sentencepiece`
(T5-style: byte-pair merges over "▁"-marked words as SentencePiece writes them, a </s> after each text, <pad> = 0). Both are
trained on `kdrun.data.generated_text.tokenizer_corpus()` and saved with `save_pretrained`, so
`model.tokenizer=embedded:NAME` loads them like any tokenizer directory. Run it again only when the
generators' vocabulary changes:

    python scripts/make_embedded_tokenizers.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from kdrun.data.generated_text import tokenizer_corpus

TARGET = Path(__file__).resolve().parents[1] / "kdrun" / "data" / "embedded_tokenizers"


def wordpiece(corpus: list[str]) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def sentencepiece_bpe(corpus: list[str]) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                   model_max_length=512, model_input_names=["input_ids", "attention_mask"])


def main() -> None:
    corpus = tokenizer_corpus()
    for name, build in (("wordpiece", wordpiece), ("sentencepiece", sentencepiece_bpe)):
        directory = TARGET / name
        shutil.rmtree(directory, ignore_errors=True)
        tokenizer = build(corpus)
        tokenizer.save_pretrained(str(directory))
        # the class name every transformers version since 4 reads (5 writes its own new name)
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        print(f"{directory}: {len(tokenizer)} tokens; 'the plot was not dull' ->",
              tokenizer.tokenize("the plot was not dull"))


if __name__ == "__main__":
    main()
