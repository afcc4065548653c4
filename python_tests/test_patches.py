"""Receptive fields of summary layers, measured by input gradients, against hand-computed ones."""

import torch
import torch.nn as nn

from summit_fast.patches import ReceptiveField, receptive_fields


def test_receptive_fields_of_a_conv_stack():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(2, 4, 3, padding=1))
    model.add_module("a", nn.Identity())
    model.add_module("conv2", nn.Conv2d(4, 4, 3, stride=2, padding=1))
    model.add_module("b", nn.Identity())
    model.add_module("conv3", nn.Conv2d(4, 3, 5, padding=2))
    model.add_module("c", nn.Identity())
    fields = receptive_fields(model.eval(), ["a", "b", "c"], (2, 16, 16))
    # a: 16x16, centre (8, 8), 3x3 around it. b: 8x8, centre (4, 4) reads a's rows 7..9, i.e.
    # input rows 6..10. c: 8x8, centre (4, 4) reads b's rows 2..6, i.e. a's rows 3..13, input 2..14.
    assert fields == {
        "a": ReceptiveField(8, 8, (7, 7, 10, 10), (1.0, 1.0), (16, 16)),
        "b": ReceptiveField(4, 4, (6, 6, 11, 11), (2.0, 2.0), (16, 16)),
        "c": ReceptiveField(4, 4, (2, 2, 15, 15), (2.0, 2.0), (16, 16)),
    }
    assert fields["b"].box_at(0, 7) == (0, 12, 3, 16)  # clipped to the input
