"""VGG-11 and VGG-19 (Simonyan & Zisserman 2015, configurations A and E) with a CIFAR-style head.

`features`: the 3x3 conv stacks (channels 64..512 x `width`) with 2x2 max-pools, optional
BatchNorm after each conv (`batchnorm: true` is torchvision's `vgg11_bn` / `vgg19_bn`), then a
global average pool and flatten; `head`: one Linear (512 x width -> classes) instead of the
ImageNet 4096-4096 classifier, so 32x32 input works (it reaches 1x1 after the fifth pool).

Decisions: conv layers keep their bias also with BatchNorm (as torchvision does); the pools use
ceil_mode so inputs that are not multiples of 32 (28x28, 8x8) never pool down to nothing —
identical to floor mode for 32x32 and 64x64. He-normal (fan_out) init like torchvision.
Counts for 10 classes, 3-channel input: vgg11 9,225,610, vgg11_bn 9,231,114, vgg19 20,029,514,
vgg19_bn 20,040,522.
Paper 003 lists both VGG19 and VGG19BN without saying which experiment used which.
"""

from __future__ import annotations

from torch import nn

from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import flag, image_input, init_conv_like_torchvision, scaled, width_multiplier

POOL = "M"
CONFIGURATIONS = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg19": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
              512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL],
}


def _vgg(model: str, input_shape, num_classes: int, batchnorm: bool, width: float) -> ZooModel:
    in_channels = image_input(model, input_shape)[0]
    batchnorm = flag(model, "batchnorm", batchnorm)
    width = width_multiplier(model, width)
    layers: list[nn.Module] = []
    for entry in CONFIGURATIONS[model]:
        if entry == POOL:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            continue
        out_channels = scaled(entry, width)
        layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    init_conv_like_torchvision(features)
    return ZooModel(features, nn.Linear(in_channels, num_classes))


@register_model("vgg11")
def vgg11(input_shape, num_classes: int, batchnorm: bool = False, width: float = 1.0) -> ZooModel:
    return _vgg("vgg11", input_shape, num_classes, batchnorm, width)


@register_model("vgg19")
def vgg19(input_shape, num_classes: int, batchnorm: bool = False, width: float = 1.0) -> ZooModel:
    return _vgg("vgg19", input_shape, num_classes, batchnorm, width)
