"""ImageNet-family architectures from torchvision: `resnet18`, `resnet50`, `mobilenet_v2`. Built with random
weights; torchvision's pretrained weights load from a local file (`teacher.checkpoint`, kdrun.models.torchvision_weights).

Each is torchvision's module tree re-wrapped as `ZooModel(features, head)`: `features` runs
everything up to the flattened pooled vector (512 / 2048 / 1280 wide at width 1), `head` is
torchvision's final Linear with `num_classes` outputs. The first convolution is always rebuilt
for the input's channel count (so 1-channel images work) and He-initialised like the rest.

ResNets (`resnet18`, `resnet50`):
- `cifar_stem: true` replaces the 7x7 stride-2 conv + 3x3 max-pool with one 3x3 stride-1 conv
  and no pool (the usual CIFAR/SVHN adaptation, e.g. 32x32 -> 4x4 before the pool). The default
  `false` is torchvision's network unchanged; papers 002/003 do not say which stem they used.
- `width` scales the stem and every stage's `planes` (64/128/256/512; for ResNet-50 this
  scales the bottleneck's inner width and its 4x expansion alike), rounded, at least 1.
  At width 1 the counts are torchvision's: 10 classes, ImageNet stem: ResNet-18 11,181,642,
  ResNet-50 23,528,522; the CIFAR stem has 7,680 fewer.
- `blurpool: true` blurs the input of each strided convolution (FFCV's ImageNet ResNet-18, paper 003;
  kdrun.models.blurpool). No parameters are added.

MobileNet-v2 (`mobilenet_v2`):
- `width` is torchvision's `width_mult` (channels rounded to multiples of 8; the last 1x1 conv
  keeps 1280 channels below width 1, as in the paper). 10 classes, width 1: 2,236,682.
- `cifar_stride: true` makes the stem conv stride 1 and the second stage (24 channels)
  stride 1, so the network downsamples 8x instead of 32x (32x32 -> 4x4). Paper 000 trains
  "MobileNet-v2-1.0" on CIFAR without saying how it was adapted; the default `false` is
  torchvision's network.
- `dropout` (torchvision's 0.2) sits before the head, i.e. at the end of `features`; it is
  inactive in eval mode, so feature metrics are unaffected.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import MobileNetV2, ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from kdrun.models.blurpool import add_blurpool
from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import (dropout_probability, flag, image_input, init_conv_like_torchvision, scaled,
                                  width_multiplier)


class _WidthScaledResNet(ResNet):
    """torchvision's ResNet with every stage's `planes` (and the stem feeding them) times `width`."""

    def __init__(self, block, layers, width: float, **kwargs):
        self._width, self._stem_scaled = width, False
        super().__init__(block, layers, **kwargs)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if not self._stem_scaled:  # the first stage's input is the stem's output
            self.inplanes, self._stem_scaled = scaled(self.inplanes, self._width), True
        return super()._make_layer(block, scaled(planes, self._width), blocks, stride, dilate)


def _resnet(model: str, block, layers, input_shape, num_classes: int, cifar_stem: bool, width: float,
            blurpool: bool) -> ZooModel:
    channels = image_input(model, input_shape)[0]
    cifar_stem = flag(model, "cifar_stem", cifar_stem)
    blurpool = flag(model, "blurpool", blurpool)
    width = width_multiplier(model, width)
    net = _WidthScaledResNet(block, layers, width, num_classes=num_classes)
    stem_width = scaled(64, width)
    if cifar_stem:
        conv1, maxpool = nn.Conv2d(channels, stem_width, 3, stride=1, padding=1, bias=False), nn.Identity()
    else:
        conv1, maxpool = nn.Conv2d(channels, stem_width, 7, stride=2, padding=3, bias=False), net.maxpool
    stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=nn.BatchNorm2d(stem_width)))
    init_conv_like_torchvision(stem)
    features = nn.Sequential(OrderedDict(
        conv1=stem.conv1, bn1=stem.bn1, relu=net.relu, maxpool=maxpool,
        layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4,
        avgpool=net.avgpool, flatten=nn.Flatten(),
    ))
    head = net.fc if width == 1.0 else nn.Linear(scaled(512, width) * block.expansion, num_classes)
    if blurpool:
        add_blurpool(features)
    return ZooModel(features, head)


@register_model("resnet18")
def resnet18(input_shape, num_classes: int, cifar_stem: bool = False, width: float = 1.0,
             blurpool: bool = False) -> ZooModel:
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], input_shape, num_classes, cifar_stem, width, blurpool)


@register_model("resnet50")
def resnet50(input_shape, num_classes: int, cifar_stem: bool = False, width: float = 1.0,
             blurpool: bool = False) -> ZooModel:
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], input_shape, num_classes, cifar_stem, width, blurpool)


# torchvision's default MobileNet-v2 stages: expansion t, channels c, repeats n, stride s.
MOBILENET_V2_STAGES = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                       [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


@register_model("mobilenet_v2")
def mobilenet_v2(input_shape, num_classes: int, width: float = 1.0, cifar_stride: bool = False,
                 dropout: float = 0.2) -> ZooModel:
    model = "mobilenet_v2"
    channels = image_input(model, input_shape)[0]
    width = width_multiplier(model, width)
    cifar_stride = flag(model, "cifar_stride", cifar_stride)
    dropout = dropout_probability(model, dropout)
    stages = [list(stage) for stage in MOBILENET_V2_STAGES]
    if cifar_stride:
        stages[1][3] = 1
    net = MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=stages, dropout=dropout)
    old = net.features[0][0]
    net.features[0][0] = nn.Conv2d(channels, old.out_channels, 3, stride=1 if cifar_stride else 2,
                                   padding=1, bias=False)
    init_conv_like_torchvision(net.features[0][0])
    dropout_layer, head = net.classifier
    features = nn.Sequential(OrderedDict(
        body=net.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), dropout=dropout_layer,
    ))
    return ZooModel(features, head)
