"""ResNet-18 and ResNet-50 (He et al., 2016) with torchvision's module names, so torchvision's
state dicts load as they are.

Layout (torchvision's): stem ``conv1`` (7x7, stride 2), ``bn1``, ReLU, ``maxpool`` (3x3, stride
2); stages ``layer1`` .. ``layer4`` of residual blocks (``layerS.B``); global average pooling and
``fc``. A block computes ReLU(branch(x) + shortcut(x)), where the shortcut is the identity or,
where the shape changes, ``downsample`` (1x1 conv with the block's stride, BN). ResNet-50's
bottleneck blocks put the stride on the 3x3 conv (torchvision's "v1.5").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..images import TORCHVISION_IMAGENET
from ._common import init_weights, load_weights


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut where a block changes the shape; None where the identity fits."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, ReLU (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + shortcut)


class Bottleneck(nn.Module):
    """1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU (with the stride), 1x1 conv-BN to 4x ``planes``, plus
    the shortcut, ReLU (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = _downsample(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet(nn.Module):
    """A ResNet of ``block`` with ``blocks_per_stage`` blocks in the four stages (see the module docstring).

    Summary layers (``SUMMARY_LAYERS``, set per instance since they depend on the depth): the stem
    output ``maxpool`` (64 channels), then every block output ``layer1.0`` .. ``layer4.N``. Every
    block is one because a block's output is the sum of its shortcut and its conv branch: with
    each block a summary layer, every shortcut goes from one summary layer to the next (an
    identity, or the ``downsample`` conv as a direct conv edge) and the branch's two or three
    convs form a chain through intermediates. The stem is one too, so that ``layer1.0``'s
    shortcut also starts at a summary layer rather than at the stem conv's output.
    """

    INPUT_SHAPE = (3, 224, 224)
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks_per_stage: list[int],
                 num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        self.SUMMARY_LAYERS = ["maxpool"]
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
            blocks = []
            for i in range(n):
                blocks.append(block(c_in, planes, 2 if stage > 1 and i == 0 else 1))
                c_in = planes * block.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            self.SUMMARY_LAYERS += [f"layer{stage}.{i}" for i in range(n)]
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet18(state_dict: str | os.PathLike | Mapping | None = None, *, num_classes: int = 1000) -> ResNet:
    """ResNet-18 (basic blocks, 2-2-2-2), random-initialised unless ``state_dict`` (a path to a
    ``torch.save``'d state dict with torchvision's keys, or the dict itself) is given; eval mode."""
    return load_weights(ResNet(BasicBlock, [2, 2, 2, 2], num_classes), state_dict)


def resnet50(state_dict: str | os.PathLike | Mapping | None = None, *, num_classes: int = 1000) -> ResNet:
    """ResNet-50 (bottleneck blocks, 3-4-6-3), random-initialised unless ``state_dict`` (a path to a
    ``torch.save``'d state dict with torchvision's keys, or the dict itself) is given; eval mode."""
    return load_weights(ResNet(Bottleneck, [3, 4, 6, 3], num_classes), state_dict)
