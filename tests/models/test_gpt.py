"""The GPT decoder: shapes, causality, tied weights, the width rounding, the presets' sizes, bad options."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.models import build_model, count_parameters
from kdrun.models.gpt import scaled_embedding


def tiny(**options):
    cfg = {"name": "gpt", "num_classes": 11, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8,
           "dropout": 0.0, **options}
    return build_model(cfg, (8,), "student")


def test_logits_per_position_and_causal():
    torch.manual_seed(0)
    model = tiny().eval()
    tokens = torch.randint(0, 11, (3, 8))
    logits = model(tokens)
    assert logits.shape == (3, 8, 11)
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11  # the future changes ...
    again = model(changed)
    assert torch.allclose(again[:, :5], logits[:, :5], atol=1e-6)  # ... the past's predictions do not
    assert not torch.allclose(again[:, 5:], logits[:, 5:])
    assert model.features(tokens).shape == (3, 8, 16)  # the residual stream feature losses tap


def test_head_is_tied_to_the_token_embedding_unless_asked():
    tied, untied = tiny(), tiny(tie_weights=False)
    assert tied.head.weight is tied.features.token_embedding.weight
    assert count_parameters(untied) - count_parameters(tied) == 11 * 16


@pytest.mark.parametrize("width, rounding, expected", [
    (1.0, "nearest", 384), (0.5, "nearest", 192), (0.9, "nearest", 348), (0.9, "floor", 342), (0.1, "nearest", 36),
    (0.001, "nearest", 6),
])
def test_width_scales_n_embd_to_a_multiple_of_the_heads(width, rounding, expected):
    assert scaled_embedding(384, 6, width, rounding) == expected


def test_presets_have_the_papers_sizes():
    def preset(name):
        cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
        cfg.num_classes, cfg.block_size = 65, 256
        return build_model(cfg, (256,), "teacher")

    nano, pico = preset("nano_gpt"), preset("pico_gpt")
    assert nano.features.token_embedding.embedding_dim == 384 and len(nano.features.blocks) == 6
    assert pico.features.token_embedding.embedding_dim == 192
    # nanoGPT reports 10.65M parameters for its Shakespeare-char model (position embeddings excluded)
    assert count_parameters(nano) - 256 * 384 == pytest.approx(10.65e6, rel=0.01)


@pytest.mark.parametrize("options, shape, message", [
    ({"block_size": 4}, (8,), r"student.model.block_size=4 is shorter than the data's windows"),
    ({"n_embd": 15}, (8,), r"n_embd=15 is not a multiple of n_head=2"),
    ({"dropout": 1.0}, (8,), r"student.model.dropout=1.0"),
    ({"width_rounding": "ceil"}, (8,), r"student.model.width_rounding='ceil'"),
    ({}, (1, 8, 8), r"gpt reads token windows"),
])
def test_bad_options_are_refused(options, shape, message):
    cfg = {"name": "gpt", "num_classes": 11, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, **options}
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, shape, "student")
