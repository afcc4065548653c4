"""``summit_fast.aggregate``: stream a dataset through a model and count (SPEC.md A and B).

Forward hooks capture each summary layer's output and each conv edge's input; after every
batch's forward pass all captured tensors and labels are validated first, then the backend's
fused ops add the batch to the counts (int32, or int16 with ``count_dtype="int16"``). Nothing of
one batch is counted unless all of it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .arrays import as_tensor, caller_stream, foreign, is_array
from .backends import choose_backend, get_backend
from .backends.base import Backend, check_labels, empty_maxima
from .backends.torch_ref import select_channels
from .checkpoint import Checkpointer, Replay, Schedule, Stream, model_digest
from .discovery import ModelGraph, discover, graph_from_edges
from .distributed import ShardIds, all_reduce_result, rank_directory
from .examples import batch_candidates, merge_examples
from .result import (SummitResult, check_count_capacity, count_dtype_params, counting_params, probability_to_fixed,
                     probability_to_percent, with_backends)
from .rules import Mass, SelectionRule, TopK, mass

LABEL_SOURCES = ("target", "prediction")
# What the captured tensors are, by key prefix (see Aggregator._hooks).
_CAPTURED = {"layer": "summary layer", "conv": "input of conv"}
# Autocast types of the forward pass, with their names in ``params``.
AMP_DTYPES = {None: None, torch.bfloat16: "bfloat16", torch.float16: "float16"}
# Parameters found on the first batch rather than given (see Aggregator._setup).
_DERIVED_PARAMS = ("predictions", "num_classes", "model_digest")

log = logging.getLogger(__name__)


def aggregate(model: nn.Module, loader: Iterable, *, progress: bool = True,
              checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 100,
              checkpoint_seconds: float | None = 60.0, **options) -> SummitResult:
    """Aggregate activations and influences of ``model`` over every batch of ``loader``.

    ``loader`` yields ``(images, labels)`` (images (B, C, H, W), labels (B,) class indices); with
    ``label_source="prediction"`` it may yield images alone. Both may be torch tensors, NumPy or
    CuPy arrays or other DLPack objects (see :meth:`Aggregator.update`). ``progress`` shows a progress bar
    counting images. Every other keyword is an option of :class:`Aggregator` (layers, num_classes,
    classes, selection, influence, influence_k, spatial_stride, excluded, label_source, backend,
    device, amp_dtype, channels_last, edges, class_names, input_shape, examples, count_dtype).

    With ``checkpoint_dir`` the counts and the position in the loader are saved atomically every
    ``checkpoint_every`` batches or ``checkpoint_seconds`` seconds (None or 0: by batches alone),
    whichever comes first, when the run ends, and when it fails; a later call with the same
    configuration resumes after the last checkpoint. The loader must yield the same batches in
    the same order: the batches already counted are read again and checked against the
    checkpoint's digests of their sizes, labels (and image ids, when the loader names them) and
    a sample of their image values, before any new batch is counted; a loader with a method
    ``batches_from(n)``, as :class:`summit_fast.images.ImageLoader` has, skips them without
    reading them, and its ``fingerprint()`` (files, batch size, order) is compared instead. A
    loader with ``state_dict()``/``load_state_dict()`` has its state saved and restored with the
    counts. A checkpoint of a different configuration (model weights, layers, parameters,
    dataset length, loader fingerprint) or of other batches (batch size, order, data) is refused
    with :class:`CheckpointMismatch`; a damaged one with :class:`ResultFormatError`.

    Under ``torch.distributed`` (e.g. ``torchrun``) every rank aggregates the batches its loader
    yields — shard the data with :class:`summit_fast.ShardSampler` — and the counts are summed
    across ranks at the end; every rank returns the total.
    """
    schedule = Schedule(checkpoint_every, checkpoint_seconds)
    aggregator = Aggregator(model, **options)
    shard, length = ShardIds.of(loader), _dataset_length(loader)
    # A stateful loader's state (e.g. ImageLoader's skipped files) is saved with each checkpoint.
    stateful = callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))
    # Image ids identify the images only when the loader names them (ShardIds counts positions).
    names_images = shard is loader

    def save_checkpoint() -> None:
        checkpoints.save(aggregator.result, done, stream, loader.state_dict() if stateful else None)
        schedule.restart(done)

    checkpoints, found, stream = None, None, Stream()
    if checkpoint_dir is not None:
        identity = loader.fingerprint() if callable(getattr(loader, "fingerprint", None)) else None
        checkpoints = Checkpointer(rank_directory(checkpoint_dir), aggregator.fingerprint(length, identity))
        found = checkpoints.load()
        if found is not None:
            aggregator.resume(found.result)
            stream = Stream(found.stream.to_json())  # continued: the recorded one stays for the replay
            if found.loader_state is not None and stateful:
                loader.load_state_dict(found.loader_state)
    start = done = found.batches_done if found is not None else 0
    schedule.restart(start)
    with tqdm(total=length, initial=aggregator.images_counted, unit="img", desc="summit_fast",
              disable=not progress) as bar:
        try:
            # A loader that can start at a batch skips the done ones without reading them.
            skips_ahead = start > 0 and callable(getattr(loader, "batches_from", None))
            replay = Replay(checkpoints.directory, found.stream, skips_ahead) if found is not None else None
            batches = loader.batches_from(start) if skips_ahead else loader
            for index, batch in enumerate(batches, start=start if skips_ahead else 0):
                with caller_stream(batch):  # a CuPy batch is counted on CuPy's current stream
                    images, labels = aggregator.unpack(batch, index)
                    image_ids = shard.image_ids(aggregator, images)
                    names = image_ids if names_images else None
                    if replay is not None and replay.counted(index, images, labels, names):
                        continue
                    aggregator.update(images, labels, batch_index=index, image_ids=image_ids)
                    if checkpoints is not None:
                        stream.add(images, labels, names)
                    done = index + 1
                    bar.update(images.shape[0])
                    if checkpoints is not None and schedule.due(done):
                        save_checkpoint()
            if replay is not None:
                replay.end()
        finally:  # on success and on failure alike, keep what was counted (if it is consistent:
            # not half-way through an update, nor a batch counted but not recorded, e.g. by Ctrl-C)
            if (checkpoints is not None and done > schedule.position and not aggregator.interrupted
                    and aggregator.images_counted == stream.images):
                save_checkpoint()
    return all_reduce_result(aggregator.result)


class Aggregator:
    """Incremental aggregation, one batch at a time (what :func:`aggregate` loops over).

    Each :meth:`update` is all-or-nothing: the forward pass runs, every captured tensor and the
    labels are checked, and only then are the counts of that batch added. Hooks are attached to
    the model only during an update, and the model runs in eval mode (its mode is restored).

    Args:
        model: a CNN (``nn.Module``).
        layers: summary layer module names, in order; default ``model.SUMMARY_LAYERS``.
        num_classes: the number of classes labels index into; default: the size of the model's output.
        classes: count only these class indices (each gets one row of the counts, in this order:
            the result's ``class_ids``); a label of another class is an error. Default: all.
        selection: channel selection rule, ``summit_fast.mass(0.01)`` (default) or ``summit_fast.topk(k)``.
        influence: also count influences (SPEC.md B); False counts activations only.
        influence_k: sources kept per target channel and image (default 5).
        spatial_stride: sample every r-th output row and column for influence (1 = exact; Summit used 3).
        excluded: ``{layer: [channels]}`` treated as zero in activation aggregation.
        label_source: ``"target"`` (the given labels) or ``"prediction"`` (the model's argmax).
        backend: ``"auto"``, ``"torch"``, ``"cpu"`` or ``"triton"``.
        device: where the model runs; default: the device of its parameters.
        amp_dtype: optional autocast dtype for the forward pass, ``torch.bfloat16`` or
            ``torch.float16`` (GPU throughput); the counts are then those of the half-precision
            forward, and ``params["amp_dtype"]`` records it.
        channels_last: run model and images in channels_last memory format (converts the model).
        edges: explicit conv edges (see :func:`summit_fast.discovery.graph_from_edges`) for models
            discovery cannot follow.
        class_names: optional names of the K classes, stored in the result.
        input_shape: (C, H, W) used to discover the layers when no batch was seen;
            default ``model.INPUT_SHAPE`` if present.
        examples: track the top-N dataset examples per channel of each summary layer (0: off).
        count_dtype: ``"int32"`` (default) or ``"int16"``: the integer type of the counts. int16
            halves the count state (e.g. InceptionV1 at 1000 classes) and is exact up to 32767
            images per class; a batch that would exceed it raises OverflowError before anything
            of it is counted.
        predictions: record the model's top-1 predictions against the labels (``confusion``,
            ``top1_probability``): None (default) when the output is one score per class index,
            True to require it, False not to (labels that are not the model's classes).
    """

    def __init__(self, model: nn.Module, *, layers: Sequence[str] | None = None, num_classes: int | None = None,
                 classes: Sequence[int] | None = None,
                 selection: SelectionRule | None = None, influence: bool = True, influence_k: int = 5,
                 spatial_stride: int = 1, excluded: Mapping[str, Sequence[int]] | None = None,
                 label_source: str = "target", backend: str = "auto", device: torch.device | str | None = None,
                 amp_dtype: torch.dtype | None = None, channels_last: bool = False, edges: Sequence | None = None,
                 class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
                 examples: int = 0, count_dtype: str | torch.dtype = "int32", predictions: bool | None = None):
        if predictions is not None and not isinstance(predictions, bool):
            raise TypeError(f"predictions must be True, False or None (automatic), got {predictions!r}")
        self.predictions = predictions
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        selection = mass(0.01) if selection is None else selection
        if not isinstance(selection, (Mass, TopK)):
            raise TypeError(f"selection must be summit_fast.mass(tau) or summit_fast.topk(k), got {selection!r}")
        for name, value, low in (("influence_k", influence_k, 1), ("spatial_stride", spatial_stride, 1),
                                 ("examples", examples, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.model = model
        self.layers = _resolve_layers(model, layers)
        unknown = [l for l in (excluded or {}) if l not in self.layers]
        if unknown:
            raise ValueError(f"excluded: {unknown} are not summary layers ({', '.join(self.layers)})")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be an int >= 1 (or None: the size of the model's output), "
                             f"got {num_classes!r}")
        self.device = resolve_device(device) if device is not None else _model_device(model)
        _, why = choose_backend(backend, self.device)
        log.info(why)  # once per aggregation: which backend counts, and why that one
        self.engine: Backend = get_backend(backend, self.device)
        self.rule = selection
        self.params = {"selection": selection.to_json(), "influence": bool(influence), "influence_k": int(influence_k),
                       "spatial_stride": int(spatial_stride), "label_source": label_source,
                       "excluded": {k: sorted(int(c) for c in v) for k, v in (excluded or {}).items()},
                       "examples": examples, "classes": None if classes is None else [int(c) for c in classes],
                       "backend": self.engine.name}
        self.params = count_dtype_params(self.params, count_dtype)
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be None, torch.bfloat16 or torch.float16, got {amp_dtype!r}")
        if amp_dtype is not None:  # recorded only when set: runs without autocast keep their parameters
            self.params["amp_dtype"] = AMP_DTYPES[amp_dtype]
        if classes is not None and (not classes or len(set(self.params["classes"])) != len(classes)
                                    or min(classes) < 0):
            raise ValueError(f"classes must be distinct non-negative class indices (at least one), got {list(classes)!r}")
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.num_classes, self.edges, self.input_shape = num_classes, edges, input_shape
        self.class_names = None if class_names is None else list(class_names)
        self.modules = dict(model.named_modules())
        self.captured: dict[str, torch.Tensor] = {}
        self._result: SummitResult | None = None
        self.interrupted = False  # True if an update failed half-way through adding its counts
        self._warned_train_mode = False
        self._updates = 0  # calls of update, for naming batches in errors
        if channels_last:
            model.to(memory_format=torch.channels_last)

    @property
    def result(self) -> SummitResult:
        """The counts so far (zero counts if no image was seen): the live object later updates add
        to; ``.to(device)`` (or ``save``) takes a snapshot."""
        if self._result is None:
            shape = self._probe_shape()
            if shape is None:
                raise ValueError("no images were aggregated, so the layers cannot be discovered; pass input_shape=(C, H, W)")
            with self._model_in_eval(), torch.inference_mode():
                self._setup(torch.zeros(1, *shape, device=self.device))
        return self._result

    def fingerprint(self, dataset_length: int | None = None, loader=None) -> dict:
        """What identifies this run's configuration (compared when resuming from a checkpoint);
        ``loader`` is the loader's own fingerprint, if it has one (JSON-able, e.g.
        :meth:`summit_fast.images.ImageLoader.fingerprint`: files, batch size, order)."""
        return {"model weights": model_digest(self.model), "layers": self.layers,
                "parameters": counting_params(self.params),
                "predictions": self.predictions,
                "number of classes": self.num_classes, "edges": _edges_json(self.edges),
                "dataset length": dataset_length, "loader": loader}

    def resume(self, result: SummitResult) -> None:
        """Continue counting on top of ``result`` (e.g. a checkpoint) made with the same options,
        weights and model graph (compared when the input shape is known: ``input_shape`` or
        ``model.INPUT_SHAPE``; a conv's padding or stride changes the graph, not the weights)."""
        mine = {k: v for k, v in counting_params(self.params).items() if k not in _DERIVED_PARAMS}
        theirs = {k: v for k, v in counting_params(result.params).items() if k not in _DERIVED_PARAMS}
        if mine != theirs or result.layers != self.layers:
            raise ValueError("cannot resume from a result made with different layers or parameters")
        if "model_digest" in result.params and result.params["model_digest"] != model_digest(self.model):
            raise ValueError("cannot resume from a result made with different model weights")
        shape = self._probe_shape()
        if shape is not None:
            with self._model_in_eval(), torch.inference_mode():
                graph, _ = self._discover(torch.zeros(1, *shape, device=self.device))
            if graph.to_json() != result.graph.to_json():
                raise ValueError("cannot resume from a result made with a different model graph (layers, convs, "
                                 "their padding or strides)")
        resumed = result.to(self.device)
        resumed.params = with_backends(resumed.params, self.engine.name)  # the counts to come are this backend's
        self._adopt(resumed)

    @property
    def images_counted(self) -> int:
        """Images counted so far."""
        return 0 if self._result is None else self._result.num_images

    # -- one batch ----------------------------------------------------------------------
    def unpack(self, batch, index: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a loader item into (images, labels), as tensors sharing the memory of arrays of
        other libraries, with a clear error for anything else."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            return as_tensor(batch[0], f"batch {index}: images"), _as_labels(batch[1], f"batch {index}: labels")
        if is_array(batch) and self.params["label_source"] == "prediction":
            return as_tensor(batch, f"batch {index}: images"), None
        length = f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else ""
        raise TypeError(f"the loader must yield (images, labels) pairs; batch {index} is {type(batch).__name__}{length}")

    def update(self, images: torch.Tensor, labels=None, batch_index: int | None = None,
               image_ids: torch.Tensor | None = None) -> None:
        """Add one batch; on any error nothing of this batch is counted.

        ``batch_index`` names the batch in error messages; default: how many updates came before.
        ``image_ids`` (B,) name the images in dataset examples; default: their position in the
        stream of images this Aggregator has counted.

        ``images`` and ``labels`` may be torch tensors, NumPy or CuPy arrays or any object with
        ``__dlpack__`` or ``__cuda_array_interface__``: they are shared, not copied (see
        :mod:`summit_fast.arrays`), and with CuPy arrays the update runs on CuPy's current
        stream. Images on the CPU are copied to the model's device; images on another device
        (another GPU) are refused.
        """
        if batch_index is None:
            batch_index = self._updates
        if foreign(images, labels):
            with caller_stream(images, labels):
                return self.update(as_tensor(images, f"batch {batch_index}: images"),
                                   _as_labels(labels, f"batch {batch_index}: labels"), batch_index, image_ids)
        self._updates += 1
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"batch {batch_index}: images must be a 4-D tensor (B, C, H, W), got {shape}")
        if labels is None and self.params["label_source"] == "target":
            raise ValueError(f"batch {batch_index}: labels are required with label_source='target'")
        if self.interrupted:
            raise RuntimeError("an earlier update was interrupted while adding its counts; this Aggregator's "
                               "counts are incomplete (resume from a checkpoint instead)")
        if images.shape[0] == 0:
            return
        if _elsewhere(images.device, self.device):
            raise ValueError(f"batch {batch_index}: images are on {images.device} but the model is on {self.device}; "
                             f"move them to {self.device} (images on the CPU are copied there)")
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._model_in_eval(), torch.inference_mode():
            if self._result is None:
                self._setup(images[:1])
            if image_ids is None:  # on the device: images_counted would read the count back to the host
                image_ids = self._result.images_per_class.sum() + torch.arange(images.shape[0], device=self.device)
            handles = self._hooks()
            try:
                self._process(images, labels, batch_index, image_ids.to(self.device, torch.long))
            finally:
                for h in handles:
                    h.remove()
                self.captured.clear()

    # -- internals ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _model_in_eval(self):
        was_training = self.model.training
        if was_training and not self._warned_train_mode:
            warnings.warn("aggregate: the model is in train mode; running it in eval mode (its mode is restored)",
                          stacklevel=3)
            self._warned_train_mode = True
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _probe_shape(self) -> Sequence[int] | None:
        """(C, H, W) of an image to discover the model graph on without a batch, if known."""
        return self.input_shape or getattr(self.model, "INPUT_SHAPE", None)

    def _discover(self, probe: torch.Tensor) -> tuple[ModelGraph, object]:
        """The model graph, found on one image, and the model's output for it (kept from the
        discovery's own forward pass: a second pass would cost a quarter of a small run)."""
        outputs = []
        handle = self.model.register_forward_hook(lambda module, inputs, output: outputs.append(output))
        try:
            with self._autocast():
                if self.edges is not None:
                    graph = graph_from_edges(self.model, probe, self.layers, self.edges)
                else:
                    graph = discover(self.model, probe, self.layers)
        finally:
            handle.remove()
        return graph, outputs[-1]

    def _setup(self, probe: torch.Tensor) -> None:
        """Discover the model graph on one image and allocate zero counts."""
        graph, output = self._discover(probe)
        num_classes = self.num_classes or _infer_num_classes(output)
        classes = self.params["classes"]
        if classes is not None and max(classes, default=0) >= num_classes:
            raise ValueError(f"classes: {max(classes)} is out of range for {num_classes} classes")
        scores = _logits_shape(output) == (1, num_classes)
        if self.predictions and not scores:
            raise ValueError(f"predictions=True needs the model's output to be (B, {num_classes}) class scores, "
                             f"got {_logits_shape(output)} for one image")
        # The weights' digest keeps results of other weights from being merged.
        params = dict(self.params, predictions=scores if self.predictions is None else self.predictions,
                      num_classes=int(num_classes), model_digest=model_digest(self.model))
        rows = len(classes) if classes is not None else num_classes
        with torch.inference_mode(False):  # ordinary tensors: users may edit the counts afterwards
            self._adopt(SummitResult.zeros(graph, rows, params, self.class_names, self.device))

    def _adopt(self, result: SummitResult) -> None:
        """Continue counting into ``result``."""
        self.params = dict(result.params)
        self.record_predictions = bool(self.params.get("predictions"))
        self.excluded = _excluded_masks(self.params["excluded"], result.graph, self.device)
        self.convs = ({e.conv: (self.modules[e.conv], e.spec) for e in result.graph.edges}
                      if self.params["influence"] else {})
        self.skips = result.graph.counted_skips() if self.params["influence"] else []
        # layers whose channel maxima dataset examples or skip counts use
        self.maxima_layers = set(result.examples) | {l for s in self.skips for l in (s.source, s.target)}
        # row of each class index (-1: not counted)
        self.row_of = torch.full((self.params["num_classes"],), -1, dtype=torch.long, device=self.device)
        self.row_of[torch.tensor(result.class_ids, dtype=torch.long, device=self.device)] = torch.arange(
            result.num_classes, device=self.device)
        self._result = result

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

    def _process(self, images: torch.Tensor, labels: torch.Tensor | None, index: int, image_ids: torch.Tensor) -> None:
        result = self._result
        with self._autocast():
            output = self.model(images)
        if self.params["label_source"] == "prediction":
            labels = _logits(output).argmax(dim=1)
        check_labels(labels, images.shape[0], self.params["num_classes"], what=f"batch {index}: labels")
        labels = labels.to(self.device, torch.long)
        rows = self.row_of[labels]
        if bool((rows < 0).any()):
            raise ValueError(f"batch {index}: label {int(labels[rows < 0][0])} is not one of the classes being "
                             f"aggregated (classes={self.params['classes']})")
        self._check_captured(index)
        _check_count_rows(result, index)
        # index_add, not bincount: bincount sizes its output from the data, a host sync on a GPU.
        images_per_class = result.images_per_class.index_add(0, rows, torch.ones_like(rows, dtype=result.images_per_class.dtype))
        check_count_capacity(images_per_class, result.count_dtype, result.class_ids, f"batch {index}")
        # Everything is validated: from here on the whole batch is counted.
        self.interrupted = True
        maxima = {}  # layer -> (channel maxima, their positions) for skips and examples, from the activation pass
        for layer in self.layers:
            acts = self.captured[f"layer:{layer}"]
            if layer in self.maxima_layers:
                maxima[layer] = empty_maxima(acts)
            # rows index the counts (labels and row counts checked above): no per-op label pass,
            # which on a GPU would be a host synchronisation per op.
            self.engine.activation_update(acts, rows, result.activation[layer], self.rule, self.excluded.get(layer),
                                          maxima.get(layer), labels_checked=True)
        for conv, (module, spec) in self.convs.items():
            self.engine.influence_update(self.captured[f"conv:{conv}"], module.weight, spec, rows,
                                         result.influence[conv], self.params["influence_k"],
                                         self.params["spatial_stride"], labels_checked=True)
        result.images_per_class.copy_(images_per_class)
        self._count_skips(result, rows, maxima)
        if self.record_predictions:
            _add_predictions(result, output, rows, self.row_of)
        for layer, state in result.examples.items():
            acts = self.captured[f"layer:{layer}"]
            candidates = batch_candidates(*maxima[layer], acts.shape[3], image_ids)
            for name, merged in merge_examples(state, candidates, self.params["examples"]).items():
                state[name].copy_(merged)  # in place: the state stays an ordinary tensor
        self.interrupted = False

    def _count_skips(self, result: SummitResult, rows: torch.Tensor, maxima: dict) -> None:
        """skip[k, c] += 1 for images of class k that select both ends of skipped channel c. The
        selections are SPEC.md A's, computed with the reference function (exactly what every
        backend selects)."""
        selected = {}
        for skip in self.skips:
            for layer in (skip.source, skip.target):
                if layer not in selected:
                    selected[layer] = select_channels(maxima[layer][0], self.rule, self.excluded.get(layer))
            both = (selected[skip.source][:, skip.source_offset:skip.source_offset + skip.channels]
                    & selected[skip.target][:, skip.target_offset:skip.target_offset + skip.channels])
            result.skip[skip.key].index_add_(0, rows, both.to(result.count_dtype))

    def _check_captured(self, index: int) -> None:
        for key in [f"layer:{l}" for l in self.layers] + [f"conv:{c}" for c in self.convs]:
            if key not in self.captured:
                kind, name = key.split(":", 1)
                raise RuntimeError(f"batch {index}: {_CAPTURED[kind]} {name!r} did not run in the forward pass")
        # In the order the forward produced them, so that the first non-finite tensor named is
        # where NaN or Inf appeared; a conv's input is often a summary layer's output: once each.
        tensors = {}  # id -> (what, name, tensor)
        for key, t in self.captured.items():
            kind, name = key.split(":", 1)
            what = _CAPTURED[kind]
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"batch {index}: {what} {name!r} must be a 4-D (B, C, H, W) tensor, got {shape}")
            if t.numel():
                tensors.setdefault(id(t), (what, name, t))
        # A tensor's min and max are finite iff every element is (NaN propagates through both):
        # one read each, without isfinite's tensor of booleans (2.7x slower on the CPU), and one
        # host synchronisation per batch on a GPU rather than one per tensor.
        extremes = [torch.stack(torch.aminmax(t)).double() for _, _, t in tensors.values()]  # exact for every float type
        if extremes and not bool(torch.isfinite(torch.cat(extremes)).all()):
            what, name, _ = next(v for v, e in zip(tensors.values(), extremes) if not bool(torch.isfinite(e).all()))
            raise FloatingPointError(f"batch {index}: NaN or Inf in the {what} {name!r}")


def _check_count_rows(result: SummitResult, index: int) -> None:
    """Every count tensor the ops write must still have one row per class: the ops trust the
    rows (``labels_checked``), and a result's tensors are the user's to replace."""
    for kind, tensors in (("activation", result.activation), ("influence", result.influence)):
        for name, counts in tensors.items():
            if counts.dim() == 0 or counts.shape[0] != result.num_classes:
                raise ValueError(f"batch {index}: the {kind} counts of {name!r} have shape {tuple(counts.shape)}, "
                                 f"not one row per class ({result.num_classes})")


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


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that can be used here; a clear ValueError otherwise."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (driver missing, or CUDA_VISIBLE_DEVICES hides them)")
            raise ValueError(f"device {str(device)!r}: CUDA is not available here: {why}; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


def _as_labels(labels, what: str) -> torch.Tensor | None:
    """Labels as a tensor: arrays (see :mod:`summit_fast.arrays`) shared, other sequences copied."""
    if labels is None or isinstance(labels, torch.Tensor):
        return labels
    return as_tensor(labels, what) if is_array(labels) else torch.as_tensor(labels)


def _elsewhere(device: torch.device, model_device: torch.device) -> bool:
    """Whether ``device`` is neither the CPU (whose batches are copied to the model's device, as
    a DataLoader's are) nor the model's device ("cuda" being the current CUDA device)."""
    if device.type == "cpu" or device == model_device:
        return False
    current = model_device.type == "cuda" and model_device.index is None
    return not (current and device.type == "cuda" and device.index == torch.cuda.current_device())


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


    # -- setup on the first batch --------------------------------------------------------
def _logits(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the model's output must be (B, num_classes) scores to infer classes or predictions, got {shape}")
    return output


def _logits_shape(output) -> tuple | None:
    try:
        return tuple(_logits(output).shape)
    except ValueError:
        return None


def _add_predictions(result: SummitResult, output, rows: torch.Tensor, row_of: torch.Tensor) -> None:
    """Confusion counts (predictions of classes outside the result's are left out), the summed
    top-1 probability per true class and its histogram in whole percent."""
    # Without reading anything back to the host (a synchronisation on a GPU): the probability
    # test is a device flag, and predictions outside the result's classes add 0.
    scores = _logits(output)
    if scores.dtype != torch.float64:  # float64 stays: its finite scores may lie beyond float32's range
        scores = scores.float()
    is_probability = (scores >= 0).all() & torch.isclose(scores.sum(1), torch.ones_like(scores[:, 0]), atol=1e-3).all()
    probability, predicted = torch.where(is_probability, scores, scores.softmax(dim=1)).max(dim=1)
    predicted_rows = row_of[predicted]
    known = predicted_rows >= 0
    k = result.num_classes
    result.confusion.view(-1).index_add_(0, rows * k + predicted_rows.clamp(min=0), known.to(result.confusion.dtype))
    result.top1_probability_fixed.index_add_(0, rows, probability_to_fixed(probability))
    histogram = result.top1_probability_histogram
    histogram.view(-1).index_add_(0, rows * histogram.shape[1] + probability_to_percent(probability),
                                  torch.ones_like(rows, dtype=histogram.dtype))


def _infer_num_classes(output) -> int:
    try:
        return int(_logits(output).shape[1])
    except ValueError as exc:
        raise ValueError(f"{exc}; pass num_classes=") from None


def _edges_json(edges) -> list | None:
    if edges is None:
        return None
    return [e.to_json() if hasattr(e, "to_json") else dict(e) for e in edges]


def _dataset_length(loader) -> int | None:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


def _excluded_masks(excluded: dict, graph: ModelGraph, device) -> dict[str, torch.Tensor]:
    masks = {}
    for layer, channels in excluded.items():
        c = graph.channels[layer]
        bad = [ch for ch in channels if not 0 <= ch < c]
        if bad:
            raise ValueError(f"excluded: channel(s) {bad} out of range for layer {layer!r} with {c} channels")
        mask = torch.zeros(c, dtype=torch.bool, device=device)
        mask[list(channels)] = True
        masks[layer] = mask
    return masks
