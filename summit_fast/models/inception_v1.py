"""InceptionV1 with the topology, module names and channel counts of Lucid/Lucent's
"inception5h" (the model Summit used), so a Lucent state dict loads as it is.

Summary layers are the nine concatenations mixed3a..mixed5b (256, 480, 508, 512, 512, 528, 832,
832, 1024 channels); the classifier is 1008-way and the output is softmax probabilities, as in
Lucent. Input: RGB in Lucent's range (pixel values 0..255 minus 117), 224x224; ``PREPROCESS``
takes the central square of 87.5% of the shorter side, as torchvision's models do.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..images import Preprocess

SUMMARY_LAYERS = ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
NUM_CLASSES = 1008

# name: (in, 1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce)
_MIXED = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# Stride-2 max pools (TensorFlow "SAME" padding) come before these mixed layers.
_POOL_BEFORE = {"mixed4a": "maxpool4", "mixed5a": "maxpool10"}
# Lucid/Lucent's value range: x = pixel - 117 (0..255 scale, no division).
LUCENT_INCEPTION = Preprocess(224, 0.875, True, (117.0, 117.0, 117.0), (1.0, 1.0, 1.0))


class Concat(nn.Module):
    """Channel concatenation as a module, so that a mixed layer can be hooked by name."""

    def forward(self, tensors):
        return torch.cat(tensors, dim=1)


def _max_pool_same(x: torch.Tensor, stride: int) -> torch.Tensor:
    # TensorFlow "SAME" 3x3 max pool: pad with -inf (right/bottom only for stride 2).
    pad = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)
    return F.max_pool2d(F.pad(x, pad, value=float("-inf")), 3, stride)


class InceptionV1(nn.Module):
    """See the module docstring. ``SUMMARY_LAYERS`` is preset for :func:`summit_fast.aggregate`."""

    SUMMARY_LAYERS = SUMMARY_LAYERS
    INPUT_SHAPE = (3, 224, 224)
    PREPROCESS = LUCENT_INCEPTION

    def __init__(self):
        super().__init__()
        self.conv2d0_pre_relu_conv = nn.Conv2d(3, 64, 7, stride=2)
        self.conv2d1_pre_relu_conv = nn.Conv2d(64, 64, 1)
        self.conv2d2_pre_relu_conv = nn.Conv2d(64, 192, 3)
        for name, (c_in, c1, c3r, c3, c5r, c5, cp) in _MIXED.items():
            self.add_module(f"{name}_1x1_pre_relu_conv", nn.Conv2d(c_in, c1, 1))
            self.add_module(f"{name}_3x3_bottleneck_pre_relu_conv", nn.Conv2d(c_in, c3r, 1))
            self.add_module(f"{name}_5x5_bottleneck_pre_relu_conv", nn.Conv2d(c_in, c5r, 1))
            self.add_module(f"{name}_pool_reduce_pre_relu_conv", nn.Conv2d(c_in, cp, 1))
            self.add_module(f"{name}_3x3_pre_relu_conv", nn.Conv2d(c3r, c3, 3))
            self.add_module(f"{name}_5x5_pre_relu_conv", nn.Conv2d(c5r, c5, 5))
            for branch in ("1x1", "3x3_bottleneck", "5x5_bottleneck", "pool_reduce", "3x3", "5x5"):
                self.add_module(f"{name}_{branch}", nn.ReLU())
            self.add_module(name, Concat())
        self.softmax2_pre_activation_matmul = nn.Linear(1024, NUM_CLASSES)

    def _mixed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        def branch(conv: str, inp: torch.Tensor, pad: int = 0) -> torch.Tensor:
            if pad:
                inp = F.pad(inp, (pad, pad, pad, pad))
            return getattr(self, f"{name}_{conv}")(getattr(self, f"{name}_{conv}_pre_relu_conv")(inp))

        b1 = branch("1x1", x)
        b3 = branch("3x3", branch("3x3_bottleneck", x), pad=1)
        b5 = branch("5x5", branch("5x5_bottleneck", x), pad=2)
        bp = branch("pool_reduce", _max_pool_same(x, 1))
        return getattr(self, name)((b1, b3, b5, bp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2d0_pre_relu_conv(F.pad(x, (2, 3, 2, 3))))
        x = _max_pool_same(x, 2)
        x = F.local_response_norm(x, size=9, alpha=9.99999974738e-05, beta=0.5, k=1)
        x = F.relu(self.conv2d1_pre_relu_conv(x))
        x = F.relu(self.conv2d2_pre_relu_conv(F.pad(x, (1, 1, 1, 1))))
        x = F.local_response_norm(x, size=9, alpha=9.99999974738e-05, beta=0.5, k=1)
        x = _max_pool_same(x, 2)
        for name in SUMMARY_LAYERS:
            if name in _POOL_BEFORE:
                x = _max_pool_same(x, 2)
            x = self._mixed(name, x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # = Lucent's 7x7 average pool at 224 px
        return F.softmax(self.softmax2_pre_activation_matmul(x), dim=1)


def inception_v1(state_dict: str | os.PathLike | dict | None = None) -> InceptionV1:
    """InceptionV1 (Lucent "inception5h" layout), random-initialised unless ``state_dict`` (a
    path to a ``torch.save``'d state dict, or the dict itself) is given. Returned in eval mode."""
    model = InceptionV1()
    if state_dict is not None:
        if not isinstance(state_dict, dict):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
    return model.eval()
