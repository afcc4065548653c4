"""Helpers shared by the torchvision-layout models (MobileNetV2, ResNet, VGG)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn


def init_weights(model: nn.Module) -> None:
    """Random initialisation that keeps activations at a steady scale through depth: He-normal
    (fan_out) conv weights, BatchNorm scale 1, Linear weights N(0, 0.01), zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
        if isinstance(getattr(module, "bias", None), torch.Tensor):
            nn.init.zeros_(module.bias)


def load_weights(model: nn.Module, state_dict: str | os.PathLike | Mapping | None) -> nn.Module:
    """Load ``state_dict`` (a path to a ``torch.save``'d state dict, or the mapping itself; keys
    checked strictly) into ``model``; ``None`` keeps the random weights. Returns it in eval mode."""
    if state_dict is not None:
        if not isinstance(state_dict, Mapping):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
    return model.eval()
