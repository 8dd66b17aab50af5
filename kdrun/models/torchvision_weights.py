"""torchvision's pretrained weights (a local `resnet50-....pth`, `resnet18-....pth`, `mobilenet_v2-....pth`) in
the zoo's models: the same tensors under the zoo's names, so an ImageNet teacher needs no download
(`teacher.checkpoint=/path/resnet50-11ad3fa6.pth`, the IMAGENET1K_V2 file paper 003's numbers match).

The zoo wraps torchvision's module trees as `ZooModel(features, head)`: a ResNet's `conv1`, `bn1`, `layer1..4`
sit under `features.` and its `fc` is `head`; MobileNet-v2's `features` are `features.body` and its
`classifier.1` is `head`. BlurPool adds a `.conv` level to the blurred convolutions (kdrun.models.blurpool).
"""

from __future__ import annotations

from typing import Iterable

RENAMES = {  # a torchvision key's first part -> its place in the zoo model
    "fc": "head", "classifier.1": "head", "features": "features.body",
}


def _candidates(key: str) -> list[str]:
    for prefix, target in RENAMES.items():
        if key.startswith(prefix + "."):
            return [target + key[len(prefix):]]
    return [f"features.{key}"]


def looks_like_torchvision(state: dict, zoo_keys: Iterable[str]) -> bool:
    """Whether a state dict holds torchvision's names (a ResNet's `fc.weight`, MobileNet's `classifier.1.weight`)
    rather than the zoo's."""
    zoo_keys = set(zoo_keys)
    return not set(state) & zoo_keys and ("fc.weight" in state or "classifier.1.weight" in state)


def zoo_state_dict(state: dict, zoo_keys: Iterable[str]) -> dict:
    """torchvision's state dict under the zoo model's names; a key with no place there is kept as it is, so
    load_state_dict names it."""
    zoo_keys = set(zoo_keys)
    mapped = {}
    for key, value in state.items():
        place = key
        for candidate in _candidates(key):
            blurred = candidate.rsplit(".", 1)
            options = [candidate, f"{blurred[0]}.conv.{blurred[1]}"] if len(blurred) == 2 else [candidate]
            place = next((option for option in options if option in zoo_keys), place)
        mapped[place] = value
    return mapped
