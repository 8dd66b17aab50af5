"""The extended model zoo: every configs/model/*.yaml builds and trains a step; published counts; options.

Published parameter counts checked (10 classes, within 2%): He et al. 2016 Table 6 for the
CIFAR ResNets 20/32/44/56/110 (0.27M, 0.46M, 0.66M, 0.85M, 1.7M) and the same numbers for the
pre-activation ResNets 20 and 56 (He et al. 2016b report 1.7M for their ResNet-110 as well).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.models import MODELS, ZooModel, build_model, count_parameters

from support import compose_config

CONFIGS = config_dir() / "model"
ZOO_FILES = sorted(CONFIGS.glob("*.yaml"))
VECTOR_MODELS = {"mlp", "logistic_regression", "random_features"}
BATCHNORM_STATE = ("running_mean", "running_var", "num_batches_tracked")


def zoo_cfg(stem: str, num_classes: int = 10, **values) -> dict:
    """A zoo file as a plain dict, with data.num_classes replaced and `values` overriding options."""
    cfg = OmegaConf.load(CONFIGS / f"{stem}.yaml")
    cfg.num_classes = num_classes
    for key, value in values.items():
        cfg[key] = value
    return OmegaConf.to_container(cfg, resolve=True)


TOKEN_MODELS = {"gpt"}  # read token ids (batch, T) and predict every position: (batch, T, vocabulary)


def input_shape_for(name: str) -> tuple[int, ...]:
    if name == "channelwise_linear":
        return (10 * 100,)
    if name in TOKEN_MODELS:
        return (16,)
    return (64,) if name in VECTOR_MODELS else (3, 32, 32)


def first_conv(model) -> torch.nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("name,published,exact", [
    ("resnet20", 0.27e6, 269_722), ("resnet32", 0.46e6, 464_154), ("resnet44", 0.66e6, 658_586),
    ("resnet56", 0.85e6, 853_018), ("resnet110", 1.7e6, 1_727_962),
    ("preact_resnet20", 0.27e6, 269_722), ("preact_resnet56", 0.85e6, 853_018),
])
def test_cifar_resnet_parameter_counts_match_the_papers(name, published, exact):
    count = count_parameters(build_model(zoo_cfg(name), (3, 32, 32)))
    assert abs(count - published) / published < 0.02
    assert count == exact


def test_option_b_shortcuts_add_only_the_projections():
    def count(name, shortcut):
        return count_parameters(build_model(zoo_cfg(name, shortcut=shortcut), (3, 32, 32)))

    assert count("resnet20", "B") - count("resnet20", "A") == 16 * 32 + 32 * 64 + 2 * (32 + 64)  # conv + BN
    assert count("preact_resnet20", "B") - count("preact_resnet20", "A") == 16 * 32 + 32 * 64  # conv only


def test_generic_depth_matches_the_presets():
    assert count_parameters(build_model(zoo_cfg("resnet_cifar", depth=56), (3, 32, 32))) == 853_018
    features = build_model(zoo_cfg("preact_resnet_cifar", depth=8), (3, 32, 32)).features
    assert [len(getattr(features, f"stage{i}")) for i in (1, 2, 3)] == [1, 1, 1]


@pytest.mark.parametrize("name,builder", [
    ("resnet18", torchvision.models.resnet18), ("resnet50", torchvision.models.resnet50),
    ("mobilenet_v2", torchvision.models.mobilenet_v2),
])
def test_torchvision_models_keep_torchvision_counts(name, builder):
    model = build_model(zoo_cfg(name), (3, 32, 32))
    assert count_parameters(model) == count_parameters(builder(weights=None, num_classes=10))
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 10


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_zoo_file_is_self_contained_and_lists_every_option(path):
    cfg = OmegaConf.load(path)
    assert "defaults" not in cfg
    assert cfg._get_node("num_classes")._value() == "${data.num_classes}"
    assert cfg.name in MODELS
    options = set(inspect.signature(MODELS[cfg.name]).parameters) - {"input_shape", "num_classes"}
    assert options <= set(cfg), f"{path.name} misses options {sorted(options - set(cfg))}"


def test_every_registered_model_has_a_zoo_file():
    assert set(MODELS) <= {OmegaConf.load(path).name for path in ZOO_FILES}


TEXT_MODELS = {"hf_classifier", "hf_t5_classifier"}  # read raw text and tokenize it themselves
TINY_TEXT_CONFIG = {"hf_classifier": ({"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "intermediate_size": 32}, "embedded:wordpiece"),
                    "hf_t5_classifier": ({"model_type": "t5", "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1,
                                          "num_heads": 2}, "embedded:sentencepiece")}
TEXTS = [["the plot was good", "a red dog runs", "the music was dull", "a cat sleeps"]]


def text_model_trains_one_step(path) -> None:
    """A text model's file: built offline (a preset of pretrained weights only where its directory exists) and one
    optimisation step on raw text."""
    pytest.importorskip("transformers")
    # pretrained presets read <paths.models_dir>/NAME, which is not on this machine
    path_value = OmegaConf.load(path)._get_node("path")._value()
    words = {"label_words": ["negative", "positive"]} if "label_words" in OmegaConf.load(path) else {}
    cfg = zoo_cfg(path.stem, num_classes=2, **words,
                  **({"path": str(path.parent / "no-such-model")} if path_value is not None else {}))
    if cfg["path"] is not None:
        with pytest.raises(ConfigError, match="no such directory"):  # pretrained weights are not on this machine
            build_model(cfg, ())
        return
    if cfg["config"] is None:  # the generic file: a tiny configuration of its family
        cfg["config"], cfg["tokenizer"] = TINY_TEXT_CONFIG[cfg["name"]]
    model = build_model(cfg, ())
    params = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(TEXTS)
    assert out.shape == (4, 2)
    F.cross_entropy(out, torch.tensor([1, 0, 0, 1])).backward()
    optimizer.step()
    assert any(not torch.equal(before, p) for before, p in zip(params, model.parameters()))


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_every_zoo_file_trains_one_step(path):
    torch.manual_seed(0)
    if OmegaConf.load(path).name in TEXT_MODELS:
        text_model_trains_one_step(path)
        return
    cfg = zoo_cfg(path.stem)
    shape = input_shape_for(cfg["name"])
    model = build_model(cfg, shape).eval()
    tokens = cfg["name"] in TOKEN_MODELS
    x = torch.randint(0, 10, (4, *shape)) if tokens else torch.randn(4, *shape)
    y = torch.randint(0, 10, (4, *shape) if tokens else (4,))
    with torch.no_grad():
        assert torch.allclose(model.head(model.features(x)), model(x), rtol=1e-5, atol=1e-5)
    params = [p.detach().clone() for p in model.parameters()]
    frozen = {name: b.clone() for name, b in model.named_buffers() if not name.endswith(BATCHNORM_STATE)}
    # a small rate: one step of 0.1 on a batch of 4 can blow up ResNet-50's 1x1 last stage
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    out = model(x)
    assert out.shape == ((4, 16, 10) if tokens else (4, 10))
    loss = F.cross_entropy(out.reshape(-1, 10), y.reshape(-1))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before, p) for before, p in zip(params, model.parameters()))
    for name, buffer in model.named_buffers():
        if name in frozen:
            assert torch.equal(frozen[name], buffer), f"frozen buffer {name} changed"


def test_teacher_and_student_select_zoo_files(tmp_path):
    cfg = compose_config(tmp_path, ["teacher=vgg19_bn", "student=preact_resnet20"])
    assert cfg.teacher.model.name == "vgg19" and cfg.teacher.model.batchnorm is True
    assert cfg.student.model.name == "preact_resnet20"


def test_resnet18_cifar_stem_changes_only_the_stem():
    imagenet = build_model(zoo_cfg("resnet18"), (3, 32, 32))
    cifar = build_model(zoo_cfg("resnet18", cifar_stem=True), (3, 32, 32))
    assert (imagenet.features.conv1.kernel_size, imagenet.features.conv1.stride) == ((7, 7), (2, 2))
    assert (cifar.features.conv1.kernel_size, cifar.features.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(imagenet.features.maxpool, torch.nn.MaxPool2d)
    assert isinstance(cifar.features.maxpool, torch.nn.Identity)
    assert count_parameters(imagenet) - count_parameters(cifar) == 64 * 3 * (49 - 9)


def test_mobilenet_cifar_stride_downsamples_8x():
    x = torch.randn(2, 3, 32, 32)
    for cifar_stride, size in ((False, 1), (True, 4)):
        model = build_model(zoo_cfg("mobilenet_v2", cifar_stride=cifar_stride), (3, 32, 32)).eval()
        assert model.features.body(x).shape[-1] == size


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "resnet18", "resnet50", "vgg11", "mobilenet_v2", "vit"])
def test_one_channel_images(name):
    model = build_model(zoo_cfg(name), (1, 28, 28)).eval()
    assert first_conv(model).in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name,width,penultimate", [
    ("resnet20", 2.0, 128), ("preact_resnet20", 0.5, 32), ("resnet18", 0.5, 256), ("resnet50", 0.25, 512),
    ("vgg19", 0.5, 256), ("mobilenet_v2", 0.5, 1280), ("vit", 0.5, 64), ("vit", 0.3, 40),
    ("random_features", 0.5, 2500),
])
def test_width_scales_the_penultimate_layer(name, width, penultimate):
    shape = input_shape_for(name)
    model = build_model(zoo_cfg(name, width=width), shape).eval()
    assert model.head.in_features == penultimate
    with torch.no_grad():
        assert model.features(torch.randn(2, *shape)).shape == (2, penultimate)


def test_width_scales_conv_parameters_quadratically():
    base = count_parameters(build_model(zoo_cfg("resnet20"), (3, 32, 32)))
    wide = count_parameters(build_model(zoo_cfg("resnet20", width=2.0), (3, 32, 32)))
    assert 3.8 < wide / base < 4.1
    assert count_parameters(build_model(zoo_cfg("mobilenet_v2", width=0.5), (3, 32, 32))) < 0.4 * 2_236_682


def test_random_features_are_a_seeded_frozen_buffer():
    model = build_model(zoo_cfg("random_features"), (1, 28, 28))
    weight = model.features.weight
    assert weight.shape == (5000, 784) and not weight.requires_grad
    assert list(model.features.parameters()) == [] and "features.weight" in model.state_dict()
    assert abs(weight.std().item() - 1 / math.sqrt(784)) < 0.01 / math.sqrt(784) * 10
    torch.manual_seed(123)  # the global seed does not matter, the feature seed does
    same = build_model(zoo_cfg("random_features"), (1, 28, 28)).features.weight
    other = build_model(zoo_cfg("random_features", feature_seed=1), (1, 28, 28)).features.weight
    assert torch.equal(weight, same) and not torch.equal(weight, other)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.features(x), torch.relu(x.flatten(1) @ weight.T))
    assert count_parameters(model, trainable_only=True) == 5000 * 10 + 10


def test_channelwise_node_k_sees_only_channel_k():
    for shape in ((10 * 100,), (10, 100)):
        model = build_model(zoo_cfg("channelwise_linear"), shape).eval()
        assert model.head.weight.shape == (10, 100) and model.head.bias is None
        x = torch.randn(3, *shape)
        expected = (x.reshape(3, 10, 100) * model.head.weight).sum(-1)
        assert torch.allclose(model(x), expected, atol=1e-6)
    x = torch.randn(1, 10, 100)
    changed = x.clone()
    changed[0, 3] += 1.0
    delta = model(changed) - model(x)
    assert torch.count_nonzero(delta.detach()) == 1 and delta[0, 3] != 0


def test_logistic_regression_and_paper_000s_two_mlp_readings():
    logistic = build_model(zoo_cfg("logistic_regression", bias=False), (1, 28, 28))
    assert count_parameters(logistic) == 784 * 10
    one_hidden = build_model(zoo_cfg("mlp_1x1000"), (1, 28, 28))  # "2-layer": two weight layers
    assert one_hidden.features[1].weight.shape == (1000, 784)  # the first-layer weight of paper 000's eigen analysis
    assert count_parameters(one_hidden) == 784 * 1000 + 1000 + 1000 * 10 + 10
    two_hidden = build_model(zoo_cfg("mlp_2x1000"), (1, 28, 28))  # "2-layer": two hidden layers, 784-1000-1000-10
    assert two_hidden.features[1].weight.shape == (1000, 784)
    assert count_parameters(two_hidden) == 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 10 + 10


@pytest.mark.parametrize("stem,values,shape,needles", [
    ("vit", {"dim": 100, "heads": 3}, (3, 32, 32), ["dim=100", "heads=3"]),
    ("vit", {"patch_size": 5}, (3, 32, 32), ["patch_size=5", "[3, 32, 32]"]),
    ("vit", {"pool": "max"}, (3, 32, 32), ["pool='max'", "cls, mean"]),
    ("channelwise_linear", {}, (1001,), ["1001", "num_classes=10", "multiple of 10"]),
    ("channelwise_linear", {}, (9, 100), ["9 channels", "num_classes=10"]),
    ("channelwise_linear", {"channel_dim": 50}, (1000,), ["channel_dim=50", "1000"]),
    ("channelwise_linear", {}, (10, 10, 10), ["[10, 10, 10]"]),
    ("resnet_cifar", {"depth": 21}, (3, 32, 32), ["depth=21", "6n+2"]),
    ("resnet20", {"shortcut": "C"}, (3, 32, 32), ["resnet20", "shortcut='C'", "A, B"]),
    ("preact_resnet56", {"width": 0}, (3, 32, 32), ["preact_resnet56", "width=0"]),
    ("resnet18", {"cifar_stem": "yes"}, (3, 32, 32), ["cifar_stem='yes'", "true or false"]),
    ("mobilenet_v2", {"dropout": 1.0}, (3, 32, 32), ["dropout=1.0"]),
    ("vgg19", {"width": -1.0}, (3, 32, 32), ["vgg19", "width=-1.0"]),
    ("random_features", {"num_features": 0}, (64,), ["num_features=0"]),
    ("resnet20", {"depth": 56}, (3, 32, 32), ["resnet20", "depth"]),
    ("vit", {}, (64,), ["vit needs image input", "[64]"]),
    ("mobilenet_v2", {}, (64,), ["mobilenet_v2 needs image input"]),
])
def test_bad_options_raise_config_errors_naming_them(stem, values, shape, needles):
    with pytest.raises(ConfigError) as info:
        build_model(zoo_cfg(stem, **values), shape)
    for needle in needles:
        assert needle in str(info.value)


# ---------------------------------------------------------------------------------------------
# the two core architectures (mlp, cnn): shapes, paper 002's counts, training steps, option errors
# ---------------------------------------------------------------------------------------------


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
