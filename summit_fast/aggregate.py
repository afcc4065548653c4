"""``summit_fast.aggregate``: stream a dataset through a model and count (SPEC.md A and B).

Forward hooks capture each summary layer's output and each conv edge's input; after every
batch's forward pass all captured tensors and labels are validated first, then the backend's
fused ops add the batch to the int32 counts. Nothing of one batch is counted unless all of it is.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .backends import get_backend
from .backends.base import Backend, check_labels
from .discovery import ModelGraph, discover, graph_from_edges
from .result import SummitResult
from .rules import Mass, SelectionRule, TopK, mass, rule_from_json

LABEL_SOURCES = ("target", "prediction")


def aggregate(model: nn.Module, loader: Iterable, *, layers: Sequence[str] | None = None,
              num_classes: int | None = None, selection: SelectionRule | None = None,
              influence: bool = True, influence_k: int = 5, spatial_stride: int = 1,
              excluded: Mapping[str, Sequence[int]] | None = None, label_source: str = "target",
              backend: str = "auto", device: torch.device | str | None = None,
              amp_dtype: torch.dtype | None = None, channels_last: bool = False,
              edges: Sequence | None = None, class_names: Sequence[str] | None = None,
              input_shape: Sequence[int] | None = None, progress: bool = True) -> SummitResult:
    """Aggregate activations and influences of ``model`` over every batch of ``loader``.

    Args:
        model: a CNN (``nn.Module``); switched to eval mode for the run and restored after.
        loader: yields ``(images, labels)`` (images (B, C, H, W), labels (B,) class indices);
            with ``label_source="prediction"`` it may yield images alone.
        layers: summary layer module names, in order; default ``model.SUMMARY_LAYERS``.
        num_classes: K; default: the size of the model's output.
        selection: channel selection rule, ``summit_fast.mass(0.01)`` (default) or ``summit_fast.topk(k)``.
        influence: also count influences (SPEC.md B); False counts activations only.
        influence_k: sources kept per target channel and image (default 5).
        spatial_stride: sample every r-th output row and column for influence (1 = exact; Summit used 3).
        excluded: ``{layer: [channels]}`` treated as zero in activation aggregation.
        label_source: ``"target"`` (the loader's labels) or ``"prediction"`` (the model's argmax).
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.
        device: where the model runs; default: the device of its parameters.
        amp_dtype: optional autocast dtype (e.g. ``torch.bfloat16``) for the forward pass.
        channels_last: run model and images in channels_last memory format.
        edges: explicit conv edges (see :func:`summit_fast.discovery.graph_from_edges`) for models
            discovery cannot follow.
        class_names: optional names of the K classes, stored in the result.
        input_shape: (C, H, W) used to discover the layers when the loader yields no batch;
            default ``model.INPUT_SHAPE`` if present.
        progress: show a progress bar counting images.
    """
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    selection = mass(0.01) if selection is None else selection
    if not isinstance(selection, (Mass, TopK)):
        raise TypeError(f"selection must be summit_fast.mass(tau) or summit_fast.topk(k), got {selection!r}")
    layers = _resolve_layers(model, layers)
    device = torch.device(device) if device is not None else _model_device(model)
    engine = get_backend(backend, device)
    params = {"selection": selection.to_json(), "influence": bool(influence), "influence_k": int(influence_k),
              "spatial_stride": int(spatial_stride), "label_source": label_source,
              "excluded": {k: sorted(int(c) for c in v) for k, v in (excluded or {}).items()}}
    was_training = model.training
    if was_training:
        warnings.warn("aggregate: the model was in train mode; running it in eval mode (restored afterwards)",
                      stacklevel=2)
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        run = _Run(model, layers, engine, device, params, amp_dtype, channels_last)
        with torch.inference_mode():
            return run.consume(loader, num_classes, edges, class_names, input_shape, progress)
    finally:
        model.train(was_training)


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        layers = getattr(model, "SUMMARY_LAYERS", None)
        if layers is None:
            raise ValueError("layers=None but the model has no SUMMARY_LAYERS preset; pass layers=[module names]")
    if isinstance(layers, str):
        raise TypeError("layers must be a list of module names, not a single string")
    layers = list(layers)
    names = dict(model.named_modules())
    unknown = [l for l in layers if l not in names]
    if unknown:
        available = [n for n in names if n]
        raise ValueError(f"unknown layer name(s) {unknown}; available modules: {', '.join(available)}")
    duplicates = sorted({l for l in layers if layers.count(l) > 1})
    if duplicates:
        raise ValueError(f"duplicate layer name(s) {duplicates} in layers")
    if not layers:
        raise ValueError("layers must name at least one summary layer")
    return layers


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class _Run:
    """One aggregation run: hooks, validation and count updates, batch by batch."""

    def __init__(self, model, layers, engine: Backend, device, params, amp_dtype, channels_last):
        self.model, self.layers, self.engine, self.device = model, layers, engine, device
        self.params, self.amp_dtype, self.channels_last = params, amp_dtype, channels_last
        self.modules = dict(model.named_modules())
        self.captured: dict[str, torch.Tensor] = {}

    # -- setup on the first batch --------------------------------------------------------
    def _setup(self, probe: torch.Tensor, num_classes, edges, class_names) -> SummitResult:
        with self._autocast():
            if edges is not None:
                graph = graph_from_edges(self.model, probe, self.layers, edges)
            else:
                graph = discover(self.model, probe, self.layers)
            if num_classes is None:
                num_classes = _infer_num_classes(self.model(probe))
        self.graph = graph
        self.rule = rule_from_json(self.params["selection"])
        self.excluded = _excluded_masks(self.params["excluded"], graph, self.device)
        self.convs = {e.conv: (self.modules[e.conv], e.spec) for e in graph.edges} if self.params["influence"] else {}
        return SummitResult.zeros(graph, int(num_classes), self.params, class_names, self.device)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _hooks(self):
        def capture(key):
            def hook(module, inputs, output):
                if key in self.captured:
                    raise RuntimeError(f"{key} ran twice in one forward pass; summary layers and conv edges "
                                       "must be modules that run once per forward")
                self.captured[key] = output if key.startswith("layer:") else inputs[0]
            return hook

        handles = [self.modules[l].register_forward_hook(capture(f"layer:{l}")) for l in self.layers]
        handles += [self.modules[c].register_forward_hook(capture(f"conv:{c}")) for c in self.convs]
        return handles

    # -- the loop -----------------------------------------------------------------------
    def consume(self, loader, num_classes, edges, class_names, input_shape, progress) -> SummitResult:
        result = None
        total = _dataset_length(loader)
        handles = []
        with tqdm(total=total, unit="img", desc="summit_fast", disable=not progress) as bar:
            try:
                for index, batch in enumerate(loader):
                    images, labels = self._unpack(batch, index)
                    if images.shape[0] == 0:
                        continue
                    if result is None:
                        result = self._setup(images[:1], num_classes, edges, class_names)
                        handles = self._hooks()
                    self._process(result, images, labels, index)
                    bar.update(images.shape[0])
            finally:
                for h in handles:
                    h.remove()
                self.captured.clear()
        if result is None:  # the loader yielded no images: zero counts
            result = self._empty_result(num_classes, edges, class_names, input_shape)
        return result

    def _empty_result(self, num_classes, edges, class_names, input_shape) -> SummitResult:
        input_shape = input_shape or getattr(self.model, "INPUT_SHAPE", None)
        if input_shape is None:
            raise ValueError("the loader yielded no images, so the layers cannot be discovered; "
                             "pass input_shape=(C, H, W)")
        probe = torch.zeros(1, *input_shape, device=self.device)
        return self._setup(probe, num_classes, edges, class_names)

    def _unpack(self, batch, index: int):
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            images, labels = batch
        elif isinstance(batch, torch.Tensor) and self.params["label_source"] == "prediction":
            images, labels = batch, None
        else:
            raise TypeError(f"the loader must yield (images, labels) pairs; batch {index} is "
                            f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, (list, tuple)) else ''}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"batch {index}: images must be a 4-D tensor (B, C, H, W), got {shape}")
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def _process(self, result: SummitResult, images, labels, index: int) -> None:
        self.captured.clear()
        try:
            with self._autocast():
                output = self.model(images)
            if self.params["label_source"] == "prediction":
                labels = _logits(output).argmax(dim=1)
            check_labels(labels, images.shape[0], result.num_classes, what=f"batch {index}: labels")
            labels = labels.to(self.device)
            self._check_captured(index)
            for layer in self.layers:
                self.engine.activation_update(self.captured[f"layer:{layer}"], labels, result.activation[layer],
                                              self.rule, self.excluded.get(layer))
            for conv, (module, spec) in self.convs.items():
                self.engine.influence_update(self.captured[f"conv:{conv}"], module.weight, spec, labels,
                                             result.influence[conv], self.params["influence_k"],
                                             self.params["spatial_stride"])
            result.images_per_class += torch.bincount(labels, minlength=result.num_classes)
        finally:
            self.captured.clear()

    def _check_captured(self, index: int) -> None:
        for key in [f"layer:{l}" for l in self.layers] + [f"conv:{c}" for c in self.convs]:
            kind, name = key.split(":", 1)
            what = "summary layer" if kind == "layer" else "input of conv"
            t = self.captured.get(key)
            if t is None:
                raise RuntimeError(f"batch {index}: {what} {name!r} did not run in the forward pass")
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"batch {index}: {what} {name!r} must be a 4-D (B, C, H, W) tensor, got {shape}")
            if not bool(torch.isfinite(t).all()):
                raise FloatingPointError(f"batch {index}: NaN or Inf in the {what} {name!r}")


def _logits(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the model's output must be (B, num_classes) scores to infer classes or predictions, got {shape}")
    return output


def _infer_num_classes(output) -> int:
    try:
        return int(_logits(output).shape[1])
    except ValueError as exc:
        raise ValueError(f"{exc}; pass num_classes=") from None


def _dataset_length(loader) -> int | None:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


def _excluded_masks(excluded: dict, graph: ModelGraph, device) -> dict[str, torch.Tensor]:
    masks = {}
    for layer, channels in excluded.items():
        if layer not in graph.layers:
            raise ValueError(f"excluded: {layer!r} is not a summary layer ({', '.join(graph.layers)})")
        c = graph.channels[layer]
        bad = [ch for ch in channels if not 0 <= ch < c]
        if bad:
            raise ValueError(f"excluded: channel(s) {bad} out of range for layer {layer!r} with {c} channels")
        mask = torch.zeros(c, dtype=torch.bool, device=device)
        mask[list(channels)] = True
        masks[layer] = mask
    return masks
