"""Pre-activation CIFAR ResNets ("ResNet-v2", He et al. 2016b, "Identity Mappings"): paper 000's models.

Same 6n+2 layout as `resnet_cifar` (16/32/64 channels x `width`), with units
BN-ReLU-conv-BN-ReLU-conv + shortcut, no activation after the addition, a bare 3x3 stem conv,
and a final BN-ReLU before the global pool. Parameter counts for 10 classes (shortcut A):
preact_resnet20 269,722, -32 464,154, -56 853,018, -110 1,727,962 — exactly the
post-activation counts (the BatchNorms move: the stem loses one of 16 channels, the first unit
of stages 2-3 normalises its narrower input, and a final one of 64 channels is added).

Decisions (not fixed by paper 000, which only says "ResNet-v2"):
- `shortcut: A` (default) zero-pads the raw input as in `resnet_cifar`; `shortcut: B` is a 1x1
  projection without BatchNorm applied to the pre-activated input, as in He et al.'s code
  (2,560 parameters more at width 1).
- Basic (two 3x3 conv) units; the bottleneck units He et al. use for ResNet-164/1001 are not built.

Names: `preact_resnet20`, `preact_resnet32`, `preact_resnet56`, `preact_resnet110` and
`preact_resnet_cifar` with a `depth` option (6n+2).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdrun.models.resnet_cifar import conv3x3, make_shortcut, register_depth_presets


class PreActBlock(nn.Module):
    preactivation = True

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), conv3x3(in_channels, out_channels, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(out_channels), conv3x3(out_channels, out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, batchnorm=False)
        self.project_preactivated = isinstance(self.shortcut, nn.Conv2d)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out if self.project_preactivated else x)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


register_depth_presets("preact_resnet", (20, 32, 56, 110), PreActBlock)
