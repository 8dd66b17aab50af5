"""Unit tests for the model zoo (kdrun.models): building, shapes, parameter counts, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kdrun.errors import ConfigError
from kdrun.models import MODELS, ZooModel, build_model, count_parameters

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def model_cfg(name: str, num_classes: int, **values) -> dict:
    """The config group file as a plain dict, with the data.num_classes interpolation replaced."""
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert cfg._get_node("num_classes")._value() == "${data.num_classes}"
    cfg.num_classes = num_classes
    for key, value in values.items():
        cfg[key] = value
    return OmegaConf.to_container(cfg, resolve=True)


def cnn_count(in_channels, num_classes, channels, batchnorm):
    total, c_in = 0, in_channels
    for c_out in channels:
        total += c_in * c_out * 9 + c_out + (2 * c_out if batchnorm else 0)
        c_in = c_out
    return total + c_in * num_classes + num_classes


def mlp_count(fan_in, num_classes, depth, width):
    if depth == 0:
        return fan_in * num_classes + num_classes
    return (fan_in * width + width) + (depth - 1) * (width * width + width) + (width * num_classes + num_classes)


def test_both_architectures_are_registered():
    assert {"mlp", "cnn"} <= set(MODELS)


@pytest.mark.parametrize("name,input_shape,num_classes", [
    ("mlp", (10,), 2), ("mlp", (1, 8, 8), 10), ("mlp", (3, 32, 32), 10),
    ("cnn", (1, 8, 8), 10), ("cnn", (3, 32, 32), 10), ("cnn", (3, 9, 7), 4),
])
def test_output_shape(name, input_shape, num_classes):
    model = build_model(model_cfg(name, num_classes), input_shape)
    assert isinstance(model, ZooModel)
    model.eval()
    for batch in (1, 5):
        out = model(torch.randn(batch, *input_shape))
        assert out.shape == (batch, num_classes)
        assert torch.isfinite(out).all()


def test_the_config_file_builds_with_an_omegaconf_mapping():
    cfg = OmegaConf.load(CONFIGS / "cnn.yaml")
    cfg.num_classes = 10
    model = build_model(cfg, [3, 32, 32])  # a DictConfig, a list input shape
    assert count_parameters(model) == 118_190


def test_cnn_parameter_counts_match_paper_002():
    no_bn = build_model(model_cfg("cnn", 10, batchnorm=False), (3, 32, 32))
    bn = build_model(model_cfg("cnn", 10, batchnorm=True), (3, 32, 32))
    assert count_parameters(no_bn) == 117_630
    assert count_parameters(bn) == 118_190
    assert count_parameters(no_bn) == cnn_count(3, 10, (20, 40, 60, 160), False)
    assert count_parameters(bn, trainable_only=True) == 118_190
    convs = [m for m in bn.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [20, 40, 60, 160]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in bn.features) == 3


def test_cnn_width_scales_channels():
    base = build_model(model_cfg("cnn", 10, batchnorm=False), (3, 32, 32))
    wide = build_model(model_cfg("cnn", 10, batchnorm=False, width=2.0), (3, 32, 32))
    assert count_parameters(wide) == cnn_count(3, 10, (40, 80, 120, 320), False)
    ratio = count_parameters(wide) / count_parameters(base)
    assert 3.5 < ratio < 4.1  # conv parameters are quadratic in width
    half = build_model(model_cfg("cnn", 10, batchnorm=False, width=0.5), (3, 32, 32))
    assert count_parameters(half) == cnn_count(3, 10, (10, 20, 30, 80), False)
    assert wide.head.in_features == 320


def test_cnn_custom_channels_and_avg_pool():
    model = build_model(model_cfg("cnn", 7, channels=[4, 8], batchnorm=False, final_pool="avg"), (1, 8, 8))
    assert count_parameters(model) == cnn_count(1, 7, (4, 8), False)
    assert isinstance(model.features[-2], torch.nn.AdaptiveAvgPool2d)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("depth,width", [(0, 16), (1, 16), (2, 128), (3, 32)])
@pytest.mark.parametrize("input_shape", [(10,), (1, 8, 8)])
def test_mlp_parameter_count_matches_the_formula(depth, width, input_shape):
    model = build_model(model_cfg("mlp", 10, depth=depth, width=width), input_shape)
    assert count_parameters(model) == mlp_count(math.prod(input_shape), 10, depth, width)


def test_mlp_default_config_count():
    model = build_model(model_cfg("mlp", 10), (1, 8, 8))
    assert count_parameters(model) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


@pytest.mark.parametrize("name,input_shape,extra", [
    ("mlp", (1, 8, 8), {}),
    ("mlp", (10,), {"activation": "tanh", "dropout": 0.1}),
    ("cnn", (1, 8, 8), {}),
    ("cnn", (3, 16, 16), {"batchnorm": False}),
])
def test_one_optimisation_step_changes_params_and_lowers_loss(name, input_shape, extra):
    torch.manual_seed(0)
    model = build_model(model_cfg(name, 3, **extra), input_shape)
    x = torch.randn(8, *input_shape)
    y = torch.randint(0, 3, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss_now():
        model.eval()  # no dropout / batch statistics, so the two evaluations are comparable
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    initial = loss_now()
    model.train()
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    if not extra.get("dropout") and name == "mlp":
        assert loss_now() < initial
    else:
        assert math.isfinite(loss_now())


def test_small_step_lowers_the_loss_for_the_cnn_without_batchnorm():
    torch.manual_seed(1)
    model = build_model(model_cfg("cnn", 3, batchnorm=False), (1, 8, 8))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    initial = F.cross_entropy(model(x), y)
    initial.backward()
    optimizer.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() < initial.item()


@pytest.mark.parametrize("input_shape", [(10,), (64,), (1, 8)])
def test_cnn_rejects_non_image_input(input_shape):
    with pytest.raises(ConfigError, match="cnn needs image input") as info:
        build_model(model_cfg("cnn", 2), input_shape)
    assert str(list(input_shape)) in str(info.value)


def test_unknown_model_name():
    with pytest.raises(ConfigError) as info:
        build_model({"name": "resnet9000", "num_classes": 10}, (3, 32, 32), role="teacher")
    message = str(info.value)
    assert "teacher.model.name='resnet9000'" in message
    assert "cnn" in message and "mlp" in message
    with pytest.raises(ConfigError, match="name=None"):
        build_model({"num_classes": 10}, (3, 32, 32))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_unknown_option(name):
    cfg = model_cfg(name, 10)
    cfg["dropuot"] = 0.5
    with pytest.raises(ConfigError) as info:
        build_model(cfg, (3, 8, 8), role="student")
    message = str(info.value)
    assert "dropuot" in message and f"student.model ({name})" in message


def test_missing_num_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model({"name": "mlp"}, (10,))


@pytest.mark.parametrize("name,option,value,pattern", [
    ("mlp", "activation", "swish", "activation='swish'"),
    ("mlp", "depth", -1, "depth=-1"),
    ("mlp", "width", 0, "width=0"),
    ("cnn", "final_pool", "median", "final_pool='median'"),
    ("cnn", "width", 0.0, "width=0.0"),
])
def test_bad_option_values(name, option, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(model_cfg(name, 10, **{option: value}), (3, 8, 8))


@pytest.mark.parametrize("name,input_shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (3, 32, 32))])
def test_features_then_head_equals_forward(name, input_shape):
    torch.manual_seed(0)
    model = build_model(model_cfg(name, 10), input_shape).eval()
    x = torch.randn(4, *input_shape)
    with torch.no_grad():
        features = model.features(x)
        assert features.ndim == 2 and features.shape[1] == model.head.in_features
        assert torch.allclose(model.head(features), model(x), atol=1e-6)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 10
