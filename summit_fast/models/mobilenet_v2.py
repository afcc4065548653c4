"""MobileNetV2 (Sandler et al., 2018) with torchvision's module names, so torchvision's state
dicts load as they are, and an option for TensorFlow's "SAME" padding, which weights converted
from TensorFlow need to reach their accuracy.

Layout (torchvision's): ``features.0`` stem conv (3 -> 32, stride 2); ``features.1`` ..
``features.17`` inverted residual blocks; ``features.18`` a 1x1 conv to 1280 channels;
``classifier.1`` the linear layer after global average pooling. A block's ``conv`` holds
[expand 1x1 conv-BN-ReLU6 (absent in ``features.1``), depthwise 3x3 conv-BN-ReLU6, project 1x1
conv, BN], and blocks with stride 1 and equal widths add their input (the residual).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..images import TF_SLIM_IMAGENET, TORCHVISION_IMAGENET
from ._common import init_weights, load_weights

# (expansion t, output channels c, blocks n, first stride s) per stage, as in the paper's Table 2.
_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def tf_same_padding(size: tuple[int, int], kernel_size: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """TensorFlow's "SAME" padding of an input of ``size`` (H, W) as (left, right, top, bottom):
    the output has ceil(size / stride) positions and the odd extra pixel goes right/bottom."""
    pads = []
    for n, k, s, d in zip(size, kernel_size, stride, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d, ReLU6 (torchvision's ``Conv2dNormActivation``: keys ``0.*``, ``1.*``).

    With ``tf_padding`` the input is zero-padded TensorFlow-"SAME" style before the conv, whose
    own padding is 0: the conv then receives the padded tensor as its input, so influence
    (SPEC.md B) sees exactly what the conv sees, and discovery follows the channel-preserving pad.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 tf_padding: bool = False):
        padding = 0 if tf_padding else (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6())
        self.tf_padding = tf_padding and kernel_size > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding:
            conv = self[0]
            x = F.pad(x, tf_same_padding(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """Expand (1x1, ``expansion`` x wider) -> depthwise 3x3 -> project (1x1, linear); plus the
    input when the shape is unchanged."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, tf_padding: bool = False):
        super().__init__()
        hidden = c_in * expansion
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [] if expansion == 1 else [ConvBNReLU6(c_in, hidden, 1)]
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, tf_padding=tf_padding),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 (see the module docstring).

    Summary layers: every module of ``features``: the stem ``features.0`` (32 channels), the 17
    inverted residual blocks ``features.1`` .. ``features.17`` (16, 24, 24, 32, 32, 32, 64, 64,
    64, 64, 96, 96, 96, 160, 160, 160, 320 channels) and the final 1x1 conv ``features.18``
    (1280 channels, what the classifier pools: the most class-specific layer, like InceptionV1's
    mixed5b in Summit). Every block is one because a residual block's output is the sum of its
    input and its conv branch: with each block a summary layer, every residual is an identity
    from one summary layer to the next, and the expand -> depthwise -> project chain in between
    is a chain of conv edges through two intermediates (skipping blocks would leave sums of
    several blocks between summary layers). The stem is one so that the first block's
    depthwise conv is an edge too, rather than the graph's input node.

    ``PREPROCESS`` is torchvision's convention, or TensorFlow-slim's with ``tf_padding=True``
    (weights from TensorFlow).
    """

    SUMMARY_LAYERS = [f"features.{i}" for i in range(19)]
    INPUT_SHAPE = (3, 224, 224)

    def __init__(self, num_classes: int = 1000, tf_padding: bool = False):
        super().__init__()
        self.tf_padding = tf_padding
        self.PREPROCESS = TF_SLIM_IMAGENET if tf_padding else TORCHVISION_IMAGENET
        blocks: list[nn.Module] = [ConvBNReLU6(3, 32, 3, 2, tf_padding=tf_padding)]
        c_in = 32
        for expansion, c_out, n, stride in _STAGES:
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expansion, tf_padding))
                c_in = c_out
        blocks.append(ConvBNReLU6(c_in, 1280, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def mobilenet_v2(state_dict: str | os.PathLike | Mapping | None = None, *, tf_padding: bool = False,
                 num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 1.0, random-initialised unless ``state_dict`` (a path to a ``torch.save``'d
    state dict with torchvision's keys, or the dict itself) is given; returned in eval mode.

    ``tf_padding=True`` pads the 3x3 convs TensorFlow-style ("SAME": asymmetric at stride 2), as weights
    converted from TensorFlow/TFLite expect, and sets ``PREPROCESS`` to TF-slim's convention.
    """
    return load_weights(MobileNetV2(num_classes, tf_padding), state_dict)
