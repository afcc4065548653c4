"""Dataset-example patches: the receptive field around each recorded channel max, cropped from
the original image file, for the viewer.

A layer's receptive field is measured once with autograd on a probe input: the input pixels
that influence one output position at the centre of the feature map (the bounding box of
non-zero input gradients over several random probes), and the feature map's stride. A
position (y, x) then maps to that box shifted by (y - y0, x - x0) times the stride.

Summit's viewer requests :data:`SUMMIT_EXAMPLES` examples of every node it shows, whether they
exist or not: the slots of a channel with fewer examples get :data:`PLACEHOLDER`, a neutral
image that :func:`is_placeholder` tells apart, so that the export's index (and our viewer) list
only the real examples.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .featvis import LAYOUT, safe_layer_names

PATTERN = LAYOUT["dataset_examples"]  # in Summit's layout, relative to the viewer folder; {layer}: featvis.safe_layer_name(layer)
SUMMIT_EXAMPLES = 10  # Summit's viewer requests PATTERN for i = 0..9 of every node it shows
# An 8x8 light-grey JPEG (Pillow, quality 50, optimised): stored, not made by Pillow at run time, so
# that is_placeholder recognises the placeholders of any export whatever Pillow writes.
PLACEHOLDER = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19i"
    "Z2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAb/xAAUEAEAAAAAAAAAAAAAAAAAAAAA/8QA"
    "FAEBAAAAAAAAAAAAAAAAAAAAAP/EABQRAQAAAAAAAAAAAAAAAAAAAAD/2gAMAwEAAhEDEQA/ALQAH//Z")


def is_placeholder(path: str | os.PathLike) -> bool:
    """Whether the file ``path`` is :data:`PLACEHOLDER`, written only for Summit's viewer (False
    when there is no such file)."""
    path = Path(path)
    try:
        return path.stat().st_size == len(PLACEHOLDER) and path.read_bytes() == PLACEHOLDER
    except (FileNotFoundError, NotADirectoryError):
        return False


@dataclass(frozen=True)
class ReceptiveField:
    """Input-pixel box of feature position (y0, x0) and the feature map's stride, in model-input pixels."""

    y0: int
    x0: int
    box: tuple[int, int, int, int]  # top, left, bottom, right (exclusive) for (y0, x0)
    stride: tuple[float, float]
    input_size: tuple[int, int]

    def box_at(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The box for feature position (y, x), clipped to the input."""
        dy, dx = round((y - self.y0) * self.stride[0]), round((x - self.x0) * self.stride[1])
        top, left, bottom, right = self.box
        h, w = self.input_size
        return max(0, top + dy), max(0, left + dx), min(h, bottom + dy), min(w, right + dx)


def receptive_fields(model: nn.Module, layers: list[str], input_shape, probes: int = 3,
                     device: torch.device | str = "cpu") -> dict[str, ReceptiveField]:
    """Measure the receptive field of every layer in ``layers`` (see the module docstring): one
    forward pass per probe, then one backward pass per layer through its graph."""
    modules = dict(model.named_modules())
    c, h, w = input_shape
    captured = {}
    handles = [modules[layer].register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o))
               for layer in layers]
    support = {layer: torch.zeros(h, w, dtype=torch.bool) for layer in layers}
    try:
        for seed in range(probes):
            generator = torch.Generator().manual_seed(seed)
            probe = torch.randn(1, c, h, w, generator=generator).to(device).requires_grad_(True)
            with torch.enable_grad():
                model(probe)
                for layer in layers:
                    out = captured[layer]
                    centre = out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum()
                    (grad,) = torch.autograd.grad(centre, probe, retain_graph=True, allow_unused=True)
                    if grad is not None:
                        support[layer] |= (grad[0].abs().sum(0) > 0).cpu()
    finally:
        for handle in handles:
            handle.remove()
    fields = {}
    for layer in layers:
        out = captured[layer]
        rows, cols = support[layer].any(1).nonzero().flatten(), support[layer].any(0).nonzero().flatten()
        if len(rows) == 0:
            raise ValueError(f"could not measure the receptive field of layer {layer!r} (no input gradient)")
        fields[layer] = ReceptiveField(out.shape[2] // 2, out.shape[3] // 2,
                                       (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1),
                                       (h / out.shape[2], w / out.shape[3]), (h, w))
    return fields


def export_patches(result, fields: dict[str, ReceptiveField], paths: list, preprocess, out_dir: str | os.PathLike,
                   patch_size: int = 96, progress: bool = True,
                   channels: Mapping[str, Iterable[int]] | None = None) -> int:
    """Crop every recorded dataset example of ``result`` from its original image file
    (``paths[image id]``) and write it to ``out_dir`` / :data:`PATTERN` (the layer's name in the
    form of :func:`summit_fast.featvis.safe_layer_name`); returns the count. Each of the channels'
    slots 0 .. :data:`SUMMIT_EXAMPLES` - 1 that has no example gets :data:`PLACEHOLDER` (not counted).

    ``preprocess`` (a :class:`summit_fast.images.Preprocess`) maps model-input pixels back to the
    original image: its central crop box, scaled by ``preprocess.size``. ``channels``: only the
    examples of these channels of each layer (e.g. the nodes of the attribution graphs, which are
    the channels the viewer shows); default: of every channel.
    """
    from tqdm.auto import tqdm

    from .images import open_rgb

    out_dir = Path(out_dir)
    names = safe_layer_names(result.examples)  # refuses two layers whose files would collide
    wanted = {layer: range(state["image"].shape[0]) if channels is None else sorted(channels.get(layer, ()))
              for layer, state in result.examples.items()}
    jobs = [(layer, c, i, int(state["image"][c, i]), int(state["y"][c, i]), int(state["x"][c, i]))
            for layer, state in result.examples.items()
            for c in wanted[layer] for i in range(state["image"].shape[1])
            if int(state["image"][c, i]) >= 0]
    jobs.sort(key=lambda job: job[3])  # open each image file once
    written, image, image_id = 0, None, None
    for layer, c, i, img, y, x in tqdm(jobs, desc="patches", unit="patch", disable=not progress):
        if img != image_id:
            image, image_id = open_rgb(paths[img]), img
            left, top, right, bottom = preprocess.crop_box(*image.size)
            scale = ((right - left) / preprocess.size, (bottom - top) / preprocess.size)
        t, l, b, r = fields[layer].box_at(y, x)
        box = (left + round(l * scale[0]), top + round(t * scale[1]), left + round(r * scale[0]), top + round(b * scale[1]))
        target = out_dir / PATTERN.format(layer=names[layer], channel=c, i=i)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.crop(box).resize((patch_size, patch_size)).save(target, quality=90)
        written += 1
    for layer, state in result.examples.items():
        for c in wanted[layer]:
            for i in range(SUMMIT_EXAMPLES):
                if i >= state["image"].shape[1] or int(state["image"][c, i]) < 0:
                    target = out_dir / PATTERN.format(layer=names[layer], channel=c, i=i)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(PLACEHOLDER)
    return written
