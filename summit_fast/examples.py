"""Dataset examples: per channel of each summary layer, the N images with the highest channel
max, with the position of that max (Summit showed 10 per channel on hover).

The state per layer is four (C, N) tensors — ``value`` (float32, the channel max), ``image``
(int64 image id, -1 for an empty slot), ``y`` and ``x`` (int64, where the max is) — kept sorted
by value descending, ties by lower image id, so the state is the same whatever the batching.
"""

from __future__ import annotations

import torch

FIELDS = ("value", "image", "y", "x")


def empty_examples(channels: int, n: int, device="cpu") -> dict[str, torch.Tensor]:
    """The state of a layer with ``channels`` channels before any image."""
    return {"value": torch.full((channels, n), float("-inf"), dtype=torch.float32, device=device),
            "image": torch.full((channels, n), -1, dtype=torch.int64, device=device),
            "y": torch.full((channels, n), -1, dtype=torch.int64, device=device),
            "x": torch.full((channels, n), -1, dtype=torch.int64, device=device)}


def channel_max_positions(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) channel maxima (float32, exact) and the flat position h * W + w of each."""
    b, c, h, w = acts.shape
    return acts.reshape(b, c, h * w).float().max(dim=2)  # position of the first max on CPU


def batch_candidates(value: torch.Tensor, flat: torch.Tensor, width: int,
                     image_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's (C, B) candidates from :func:`channel_max_positions` of a layer ``width``
    pixels wide: each image's channel max, its position and the image id."""
    b, c = value.shape
    return {"value": value.t(), "image": image_ids.view(1, b).expand(c, b),
            "y": (flat // width).t(), "x": (flat % width).t()}


def merge_examples(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The top ``n`` of two candidate sets per channel: value descending, ties by lower image id."""
    cat = {f: torch.cat([a[f], b[f].to(a[f].device)], dim=1) for f in FIELDS}
    by_image = torch.sort(cat["image"], dim=1, stable=True).indices
    cat = {f: t.gather(1, by_image) for f, t in cat.items()}
    by_value = torch.sort(cat["value"], dim=1, descending=True, stable=True).indices[:, :n]
    return {f: t.gather(1, by_value).contiguous() for f, t in cat.items()}
