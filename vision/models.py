"""Model registry: torchvision classifiers by name, CIFAR-style ResNets, ReActNet.

``build_model(name, num_classes)`` is the one entry point. Every model it returns
ends in a single ``nn.Linear`` classifier (``get_classifier(model)``), so the
penultimate features are the classifier's input; ``penultimate_hook`` captures
them without changing the model or its state-dict keys (torchvision state dicts
stay loadable).

Names
-----
* torchvision: every classification model in ``torchvision.models.list_models``
  (``resnet18``, ``resnet50``, ``resnet101``, ``mobilenet_v2``, ``densenet121``,
  ``resnext50_32x4d``, ``wide_resnet50_2``, ...), always built with
  ``weights=None`` (nothing is downloaded). ``small_input=True`` gives the
  ResNet family a CIFAR stem (3x3 stride-1 first conv, no max-pool).
* CIFAR ResNets (He et al. 2016, the CRD/RepDistiller definitions):
  ``resnet8``, ``resnet14``, ``resnet20``, ``resnet32``, ``resnet44``,
  ``resnet56``, ``resnet110`` (widths 16/32/64) and ``resnet8x4``,
  ``resnet32x4`` (widths 64/128/256).
* ``reactnet18``: binary ReActNet-style ResNet-18 (see ``lskd_vision.binary``).
* ``mlp``: a two-layer perceptron without normalisation, for smoke tests.
* ``timm:NAME``: any model of the optional timm package (``pip install -e .[timm]``),
  built with ``pretrained=False`` (nothing is downloaded).

``input_config(name)`` gives the input normalisation and resolution a
torchvision or timm model's published weights expect (torchvision's weights
``transforms`` meta, timm's ``pretrained_cfg``): the teacher's view of a batch and
the evaluation transform of ``lskd-stability --arch``.
"""

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torchvision

from .binary import reactnet18

LSKD_TEACHER = "lskd"  # --teacher-arch value of an lskd_vision checkpoint


class UnknownArchitectureError(ValueError):
    pass


TIMM_PREFIX = "timm:"
TIMM_EXTRA = "pip install -e '.[timm]' (the timm extra)"


def _timm(name: str):
    """The timm module, or a one-line refusal naming the extra."""
    try:
        import timm
    except ImportError:
        raise UnknownArchitectureError(
            f"{name!r} needs the optional timm package, which is not installed: {TIMM_EXTRA}"
        ) from None
    return timm


# ---------------------------------------------------------------- CIFAR ResNets
class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: depth = 6n + 2, three stages, global average pool."""

    def __init__(self, depth: int, widths: List[int], num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        stages = []
        for i, planes in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                blocks.append(_BasicBlock(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x):
        return self.fc(self.forward_features(x))


class MLP(nn.Module):
    def __init__(self, num_classes: int, in_features: int, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


_CIFAR = {
    "resnet8": (8, [16, 16, 32, 64]),
    "resnet14": (14, [16, 16, 32, 64]),
    "resnet20": (20, [16, 16, 32, 64]),
    "resnet32": (32, [16, 16, 32, 64]),
    "resnet44": (44, [16, 16, 32, 64]),
    "resnet56": (56, [16, 16, 32, 64]),
    "resnet110": (110, [16, 16, 32, 64]),
    "resnet8x4": (8, [32, 64, 128, 256]),
    "resnet32x4": (32, [32, 64, 128, 256]),
}


def _torchvision_names() -> List[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> List[str]:
    return sorted(set(_CIFAR) | {"reactnet18", "mlp"} | set(_torchvision_names()))


def check_arch(name: str) -> None:
    """Raise UnknownArchitectureError (naming the close matches) for an unknown name."""
    if name.startswith(TIMM_PREFIX):
        timm = _timm(name)
        bare = name[len(TIMM_PREFIX):]
        if timm.is_model(bare):
            return
        import difflib

        close = difflib.get_close_matches(bare, timm.list_models(), n=5)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise UnknownArchitectureError(f"unknown timm model {bare!r}.{hint} See timm.list_models().")
    if name in _CIFAR or name in ("reactnet18", "mlp") or name in _torchvision_names():
        return
    import difflib

    close = difflib.get_close_matches(name, list_models(), n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownArchitectureError(
        f"unknown architecture {name!r}.{hint} Known: CIFAR ResNets {', '.join(_CIFAR)}, "
        f"reactnet18, mlp, and torchvision's classification models (resnet18, resnet50, "
        f"resnet101, mobilenet_v2, ...; see lskd_vision.models.list_models())."
    )


def _small_stem(model: nn.Module, name: str) -> None:
    """CIFAR stem for torchvision ResNets: 3x3/1 conv, no max-pool."""
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        raise ValueError(f"--small-input-stem is only implemented for the ResNet family, not {name!r}")
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, out, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def build_model(
    name: str,
    num_classes: int,
    small_input: bool = False,
    binary_weights: bool = True,
    img_size: int = 32,
) -> nn.Module:
    """Build an untrained classifier.

    ``binary_weights`` only concerns ``reactnet18``; ``img_size`` only ``mlp``.
    """
    check_arch(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if name in _CIFAR:
        depth, widths = _CIFAR[name]
        return CifarResNet(depth, widths, num_classes)
    if name == "reactnet18":
        return reactnet18(num_classes, small_input=small_input, binary_weights=binary_weights)
    if name == "mlp":
        return MLP(num_classes, 3 * img_size * img_size)
    if name.startswith(TIMM_PREFIX):
        if small_input:
            raise UnknownArchitectureError(f"--small-input-stem is not implemented for timm models ({name!r})")
        return _timm(name).create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if small_input:
        _small_stem(model, name)
    return model


def model_source(name: str) -> str:
    """'timm', 'torchvision' or 'lskd' (the CIFAR ResNets, reactnet18, mlp)."""
    if name.startswith(TIMM_PREFIX):
        return "timm"
    return "lskd" if name in _CIFAR or name in ("reactnet18", "mlp") else "torchvision"


def input_config(name: str, model: Optional[nn.Module] = None) -> Dict:
    """Input normalisation and resolution of a torchvision or timm model's published weights.

    torchvision: the ``transforms`` of the architecture's default weights (for
    example ResNet-50's IMAGENET1K_V2: resize 232, crop 224); timm: the model's
    ``pretrained_cfg`` as ``timm.data.resolve_model_data_config`` resolves it.
    Returns ``mean``, ``std``, ``input_size`` (crop), ``resize_size``,
    ``interpolation`` and ``source`` (where the numbers come from).
    """
    if name.startswith(TIMM_PREFIX):
        _timm(name)
        from timm.data import resolve_model_data_config

        if model is None:
            model = build_model(name, 2)
        cfg = resolve_model_data_config(model)
        size = int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        return {
            "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "input_size": size, "resize_size": int(size / crop_pct),
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "source": f"timm pretrained_cfg of {name[len(TIMM_PREFIX):]}",
        }
    if model_source(name) != "torchvision":
        raise ValueError(f"{name!r} has no published weights configuration (not a torchvision or timm model)")
    weights = torchvision.models.get_model_weights(name).DEFAULT
    tf = weights.transforms()
    return {
        "mean": [float(v) for v in tf.mean], "std": [float(v) for v in tf.std],
        "input_size": int(tf.crop_size[0]), "resize_size": int(tf.resize_size[0]),
        "interpolation": tf.interpolation.value,
        "source": f"torchvision {weights} transforms",
    }


def classifier_name(model: nn.Module) -> str:
    """The module name of ``get_classifier(model)`` (its state-dict prefix)."""
    layer = get_classifier(model)
    for n, m in getattr(model, "module", model).named_modules():
        if m is layer:
            return n
    raise ValueError("classifier not found among the model's modules")


def get_classifier(model: nn.Module) -> nn.Linear:
    """The final linear layer (its input is the penultimate representation)."""
    model = getattr(model, "module", model)  # DDP
    for attr in ("fc", "classifier", "head", "heads"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Linear):
            return m
        if isinstance(m, nn.Module):
            linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
            if linears:
                return linears[-1]
    linears = [x for x in model.modules() if isinstance(x, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


class penultimate_hook:
    """Context manager capturing the classifier's input on every forward.

    >>> with penultimate_hook(model) as feats:
    ...     logits = model(x)
    ...     f = feats.value   # (N, D) penultimate features of the last forward
    """

    def __init__(self, model: nn.Module):
        self.layer = get_classifier(model)
        self.value: Optional[torch.Tensor] = None
        self._handle = None

    def _hook(self, module, inputs):
        self.value = inputs[0].detach()

    def __enter__(self):
        self._handle = self.layer.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


__all__ = [
    "UnknownArchitectureError",
    "CifarResNet",
    "build_model",
    "check_arch",
    "classifier_name",
    "get_classifier",
    "input_config",
    "list_models",
    "model_source",
    "penultimate_hook",
]
