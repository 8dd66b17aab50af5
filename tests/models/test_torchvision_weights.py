"""torchvision's pretrained files load into the zoo's models (the same function, bit for bit), BlurPool blurs
where FFCV does, and a file that does not fit is refused with the reason."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models import build_model
from kdrun.teachers.imported import load_teacher_checkpoint


# resnet50's 100 MB file in the optional job: its mapping is resnet18's (the same ResNet names, Bottleneck blocks)
@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow), "mobilenet_v2"])
def test_a_torchvision_weights_file_loads_into_the_zoo_model(tmp_path, name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()  # torchvision's module, random weights
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so their mapping shows too
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}-0123abcd.pth"  # torchvision's file: its state_dict, its own names
    torch.save(reference.state_dict(), path)
    model = build_model({"name": name, "num_classes": 1000}, (3, 64, 64), role="teacher")
    result = load_teacher_checkpoint(path, model, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(result.model.eval()(x), reference(x))
    assert result.source == "imported" and len(result.meta["checkpoint_sha256"]) == 64


def test_a_file_of_another_architecture_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "resnet18-0123abcd.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build_model({"name": "resnet50", "num_classes": 1000}, (3, 64, 64), role="teacher")
    with pytest.raises(ConfigError, match=r"does not fit the teacher architecture \(teacher=resnet50\)"):
        load_teacher_checkpoint(path, model, "resnet50")
    ten_classes = build_model({"name": "resnet18", "num_classes": 10}, (3, 64, 64), role="teacher")
    with pytest.raises(ConfigError, match=r"size mismatch for head.weight"):  # ImageNet's 1000 classes
        load_teacher_checkpoint(path, ten_classes, "resnet18")


def test_blurpool_blurs_each_strided_convolution_of_16_or_more_inputs():
    from kornia.filters import BlurPool2D

    plain = build_model({"name": "resnet18", "num_classes": 10}, (3, 64, 64))
    blurred = build_model({"name": "resnet18", "num_classes": 10, "blurpool": True}, (3, 64, 64))
    blurs = [m for m in blurred.modules() if isinstance(m, BlurPool2D)]
    # layers 2-4: the first block's 3x3 conv and its 1x1 shortcut; not the 3-channel stem
    assert len(blurs) == 6 and not isinstance(blurred.features.conv1, nn.Sequential)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in blurred.parameters())
    assert set(blurred.state_dict()) == {k.replace("0.conv1.", "0.conv1.conv.").replace("downsample.0.", "downsample.0.conv.")
                                         if k.startswith(("features.layer2", "features.layer3", "features.layer4")) else k
                                         for k in plain.state_dict()}
    # the blur is FFCV's: a 3x3 binomial filter, stride 1, zero padding, per channel
    x = torch.randn(1, 64, 9, 9)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(64, 1, 3, 3)
    torch.testing.assert_close(blurs[0](x), nn.functional.conv2d(x, kernel, padding=1, groups=64))
    # torchvision's weights still load into a blurred student (the .conv level is found)
    path_state = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    from kdrun.models.torchvision_weights import zoo_state_dict

    blurred.load_state_dict(zoo_state_dict(path_state, blurred.state_dict().keys()))
    with pytest.raises(ConfigError, match="model.blurpool"):
        build_model({"name": "resnet18", "num_classes": 10, "blurpool": "yes"}, (3, 64, 64))
