"""ReActNet-style binary network pieces (Liu et al., ECCV 2020) and a binary ResNet-18.

Definitions (c indexes channels; every shift is a learnable per-channel vector):

* ``binary_sign(x) = +1 if x >= 0 else -1`` (zero maps to +1, so outputs are
  strictly binary).
* Activation straight-through estimator (Bi-Real Net's piecewise polynomial):
  forward ``binary_sign(x)``; backward ``dF/dx = 2 + 2x`` on ``[-1, 0)``,
  ``2 - 2x`` on ``[0, 1)`` and ``0`` elsewhere (the derivative of
  ``-1, x^2 + 2x, -x^2 + 2x, 1`` on the four pieces).
* ``RSign(x)_c = binary_sign(x_c - alpha_c)`` (alpha learnable, gets gradient
  through the STE).
* ``RPReLU(x)_c = PReLU_{beta_c}(x_c - gamma_c) + zeta_c``.
* Binary weights: ``W_b = mean(|W_o|) * binary_sign(W)`` per output channel o,
  with the scale treated as a constant in backward and the clipped identity as the
  weight STE: ``dL/dW = dL/dW_b * 1{|W| <= 1}`` (ReActNet's code).

The ResNet-18 follows ReActNet's ResNet variant (Bi-Real Net block): each 3x3
convolution is ``RSign -> binary conv -> BN``, wrapped by its own real-valued
shortcut (average-pool + real 1x1 conv + BN where the shape changes), then
RPReLU. The stem convolution and the classifier stay real-valued.

Two-step schedule: step 1 trains with binary activations and real weights
(``set_binary_weights(model, False)``), step 2 continues from step 1's weights
with binary weights as well (``True``). The state-dict keys are the same in both
steps: the latent real-valued weights are what is stored.
"""

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class SignSTE(torch.autograd.Function):
    """binary_sign forward, piecewise-polynomial derivative backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad = torch.zeros_like(x)
        neg = (x >= -1) & (x < 0)
        pos = (x >= 0) & (x < 1)
        grad = torch.where(neg, 2 + 2 * x, grad)
        grad = torch.where(pos, 2 - 2 * x, grad)
        return grad_out * grad


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


class LearnableBias(nn.Module):
    """Adds a learnable per-channel shift (NCHW)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x + self.bias


class RSign(nn.Module):
    """ReAct-Sign: binary_sign(x - alpha) with a learnable per-channel threshold alpha."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return sign_ste(x - self.alpha)


class RPReLU(nn.Module):
    """ReAct-PReLU: PReLU_beta(x - gamma) + zeta, all three per channel."""

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.full((channels,), init_slope))
        self.zeta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return F.prelu(x - self.gamma, self.beta) + self.zeta


class BinaryConv2d(nn.Conv2d):
    """Conv2d whose weights are ``mean|W_o| * sign(W)`` when ``binary_weights`` is set."""

    def __init__(self, *args, binary_weights: bool = True, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.binary_weights = binary_weights

    def binarized_weight(self) -> torch.Tensor:
        w = self.weight
        scale = w.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
        clipped = torch.clamp(w, -1.0, 1.0)
        # value: scale * sign(W); gradient: that of clamp(W, -1, 1)
        return (scale * binary_sign(w)).detach() - clipped.detach() + clipped

    def forward(self, x):
        w = self.binarized_weight() if self.binary_weights else self.weight
        return self._conv_forward(x, w, self.bias)

    def extra_repr(self):
        return super().extra_repr() + f", binary_weights={self.binary_weights}"


class BinaryBlock(nn.Module):
    """RSign -> binary 3x3 conv -> BN, plus a real shortcut, then RPReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, binary_weights: bool = True):
        super().__init__()
        self.rsign = RSign(inplanes)
        self.conv = BinaryConv2d(inplanes, planes, 3, stride, 1, binary_weights=binary_weights)
        self.bn = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(inplanes, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.act = RPReLU(planes)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.rsign(x))) + self.shortcut(x))


class ReActResNet18(nn.Module):
    def __init__(self, num_classes: int, small_input: bool = False, binary_weights: bool = True):
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        blocks: List[nn.Module] = []
        inplanes = 64
        for i, planes in enumerate([64, 128, 256, 512]):
            # a ResNet-18 stage is two basic blocks = four 3x3 convolutions
            for j in range(4):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BinaryBlock(inplanes, planes, stride, binary_weights))
                inplanes = planes
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def reactnet18(num_classes: int, small_input: bool = False, binary_weights: bool = True) -> ReActResNet18:
    return ReActResNet18(num_classes, small_input=small_input, binary_weights=binary_weights)


def set_binary_weights(model: nn.Module, enabled: bool) -> int:
    """Switch every BinaryConv2d to binary (step 2) or real (step 1) weights; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.binary_weights = enabled
            n += 1
    return n


__all__ = [
    "binary_sign",
    "SignSTE",
    "sign_ste",
    "LearnableBias",
    "RSign",
    "RPReLU",
    "BinaryConv2d",
    "BinaryBlock",
    "ReActResNet18",
    "reactnet18",
    "set_binary_weights",
]
