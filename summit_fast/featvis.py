"""Feature visualisation: for each (layer, channel) an image that makes the channel fire, and a few
"diversity" images of it, as Summit shows them (Olah et al., "Feature Visualization", Distill
2017, rendered there with Lucid). The recipe is Lucid's, written in PyTorch from the published
method:

- The image is parameterised in the Fourier domain: a spectrum per colour channel, scaled by
  1/frequency (decay power 1) so that a step of the optimiser changes coarse structure as much as
  fine, inverted with an orthonormal 2-D FFT. Its three channels are decorrelated colours, mapped
  to RGB by the square root of ImageNet's colour correlation matrix (normalised as Lucid does),
  then a sigmoid gives pixels in 0..1.
- Transformation robustness: Lucid's standard transforms (pad 12 with grey, jitter 8, scale by
  one of 0.9 .. 1.1, rotate by -10 .. 10 degrees, jitter 4), composed here into ONE bilinear warp
  per image to a fixed size (``size + 12``), so that every image of a batch gets its own draw.
- The warped pixels, in 0..255, go through the model's own preprocessing,
  ``x = (pixel - mean) / std`` (its ``PREPROCESS``: :class:`summit_fast.images.Preprocess`), so
  the input has the value range the model was trained on.
- Objective: the mean over positions of one channel of one layer's output (the output of the
  module named by the layer, as in the models' ``SUMMARY_LAYERS``), maximised with Adam.
- Redirected ReLU gradients (Lucid's remedy for a channel that is 0 on the start image, whose
  ReLU would pass no gradient and leave the image unchanged): while rendering, the model's
  ``nn.ReLU`` and ``nn.ReLU6`` modules pass the gradient below 0 (and above 6) where it pushes
  the input back into range, for the images whose ordinary gradient there is zero. The images
  stay independent of each other; functional ``F.relu`` calls are not redirected.
- Speed, not the recipe: while rendering, BatchNorms that follow a conv in an ``nn.Sequential``
  are folded into it (the rendered layers' own outputs kept; checked on a random image first),
  and the images reach the model in channels_last memory format
  (:mod:`summit_fast.featvis_model` holds both model patches).
- Diversity: D images of one channel optimised together with Lucid's diversity term, minus
  ``diversity_weight`` x the mean over the D images of their summed cosine similarity to the
  others, the similarity being that of the Gram matrices (channels x channels) of a layer's
  activations (``diversity_layer``; by default the rendered channel's own layer).

Rendering is batched over targets: one optimisation renders many (layer, channel) images, one
batch item each. The model runs in eval mode, so batch items do not interact, and each image's
initial spectrum and transforms are drawn from its own generator, seeded from ``seed``, the
kind of image and its (layer, channel, index): an image does not depend on which others share
its batch (up to float rounding). The forward pass stops after the deepest layer a batch needs.

Defaults (:class:`FeatureVisSettings`): 128 px and 512 steps, meant for a GPU. On a CPU, 64-96 px
and 128-256 steps give recognisable images: the 722 graph channels of MobileNetV2 (19 layers) at
64 px, 128 steps, in batches of 32 took 0.32 s per channel image on two cores. A size too small
for the model up to a rendered layer (a pooling or an unpadded convolution would get less than
its kernel) is :class:`SizeTooSmall`, which names the smallest size that works, before anything
is rendered (:func:`check_size` checks it alone).

:func:`write_feature_vis` writes the images in Summit's layout, inside a folder (the viewer's
``feature-vis/``), with :func:`safe_layer_name` in place of the layer name::

    channel/{layer}-{channel}-channel.jpg
    diversity-{d}/{layer}-{channel}-diversity-{d}.jpg      (d = 0 .. D-1)

(and :mod:`summit_fast.patches` writes the dataset examples beside them, as :data:`DATASET_PATTERN`).

It keeps a cache (lossless PNGs) keyed by the model's weights digest, the preprocessing, the
settings and (layer, channel): a re-run renders only what is not cached yet, and a killed run
resumes after its last finished batch. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .featvis_model import FoldedBatchNorms, RedirectedReLUs, folding_changes_nothing

# Summit's image layout, the one definition of it ({layer}: safe_layer_name(layer)).
FOLDER = "feature-vis"  # inside the viewer folder
CHANNEL_PATTERN = "channel/{layer}-{channel}-channel.jpg"  # inside FOLDER
DIVERSITY_PATTERN = "diversity-{d}/{layer}-{channel}-diversity-{d}.jpg"  # inside FOLDER
DATASET_PATTERN = "dataset-p/{layer}-{channel}-dataset-p-{i}.jpg"  # inside FOLDER: summit_fast.patches writes them
# The same, relative to the viewer folder, by the names of the export index's "images" fields.
LAYOUT = {"feature_vis": f"{FOLDER}/{CHANNEL_PATTERN}", "diversity": f"{FOLDER}/{DIVERSITY_PATTERN}",
          "dataset_examples": f"{FOLDER}/{DATASET_PATTERN}"}
CACHE = ".cache"  # default cache folder, inside FOLDER
AMP_DTYPES = {"bf16": torch.bfloat16}
_CACHE_FORMAT = 5  # bump when the recipe changes what a cached image holds (2: redirected ReLUs;
# 3: their ordinary gradient stops at the range boundaries, as torch's clamp gradient does;
# 4: the model sees channels_last images, whose convs may round differently; 5: BatchNorms
# folded into their convs, which rounds differently)

# Lucid's colour decorrelation: the square root (from its SVD) of the correlation matrix of
# ImageNet's RGB values, its rows the RGB weights of three decorrelated channels, scaled so that
# the largest column has unit norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()

# Lucid's standard transforms (pad 12 is implied: the warp samples grey outside the image).
_JITTER = (8, 4)  # pixels of jitter before and after scaling and rotation
_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
_ANGLES = tuple(range(-10, 11)) + (0,) * 5  # degrees; 0 more often, as Lucid draws them
_MARGIN = 12  # the warped image is size + 12 pixels: padded by 12 a side, less 8 and 4 of jitter


@dataclass(frozen=True)
class FeatureVisSettings:
    """What an image depends on besides the model and its preprocessing (the cache's key).

    ``size``: image side in pixels (the model sees ``size + 12``); ``steps``: Adam steps of
    learning rate ``lr``; ``seed``: the seed every image's generator derives from;
    ``decay_power``: the spectrum's 1/frequency exponent; ``diversity``: D images per channel
    with the diversity term (0: none); ``diversity_weight``: its weight (Lucid's 100);
    ``diversity_layer``: the layer whose Gram matrices are compared (None: the rendered
    channel's own layer); ``amp``: ``"bf16"`` autocasts the model's forward pass (GPU speed),
    None runs it in float32.
    """

    size: int = 128
    steps: int = 512
    lr: float = 0.05
    seed: int = 0
    decay_power: float = 1.0
    diversity: int = 4
    diversity_weight: float = 100.0
    diversity_layer: str | None = None
    amp: str | None = None

    def check(self) -> None:
        """``ValueError`` naming the first setting out of range."""
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.diversity < 0:
            raise ValueError(f"diversity must be 0 (none) or more images per channel, got {self.diversity}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None or one of {tuple(AMP_DTYPES)}, got {self.amp!r}")


class SizeTooSmall(ValueError):
    """Images of ``size`` pixels are too small for ``model``'s forward pass up to ``layer`` (a
    pooling or convolution would get less than its kernel); ``minimum`` is the smallest size that
    works. The message calls the setting ``size``; :meth:`for_option` names a command-line option."""

    def __init__(self, size: int, minimum: int, model: str, layer: str):
        self.size, self.minimum, self.model, self.layer = size, minimum, model, layer
        super().__init__(self.for_option("size"))

    def for_option(self, option: str) -> str:
        """The message with the setting called ``option`` (e.g. ``--feature-vis-size``)."""
        return (f"{option} {self.size} is too small for {self.model} up to layer {self.layer!r}: "
                f"the smallest {option} that works is {self.minimum}")


class RenderError(RuntimeError):
    """The optimisation of a target went wrong (a NaN or infinite objective); the message names
    the target. Batches finished before it are cached."""


# -- names ----------------------------------------------------------------------------------
def safe_layer_name(layer: str) -> str:
    """The form of a layer name in file names and CSS ids: every character other than an ASCII
    letter, digit, ``_`` or ``-`` becomes ``_`` (``features.14`` -> ``features_14``; Summit's
    ``mixed4a`` stays as it is)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", layer)


def safe_layer_names(layers: Iterable[str]) -> dict[str, str]:
    """``{layer: safe_layer_name(layer)}``; ``ValueError`` if two layers get the same safe name
    (e.g. ``a.b`` and ``a_b``), whose files would overwrite each other."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for layer in layers:
        safe = safe_layer_name(layer)
        if owner.setdefault(safe, layer) != layer:
            raise ValueError(f"layers {owner[safe]!r} and {layer!r} have the same file-name form {safe!r}; "
                             "rename one of the modules")
        names[layer] = safe
    return names


def channel_file(layer: str, channel: int) -> str:
    """The channel image of (``layer``, ``channel``), relative to the feature-vis folder."""
    return CHANNEL_PATTERN.format(layer=safe_layer_name(layer), channel=channel)


def diversity_file(layer: str, channel: int, d: int) -> str:
    """The ``d``-th diversity image of (``layer``, ``channel``), relative to the feature-vis folder."""
    return DIVERSITY_PATTERN.format(layer=safe_layer_name(layer), channel=channel, d=d)


# -- rendering ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    """One target rendered as ``images`` images optimised together (1 for a channel image, D
    for its diversity images)."""

    layer: str
    channel: int
    kind: str  # "channel" or "diversity"
    images: int


def render_channels(model: nn.Module, targets: Sequence[tuple[str, int]], settings: FeatureVisSettings | None = None,
                    *, preprocess=None, batch: int = 32, device: str | torch.device | None = None,
                    progress: bool = False) -> torch.Tensor:
    """The feature visualisation of each (layer, channel) of ``targets``: float32 (N, 3, size,
    size) on the CPU, pixels in 0..1. ``batch`` images are optimised at once (the images do not
    depend on it); ``preprocess`` defaults to ``model.PREPROCESS``; ``device`` defaults to the
    model's; ``progress`` shows a tqdm bar."""
    settings = settings or FeatureVisSettings()
    jobs = [_Job(layer, int(ch), "channel", 1) for layer, ch in targets]
    return _render_all(model, jobs, settings, preprocess, batch, device, progress)


def render_diversity(model: nn.Module, targets: Sequence[tuple[str, int]], settings: FeatureVisSettings | None = None,
                     *, preprocess=None, batch: int = 32, device: str | torch.device | None = None,
                     progress: bool = False) -> torch.Tensor:
    """``settings.diversity`` (D) diversity images of each (layer, channel) of ``targets``:
    float32 (N, D, 3, size, size) on the CPU. A batch holds ``max(1, batch // D)`` channels;
    the other arguments are :func:`render_channels`'."""
    settings = settings or FeatureVisSettings()
    if settings.diversity < 1:
        raise ValueError(f"render_diversity needs settings.diversity >= 1, got {settings.diversity}")
    jobs = [_Job(layer, int(ch), "diversity", settings.diversity) for layer, ch in targets]
    images = _render_all(model, jobs, settings, preprocess, batch, device, progress)
    return images.view(len(jobs), settings.diversity, *images.shape[1:])


def _render_all(model, jobs, settings, preprocess, batch, device, progress) -> torch.Tensor:
    images = torch.empty(sum(j.images for j in jobs), 3, settings.size, settings.size)
    where: dict[_Job, list[int]] = {}  # a target given twice is rendered once, returned twice
    start = 0
    for job in jobs:
        where.setdefault(job, []).append(start)
        start += job.images
    for done, rendered in _render(model, jobs, settings, preprocess, batch, device, progress):
        for job, image in zip(done, rendered):
            for start in where[job]:
                images[start:start + job.images] = image
    return images


def _render(model, jobs: list[_Job], settings: FeatureVisSettings, preprocess, batch: int, device, progress: bool):
    """Yield ``(jobs, images)`` per finished batch, ``images`` a list of (k, 3, S, S) CPU tensors
    in 0..1, one per job."""
    from tqdm.auto import tqdm

    settings.check()
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    preprocess = _preprocess_of(model, preprocess)
    device = _device(model, device)
    if not jobs:
        return
    was_training = model.training
    model.eval()  # batch items must not interact (BatchNorm's batch statistics would), nor the probe update them
    try:
        modules = _check_targets(model, jobs, settings, device)
        folded = _folded_batch_norms(model, modules, settings.size, device)
        batches = _batches(jobs, batch, list(modules))
        with tqdm(total=len(batches) * settings.steps, desc=f"feature-vis {jobs[0].kind}", unit="step",
                  disable=not progress) as bar:
            for group in batches:
                with folded:
                    images = _optimise(model, modules, group, settings, preprocess, device, bar)
                yield group, images
    finally:
        model.train(was_training)


def _folded_batch_norms(model, modules: dict[str, nn.Module], size: int, device):
    """The model's BatchNorms folded into their convs while rendering (the rendered layers' own
    outputs kept), or nothing when a random image's outputs of ``modules`` would change."""
    folded = FoldedBatchNorms(model, keep=set(modules))
    side = size + _MARGIN
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    if folding_changes_nothing(folded, lambda x: _capture(model, modules, x, grad=False), image):
        return folded
    return contextlib.nullcontext()


def _preprocess_of(model, preprocess):
    preprocess = preprocess if preprocess is not None else getattr(model, "PREPROCESS", None)
    if preprocess is None:
        raise ValueError(f"{type(model).__name__} has no PREPROCESS: pass preprocess=summit_fast.images.Preprocess(...) "
                         "with the mean and std (of pixels in 0..255) its inputs are normalised with")
    if not (hasattr(preprocess, "mean") and hasattr(preprocess, "std")):
        raise TypeError(f"preprocess must have per-channel mean and std (a summit_fast.images.Preprocess), "
                        f"got {type(preprocess).__name__}")
    return preprocess


def _device(model: nn.Module, device) -> torch.device:
    """``device`` (default: the model's), which must be the model's: it is not moved."""
    parameter = next(model.parameters(), None)
    home = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else home
    if device.type != home.type:
        raise ValueError(f"device {str(device)!r}: the model is on {home}; move it there first "
                         f"(model.to({str(device)!r})) or pass device={str(home)!r}")
    return device


def _check_targets(model, jobs: list[_Job], settings: FeatureVisSettings, device) -> dict[str, nn.Module]:
    """The modules of the layers the jobs need, in the model's order, after checking that each
    layer exists and has the channel (one probe forward pass); ``ValueError`` naming the first
    that does not and what exists."""
    named = dict(model.named_modules())
    known = getattr(model, "SUMMARY_LAYERS", None) or [n for n, m in named.items() if n and not list(m.children())]
    wanted = {j.layer for j in jobs} | ({settings.diversity_layer} if settings.diversity_layer else set())
    for layer in sorted(wanted):
        if layer not in named or not layer:
            from ._text import spread

            raise ValueError(f"unknown layer {layer!r}: {type(model).__name__}'s layers are {spread(list(known))}")
    safe_layer_names(wanted)
    modules = {name: named[name] for name in named if name in wanted}  # the model's order
    channels = _probe_channels(model, modules, settings.size, device)
    for job in jobs:
        if not 0 <= job.channel < channels[job.layer]:
            raise ValueError(f"layer {job.layer!r} has {channels[job.layer]} channels (0..{channels[job.layer] - 1}); "
                             f"channel {job.channel} does not exist")
    return modules


def check_size(model: nn.Module, layers: Iterable[str], size: int, device: str | torch.device | None = None) -> None:
    """:class:`SizeTooSmall` if images of ``size`` pixels are too small for ``model`` up to the
    deepest of ``layers`` (modules of the model), found by a forward pass as rendering does it
    (eval mode, batch 1): a check before anything slow, e.g. an aggregation that renders after.
    Names that are not modules of the model are not checked here (rendering refuses them)."""
    named = dict(model.named_modules())
    modules = {name: named[name] for name in named if name in set(layers)}  # the model's order
    if not modules:
        return
    was_training = model.training
    model.eval()
    try:
        _probe_channels(model, modules, size, _device(model, device))
    finally:
        model.train(was_training)


def _probe_channels(model, modules: dict[str, nn.Module], size: int, device) -> dict[str, int]:
    """The channels of each of ``modules``' outputs, from one forward pass of a ``size`` image (as
    rendered: ``size + 12`` pixels); :class:`SizeTooSmall` if the pass fails at that size but
    works at a larger one."""
    try:
        captured = _probe(model, modules, size, device)
    except RuntimeError:  # torch's own message names a tensor shape, not the setting to change
        minimum = _smallest_size(model, modules, size, device)
        if minimum is None:
            raise  # not a matter of size
        raise SizeTooSmall(size, minimum, type(model).__name__, list(modules)[-1]) from None
    return {name: int(out.shape[1]) for name, out in captured.items()}


def _smallest_size(model, modules: dict[str, nn.Module], size: int, device, limit: int = 1024) -> int | None:
    """The smallest image size above ``size`` (which fails) whose forward pass up to ``modules``
    runs, by doubling then bisection (a larger image never fails where a smaller one works);
    None when none up to ``limit`` does."""
    def works(side: int) -> bool:
        try:
            _probe(model, modules, side, device)
            return True
        except RuntimeError:
            return False

    low, high = size, 2 * size
    while not works(high):
        if high >= limit:
            return None
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle, high)
    return high


def _probe(model, modules: dict[str, nn.Module], size: int, device) -> dict[str, torch.Tensor]:
    """:func:`_capture` of a blank image of ``size`` as rendered (``size + 12`` pixels), without gradients."""
    side = size + _MARGIN
    return _capture(model, modules, torch.zeros(1, 3, side, side, device=device), grad=False)


class _Stop(Exception):
    """Raised by the last hook a forward pass needs: the layers after it are not computed."""


def _capture(model, modules: dict[str, nn.Module], x: torch.Tensor, grad: bool = True) -> dict[str, torch.Tensor]:
    """The outputs of ``modules`` for input ``x`` (the first call of each), the forward pass
    stopped as soon as all are captured."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def keep(module, inputs, output):
            if name in captured:
                return
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"layer {name!r} outputs {type(output).__name__}"
                                 f"{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}, "
                                 "not a (batch, channels, height, width) tensor")
            captured[name] = output
            if len(captured) == len(modules):
                raise _Stop
        return keep

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in modules if n not in captured]
    if missing:
        raise ValueError(f"layer {missing[0]!r} is not called in the model's forward pass")
    return captured


def _batches(jobs: list[_Job], batch: int, layer_order: list[str]) -> list[list[_Job]]:
    """The jobs in layer order, packed into batches of at most ``batch`` images (at least one
    job each): a batch of one layer stops the forward pass earliest."""
    rank = {name: i for i, name in enumerate(layer_order)}
    ordered = sorted(dict.fromkeys(jobs), key=lambda j: (rank[j.layer], j.channel, j.kind))
    batches: list[list[_Job]] = []
    for job in ordered:
        if batches and sum(j.images for j in batches[-1]) + job.images <= batch:
            batches[-1].append(job)
        else:
            batches.append([job])
    return batches


def _generator(settings: FeatureVisSettings, job: _Job, index: int) -> torch.Generator:
    """The generator of image ``index`` of ``job``: seeded from the settings' seed, the kind of
    image and the target, never from its place in a batch."""
    key = f"{settings.seed}/{job.kind}/{job.layer}/{job.channel}/{index}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def _draws(settings: FeatureVisSettings, job: _Job, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``index`` of ``job``'s initial spectrum (3, S, S//2+1, 2) and its transforms of
    every step (steps, 6): jitter x, y, scale, angle, second jitter x, y."""
    g = _generator(settings, job, index)
    s, steps = settings.size, settings.steps
    spectrum = 0.01 * torch.randn(3, s, s // 2 + 1, 2, generator=g)
    jitter1 = torch.randint(0, _JITTER[0] + 1, (steps, 2), generator=g) - _JITTER[0] / 2
    scale = torch.tensor(_SCALES)[torch.randint(0, len(_SCALES), (steps, 1), generator=g)]
    angle = torch.tensor(_ANGLES, dtype=torch.float32)[torch.randint(0, len(_ANGLES), (steps, 1), generator=g)]
    jitter2 = torch.randint(0, _JITTER[1] + 1, (steps, 2), generator=g) - _JITTER[1] / 2
    return spectrum, torch.cat([jitter1, scale, angle, jitter2], dim=1).float()


def _spectrum_scale(size: int, decay_power: float) -> torch.Tensor:
    """1 / frequency ** decay_power of each rfft2 coefficient (the lowest capped at 1 / size)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / size) ** decay_power


def _pixels(spectrum: torch.Tensor, scale: torch.Tensor, size: int) -> torch.Tensor:
    """RGB images (N, 3, S, S) in 0..1 from spectra (N, 3, S, S//2+1, 2)."""
    image = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(size, size), norm="ortho") / 4.0
    # (3, 3) @ (N, 3, S*S): a batched 3x3 product; einsum's own plan took 1.3 ms a call on the CPU
    rgb = (_COLOR.to(image.device) @ image.flatten(2)).view_as(image)
    return torch.sigmoid(rgb)


def _warp(pixels: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """``pixels`` (N, 3, S, S) through Lucid's standard transforms, one warp per image to
    (S + 12) pixels a side; outside the image is grey (0.5, Lucid's padding).

    An output pixel at offset d from the centre shows the input at R(-angle) (d + j2) / scale
    + j1 (jitters j1, j2 relative to centred crops), in the normalised coordinates of
    ``affine_grid`` (input units 2 / S)."""
    n, size = pixels.shape[0], pixels.shape[-1]
    out = size + _MARGIN
    j1, scale, angle, j2 = transforms[:, 0:2], transforms[:, 2], torch.deg2rad(transforms[:, 3]), transforms[:, 4:6]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle)
    linear = rotation * (out / size / scale)[:, None, None]
    shift = (torch.einsum("nij,nj->ni", rotation, j2) / scale[:, None] + j1) * (2.0 / size)
    theta = torch.cat([linear, shift[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(pixels - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _optimise(model, modules: dict[str, nn.Module], jobs: list[_Job], settings: FeatureVisSettings, preprocess,
              device: torch.device, bar) -> list[torch.Tensor]:
    """Optimise one batch; the images of each job, (k, 3, S, S) on the CPU."""
    draws = [_draws(settings, job, i) for job in jobs for i in range(job.images)]
    spectrum = torch.stack([d[0] for d in draws]).to(device).requires_grad_(True)
    transforms = torch.stack([d[1] for d in draws], dim=1).to(device)  # (steps, N, 6)
    scale = _spectrum_scale(settings.size, settings.decay_power).to(device)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    objective = _Objective(jobs, settings, modules, device)
    optimiser = torch.optim.Adam([spectrum], lr=settings.lr)
    finite = torch.ones(len(jobs), dtype=torch.bool, device=device)
    amp = AMP_DTYPES.get(settings.amp)
    with RedirectedReLUs(model):
        for step in range(settings.steps):
            x = (_warp(_pixels(spectrum, scale, settings.size), transforms[step]) * 255.0 - mean) / std
            # channels_last images: the convs run in the layout their libraries prefer (on the CPU
            # 1.6x faster at batch 32 for MobileNetV2), the model itself left as it is
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                captured = _capture(model, objective.modules, x)
            losses = objective.losses(captured)  # one per job: the jobs' gradients stay apart
            finite &= torch.isfinite(losses)  # checked once at the end: no device sync per step
            (spectrum.grad,) = torch.autograd.grad(losses.sum(), [spectrum])
            optimiser.step()
            bar.update(1)
    images = _pixels(spectrum.detach(), scale, settings.size).float()
    finite &= torch.stack([torch.isfinite(part).all() for part in images.split([j.images for j in jobs])])
    bad = (~finite).nonzero().flatten().tolist()
    if bad:
        job = jobs[bad[0]]
        raise RenderError(f"the objective of layer {job.layer!r} channel {job.channel} became NaN or infinite "
                          f"while rendering its {job.kind} image{'s' if job.images > 1 else ''} (try a smaller lr "
                          f"than {settings.lr}, or amp=None); the images rendered before it are kept")
    return list(images.cpu().split([j.images for j in jobs]))


class _Objective:
    """Per job, minus its channel's mean activation (the mean over its images), plus for a
    group of diversity images ``diversity_weight`` x their mean summed Gram cosine similarity."""

    def __init__(self, jobs: list[_Job], settings: FeatureVisSettings, modules: dict[str, nn.Module], device):
        self.jobs, self.settings = jobs, settings
        self.owner = torch.tensor([i for i, job in enumerate(jobs) for _ in range(job.images)], device=device)
        self.counts = torch.tensor([j.images for j in jobs], dtype=torch.float32, device=device)
        # Per layer, the batch positions of its images and the channel each maximises.
        channels = torch.tensor([j.channel for j in jobs], device=device)[self.owner]
        layers = [jobs[i].layer for i in self.owner.tolist()]
        self.picks = {}
        for layer in dict.fromkeys(layers):
            rows = torch.tensor([i for i, name in enumerate(layers) if name == layer], device=device)
            self.picks[layer] = (rows, channels[rows])
        self.diverse = settings.diversity_weight != 0 and any(j.images > 1 for j in jobs)
        needed = set(self.picks)
        if self.diverse:
            needed |= {settings.diversity_layer or j.layer for j in jobs if j.images > 1}
        self.modules = {n: m for n, m in modules.items() if n in needed}

    def losses(self, captured: dict[str, torch.Tensor]) -> torch.Tensor:
        per_image = torch.empty(len(self.owner), device=self.owner.device)
        for layer, (rows, channels) in self.picks.items():
            per_image[rows] = captured[layer][rows, channels].float().mean(dim=(1, 2))
        means = torch.zeros_like(self.counts).index_add(0, self.owner, per_image) / self.counts
        losses = -means
        if self.diverse:
            losses = losses + self.settings.diversity_weight * self._similarity(captured)
        return losses

    def _similarity(self, captured: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per job, the summed cosine similarity of each image's Gram matrix to the others',
        divided by the number of images (Lucid's diversity objective, negated)."""
        similarity = []
        start = 0
        for job in self.jobs:
            if job.images > 1:
                act = captured[self.settings.diversity_layer or job.layer][start:start + job.images].float()
                flat = act.flatten(2)  # (k, C, positions)
                grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
                cosine = grams @ grams.T
                similarity.append((cosine.sum() - cosine.diagonal().sum()) / job.images)
            else:
                similarity.append(torch.zeros((), device=self.owner.device))
            start += job.images
        return torch.stack(similarity)


# -- files and the cache --------------------------------------------------------------------
@dataclass
class FeatureVisReport:
    """What :func:`write_feature_vis` did: the targets it ``rendered`` and those it found
    ``cached``, per kind (``"channel"``, ``"diversity"``), as (layer, channel) lists."""

    rendered: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: {"channel": [], "diversity": []})
    cached: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: {"channel": [], "diversity": []})


def write_feature_vis(out_dir: str | os.PathLike, model: nn.Module, targets: Sequence[tuple[str, int]],
                      settings: FeatureVisSettings | None = None, *, preprocess=None, batch: int = 32,
                      device: str | torch.device | None = None, cache_dir: str | os.PathLike | None = None,
                      progress: bool = False) -> FeatureVisReport:
    """Render and write the channel image and ``settings.diversity`` diversity images of each
    (layer, channel) of ``targets`` into ``out_dir`` (a viewer's ``feature-vis/``, created if
    needed), as :data:`CHANNEL_PATTERN` and :data:`DIVERSITY_PATTERN` with
    :func:`safe_layer_name`; returns a :class:`FeatureVisReport`.

    Images are cached as PNGs in ``cache_dir`` (default ``out_dir/.cache``), in a folder per
    kind keyed by the model's weights digest, the preprocessing's mean and std and the settings
    the kind depends on: only targets not cached yet are rendered, each batch's images cached
    (and its JPEGs written) as soon as it finishes, every file atomically. The other arguments
    are :func:`render_channels`'.
    """
    from .checkpoint import model_digest

    settings = settings or FeatureVisSettings()
    settings.check()
    preprocess = _preprocess_of(model, preprocess)
    targets = list(dict.fromkeys((layer, int(ch)) for layer, ch in targets))
    safe_layer_names({layer for layer, _ in targets})
    out_dir = Path(out_dir)
    cache_root = Path(cache_dir) if cache_dir is not None else out_dir / CACHE
    digest = model_digest(model)
    report = FeatureVisReport()
    kinds = [("channel", 1)] + ([("diversity", settings.diversity)] if settings.diversity else [])
    for kind, images in kinds:
        cache = cache_root / f"{kind}-{_cache_key(digest, preprocess, settings, kind)[:16]}"
        todo = [t for t in targets if not all(p.is_file() for p in _cached_files(cache, kind, *t, images))]
        report.cached[kind] = [t for t in targets if t not in todo]
        jobs = [_Job(layer, ch, kind, images) for layer, ch in todo]
        if jobs:
            for done, rendered in _render(model, jobs, settings, preprocess, batch, device, progress):
                for job, image in zip(done, rendered):
                    _save_images(image, _cached_files(cache, kind, job.layer, job.channel, images))
                    _save_images(image, _output_files(out_dir, kind, job.layer, job.channel, images))
                    report.rendered[kind].append((job.layer, job.channel))
        for layer, ch in report.cached[kind]:  # (re)written: an earlier run may have had other settings
            _copy_images(_cached_files(cache, kind, layer, ch, images), _output_files(out_dir, kind, layer, ch, images))
    return report


def _cache_key(digest: str, preprocess, settings: FeatureVisSettings, kind: str) -> str:
    """SHA-256 of what a ``kind`` image depends on (channel images do not depend on the
    diversity settings)."""
    relevant = asdict(settings if kind == "diversity" else replace(
        settings, diversity=0, diversity_weight=0.0, diversity_layer=None))
    key = {"format": _CACHE_FORMAT, "kind": kind, "model": digest,
           "mean": list(map(float, preprocess.mean)), "std": list(map(float, preprocess.std)), "settings": relevant}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _cached_files(cache: Path, kind: str, layer: str, channel: int, images: int) -> list[Path]:
    name = f"{safe_layer_name(layer)}-{channel}-{kind}"
    return [cache / f"{name}.png"] if kind == "channel" else [cache / f"{name}-{d}.png" for d in range(images)]


def _output_files(out_dir: Path, kind: str, layer: str, channel: int, images: int) -> list[Path]:
    if kind == "channel":
        return [out_dir / channel_file(layer, channel)]
    return [out_dir / diversity_file(layer, channel, d) for d in range(images)]


def _save_images(images: torch.Tensor, paths: list[Path]) -> None:
    """Write images (k, 3, S, S) in 0..1 to ``paths`` (PNG or JPEG by extension), each atomically."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for array, path in zip(pixels, paths):
        _write_image(np.ascontiguousarray(array), path)


def _copy_images(sources: list[Path], targets: list[Path]) -> None:
    from PIL import Image

    for source, target in zip(sources, targets):
        with Image.open(source) as image:
            _write_image(np.asarray(image.convert("RGB")), target)


def _write_image(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    from .result import _atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "PNG" if path.suffix == ".png" else "JPEG"
    options = {"quality": 95} if kind == "JPEG" else {}
    _atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format=kind, **options))
