"""Stacked students (the core of packed sweeps): K members trained as one module take the K separate models'
forward passes and optimiser steps, BatchNorm running statistics included; clipping acts per member."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.engine.packed_students import (StackedModels, check_same_architecture, clip_grad_norm_per_member,
                                          finite_members)
from kdrun.models import build_model

# (zoo file, overrides, input shape): an MLP, a CNN with BatchNorm, a CIFAR ResNet (BatchNorm, shortcuts)
ARCHITECTURES = {
    "mlp": ("mlp", {"width": 32}, (64,)),
    "cnn_batchnorm": ("cnn", {"width": 0.25, "batchnorm": True}, (3, 16, 16)),
    "resnet20": ("resnet20", {"width": 0.5}, (3, 16, 16)),
}
MEMBERS, BATCH, CLASSES = 3, 8, 5


def _models(architecture: str, count: int = MEMBERS) -> list[torch.nn.Module]:
    name, overrides, shape = ARCHITECTURES[architecture]
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    cfg.num_classes = CLASSES
    for key, value in overrides.items():
        cfg[key] = value
    models = []
    for seed in range(count):  # each member initialised under its own seed, as its own run would be
        torch.manual_seed(seed)
        models.append(build_model(OmegaConf.to_container(cfg), shape, role="student"))
    return models


def _batches(architecture: str, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    shape = ARCHITECTURES[architecture][2]
    generator = torch.Generator().manual_seed(7)
    return [(torch.randn(MEMBERS, BATCH, *shape, generator=generator),
             torch.randint(CLASSES, (MEMBERS, BATCH), generator=generator)) for _ in range(steps)]


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_a_stacked_forward_pass_is_each_members_own(architecture):
    models = _models(architecture)
    pack = StackedModels(models)
    (x, _), = _batches(architecture, 1)
    for mode in ("train", "eval"):
        for model in models:
            model.train(mode == "train")
        pack.train(mode == "train")
        separate = torch.stack([model(x[k]) for k, model in enumerate(models)])
        # vmap runs the same kernels on a batched layout: float32 rounding only
        torch.testing.assert_close(pack(x), separate, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_training_a_pack_takes_each_members_separate_steps(architecture, optimizer):
    # float64: in float32 the batched and separate kernels differ by rounding (~1e-7), and Adam turns the
    # rounding noise of parameters whose gradient is zero in exact arithmetic (a conv bias before BatchNorm)
    # into steps of about lr in either direction; in float64 that noise is 1e-16 against eps 1e-8, and after four
    # steps the members agree to 1e-7 relative (1e-9 absolute: Adam's steps on those near-zero gradients)
    models = [model.double() for model in _models(architecture)]
    pack = StackedModels(models)
    make = {"sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
            "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)}[optimizer]
    separate_optimizers = [make(model.parameters()) for model in models]
    pack_optimizer = make(pack.parameters())  # element-wise: one optimiser over the stacked tensors
    for model in models:
        model.train()
    pack.train()
    for x, y in _batches(architecture, 4):
        x = x.double()
        for k, (model, opt) in enumerate(zip(models, separate_optimizers)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[k]), y[k]).backward()
            opt.step()
        pack_optimizer.zero_grad()
        logits = pack(x)
        # each member's loss on its own slice; summed, each member's gradient is its own loss's
        losses = torch.stack([torch.nn.functional.cross_entropy(logits[k], y[k]) for k in range(MEMBERS)])
        losses.sum().backward()
        pack_optimizer.step()
    for k, model in enumerate(models):
        member = pack.member_state_dict(k)
        for name, value in model.state_dict().items():  # weights and BatchNorm running statistics
            torch.testing.assert_close(member[name], value, rtol=1e-7, atol=1e-9, msg=lambda text, k=k, name=name: f"member {k} {name}: {text}")


def test_a_member_state_round_trips_and_names_match_the_model():
    models = _models("cnn_batchnorm")
    pack = StackedModels(models)
    state = pack.member_state_dict(1)
    assert set(state) == set(models[1].state_dict())
    fresh = _models("cnn_batchnorm", 1)[0]
    fresh.load_state_dict(state)  # a member's student.pt loads into the plain model
    pack.load_member_state_dict(0, state)
    assert all(torch.equal(pack.member_state_dict(0)[name], value) for name, value in state.items())
    with pytest.raises(ValueError, match="does not"):
        pack.load_member_state_dict(0, {"weight": torch.zeros(1)})


def test_gradient_clipping_acts_per_member_as_torch_clips_each_model():
    models = _models("mlp")
    pack = StackedModels(models)
    (x, y), = _batches("mlp", 1)
    x = x * torch.tensor([1.0, 50.0, 0.01]).view(-1, 1, 1)  # one member's gradient far larger than the others'
    expected_norms = []
    for k, model in enumerate(models):
        torch.nn.functional.cross_entropy(model(x[k]), y[k]).backward()
        expected_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)))
    logits = pack(x)
    sum(torch.nn.functional.cross_entropy(logits[k], y[k]) for k in range(MEMBERS)).backward()
    norms = clip_grad_norm_per_member(list(pack.parameters()), max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor(expected_norms), rtol=1e-4, atol=1e-6)
    assert norms[1] > 1.0 > norms[2]  # clipped and untouched members in one pack
    grads = dict(zip(pack.parameter_names, (p.grad for p in pack.parameters())))
    for k, model in enumerate(models):
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(grads[name][k], parameter.grad, rtol=1e-4, atol=1e-7)


def test_a_non_finite_member_is_found_alone_and_mismatched_members_are_refused():
    assert finite_members(torch.tensor([0.5, float("nan"), float("inf"), 2.0])).tolist() == [True, False, False, True]
    mlp, wider = _models("mlp", 1)[0], build_model({"name": "mlp", "num_classes": CLASSES, "width": 64}, (64,))
    with pytest.raises(ValueError, match=r"member 1's features.1.weight is \(\(64, 64\), torch.float32\), member 0's"):
        check_same_architecture([mlp, wider])
    with pytest.raises(ValueError, match="member 1 differs from member 0 in its tensors"):
        check_same_architecture([mlp, _models("cnn_batchnorm", 1)[0]])
    with pytest.raises(ValueError, match="stacked input of 2 members for a pack of 3"):
        StackedModels(_models("mlp"))(torch.zeros(2, 4, 64))


# --------------------------------------------------------------------------------------------
# the MLP family runs natively (batched matrix products), everything else through vmap
# --------------------------------------------------------------------------------------------

class _Residual(torch.nn.Sequential):
    def forward(self, x):  # a Sequential whose forward is not the plain chain: must not be walked
        return x + super().forward(x)


def test_only_architectures_of_linear_and_elementwise_layers_run_natively():
    from kdrun.engine.stacked_forward import natively_stackable

    assert StackedModels(_models("mlp")).native
    assert not StackedModels(_models("cnn_batchnorm")).native  # convolutions and BatchNorm keep vmap
    assert not natively_stackable(_Residual(torch.nn.Linear(4, 4)))
    assert natively_stackable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4, bias=False),
                                                  torch.nn.GELU(), torch.nn.Dropout(0.1)))


@pytest.mark.parametrize("bias", [True, False])
def test_the_native_stacked_forward_equals_vmaps_with_gradients(bias):
    """Flatten counted from the batch dimension, a linear layer on a 3-d input, dropout off in eval, no bias."""
    from kdrun.engine.stacked_forward import stacked_forward

    def model():
        return torch.nn.Sequential(torch.nn.Flatten(start_dim=2), torch.nn.Linear(12, 6, bias=bias),
                                   torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(6, 3, bias=bias)).double()

    torch.manual_seed(0)
    models = [model() for _ in range(MEMBERS)]
    x = torch.randn(MEMBERS, BATCH, 5, 3, 4, dtype=torch.float64)
    native, vmapped = StackedModels(models).eval(), StackedModels(models).eval()
    vmapped.native = False
    assert native.native
    out_native, out_vmapped = native(x), vmapped(x)
    assert out_native.shape == (MEMBERS, BATCH, 5, 3)
    torch.testing.assert_close(out_native, out_vmapped, rtol=1e-12, atol=1e-12)
    separate = torch.stack([m.eval()(x[k]) for k, m in enumerate(models)])
    torch.testing.assert_close(out_native, separate, rtol=1e-12, atol=1e-12)
    out_native.square().sum().backward()
    out_vmapped.square().sum().backward()
    for (name, a), (_, b) in zip(native.named_parameters(), vmapped.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=name)
    with pytest.raises(TypeError, match="no native stacked form"):
        stacked_forward(torch.nn.Conv2d(1, 1, 1), {}, x, False)
