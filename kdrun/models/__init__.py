"""One model zoo: any architecture can be the teacher or the student (`build_model`, kdrun.models.registry).

The architectures register themselves when their module is imported; torchvision's families are
registered lazily, so torchvision loads only when one of them is built.
"""

from kdrun.models import cnn, gpt, linear, mlp, preact_resnet, resnet_cifar, vgg, vit  # noqa: F401  (register themselves)
from kdrun.models.registry import MODELS, ZooModel, build_model, count_parameters, register_model

MODELS.register_lazy(("resnet18", "resnet50", "mobilenet_v2"), "kdrun.models.torchvision_models")
MODELS.register_lazy(("hf_classifier", "hf_t5_classifier"), "kdrun.models.hf_text")  # transformers

__all__ = ["MODELS", "ZooModel", "build_model", "count_parameters", "register_model"]
