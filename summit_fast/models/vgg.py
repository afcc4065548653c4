"""VGG-16 (Simonyan and Zisserman, 2015; configuration D, no BatchNorm) with torchvision's module
names, so torchvision's state dicts load as they are.

Layout (torchvision's): ``features`` is a Sequential of 3x3 convs (padding 1) each followed by a
ReLU, with a 2x2 max pool after each of the five stages; then a 7x7 adaptive average pool and
``classifier`` (4096, 4096, ``num_classes``; ReLU and dropout in between).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..images import TORCHVISION_IMAGENET
from ._common import init_weights, load_weights

# Output channels of the convs, "M" for a max pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG of ``config`` (conv widths and "M" pools; see the module docstring).

    Summary layers (``SUMMARY_LAYERS``, set per instance from ``config``): the ReLU after every
    conv (VGG-16: 13 layers, ``features.1``, ``features.3``, ``features.6``, ...). Then every conv
    is a direct edge between consecutive summary layers, so the graph's edges are exact counts,
    not widest paths through intermediates, and no layer of the plain chain is hidden.
    """

    INPUT_SHAPE = (3, 224, 224)
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self, config: list, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        self.SUMMARY_LAYERS = []
        c_in = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU()]
            self.SUMMARY_LAYERS.append(f"features.{len(layers) - 1}")
            c_in = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 7).flatten(1)
        return self.classifier(x)


def vgg16(state_dict: str | os.PathLike | Mapping | None = None, *, num_classes: int = 1000) -> VGG:
    """VGG-16, random-initialised unless ``state_dict`` (a path to a ``torch.save``'d state dict
    with torchvision's keys, or the dict itself) is given; returned in eval mode."""
    return load_weights(VGG(_VGG16, num_classes), state_dict)
