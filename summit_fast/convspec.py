"""The geometry of a Conv2d as the influence ops need it (SPEC.md B)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvSpec:
    """Stride, explicit per-side padding, dilation, groups and padding mode of a 2-D conv.

    ``pad`` is ``(left, right, top, bottom)`` as for ``torch.nn.functional.pad``, so that
    ``padding="same"`` (possibly asymmetric) is represented exactly.
    """

    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"

    def __post_init__(self):
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(f"ConvSpec.padding_mode must be one of {_PADDING_MODES}, got {self.padding_mode!r}")
        if min(self.stride) < 1 or min(self.dilation) < 1 or self.groups < 1 or min(self.pad) < 0:
            raise ValueError(f"invalid ConvSpec {self!r}")

    @classmethod
    def from_module(cls, conv: nn.Conv2d) -> "ConvSpec":
        """Read the geometry of ``conv``, resolving string paddings ("same", "valid")."""
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        if isinstance(conv.padding, str):
            if conv.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same": torch puts the odd extra pixel on the right/bottom
                th, tw = dh * (kh - 1), dw * (kw - 1)
                pad = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        else:
            ph, pw = conv.padding
            pad = (pw, pw, ph, ph)
        return cls(tuple(conv.stride), pad, (dh, dw), conv.groups, conv.padding_mode)

    def output_size(self, h: int, w: int, kh: int, kw: int, spatial_stride: int = 1) -> tuple[int, int]:
        """Size of the sampled output grid: the conv's grid, every ``spatial_stride``-th row and column."""
        left, right, top, bottom = self.pad
        nh = h + top + bottom - self.dilation[0] * (kh - 1) - 1
        nw = w + left + right - self.dilation[1] * (kw - 1) - 1
        if nh < 0 or nw < 0:
            raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel's dilated extent with padding {self.pad}")
        return nh // (self.stride[0] * spatial_stride) + 1, nw // (self.stride[1] * spatial_stride) + 1

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ConvSpec":
        return cls(tuple(d["stride"]), tuple(d["pad"]), tuple(d["dilation"]), int(d["groups"]), d["padding_mode"])
