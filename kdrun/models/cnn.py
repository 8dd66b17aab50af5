"""Paper 002's "vanilla CNN" (appendix A.1.2).

Four blocks of 3x3 conv (stride 1, padding 1) -> optional BatchNorm -> ReLU; blocks 2-4 end
in a 2x2 max-pool; a global pool and a linear head follow. Channels (20, 40, 60, 160) scaled
by `width`. With 3-channel input and 10 classes it has 117,630 parameters, 118,190 with
BatchNorm (the paper says "150K"; its channel list and "doubles at each block" disagree,
so the channels are a knob).
"""

from __future__ import annotations

from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import flag, image_input, one_of, option_key, scaled, whole, width_multiplier
from kdrun.config.checks import check_list


@register_model("cnn")
def vanilla_cnn(input_shape, num_classes: int, width: float = 1.0,
                channels=(20, 40, 60, 160), batchnorm: bool = True, final_pool: str = "max") -> ZooModel:
    in_channels = image_input("cnn", input_shape)[0]
    one_of("cnn", "final_pool", final_pool, ("max", "avg"))
    width = width_multiplier("cnn", width)
    batchnorm = flag("cnn", "batchnorm", batchnorm)
    channels = check_list(channels, option_key("channels"), meaning="cnn: the channels of each conv block")
    if not channels:
        raise ConfigError(f"{option_key('channels')}=[] has no block; allowed: a list of whole numbers >= 1 (cnn)")
    for index, base in enumerate(channels):
        whole("cnn", f"channels[{index}]", base, meaning="the channels of a conv block")
    layers: list[nn.Module] = []
    for block, base in enumerate(channels):
        out_channels = scaled(base, width)
        layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        if block > 0:
            # ceil_mode keeps small inputs (e.g. 8x8 digits) from pooling down to nothing
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        in_channels = out_channels
    pool = nn.AdaptiveMaxPool2d(1) if final_pool == "max" else nn.AdaptiveAvgPool2d(1)
    layers += [pool, nn.Flatten()]
    return ZooModel(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))
