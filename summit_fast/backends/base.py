"""The backend interface: two per-batch ops (SPEC.md A and B) with shared argument checks.

Every backend subclasses :class:`Backend` and implements ``_activation_update`` and
``_influence_update``; the public methods validate all arguments first, so a bad call raises
a clear error before any count is written.
"""

from __future__ import annotations

import torch

from ..arrays import as_tensor, caller_stream, foreign
from ..convspec import ConvSpec
from ..examples import channel_max_positions
from ..rules import SelectionRule

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_labels(labels: torch.Tensor, batch: int, num_classes: int, what: str = "labels", values: bool = True) -> None:
    """Labels must be a 1-D integer tensor of length ``batch`` with values in [0, num_classes)
    (the values are not looked at with ``values=False``)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(f"{what} must have an integer dtype (class indices), got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"{what} must have shape ({batch},) to match the batch, got {tuple(labels.shape)}")
    if not values or not batch:
        return
    lowest, highest = torch.stack(torch.aminmax(labels)).tolist()  # one pass, one read back
    if lowest < 0 or highest >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"{what}: class index {bad} is out of range [0, {num_classes})")


def _check_float4d(t: torch.Tensor, what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{what} must be 4-D (B, C, H, W), got shape {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{what} must be float32, float16, bfloat16 or float64, got {t.dtype}")


_COUNT_DTYPES = (torch.int32, torch.int16)


def _check_counts(counts: torch.Tensor, shape: tuple, device: torch.device) -> None:
    if not isinstance(counts, torch.Tensor) or counts.dtype not in _COUNT_DTYPES:
        got = counts.dtype if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise TypeError(f"counts must be an int32 or int16 tensor, got {got}")
    if tuple(counts.shape) != tuple(shape):
        raise ValueError(f"counts must have shape {tuple(shape)}, got {tuple(counts.shape)}")
    if not counts.is_contiguous():
        raise ValueError("counts must be contiguous")
    if counts.device != device:
        raise ValueError(f"counts is on {counts.device} but the input is on {device}")


def empty_maxima(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised (values, positions) outputs for :meth:`Backend.activation_update`'s
    ``maxima``: (B, C) float32 and int64 on the activations' device."""
    b, c = acts.shape[:2]
    return (torch.empty(b, c, dtype=torch.float32, device=acts.device),
            torch.empty(b, c, dtype=torch.int64, device=acts.device))


def _check_maxima(maxima, batch: int, channels: int, device: torch.device) -> None:
    if not (isinstance(maxima, (tuple, list)) and len(maxima) == 2
            and all(isinstance(t, torch.Tensor) for t in maxima)):
        raise TypeError(f"maxima must be a pair (values, positions) of tensors, got {type(maxima).__name__}")
    for t, dtype, what in ((maxima[0], torch.float32, "values"), (maxima[1], torch.int64, "positions")):
        if t.dtype != dtype:
            raise TypeError(f"maxima {what} must be a {dtype} tensor, got {t.dtype}")
        if tuple(t.shape) != (batch, channels):
            raise ValueError(f"maxima {what} must have shape {(batch, channels)}, got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"maxima {what} must be contiguous")
        if t.device != device:
            raise ValueError(f"maxima {what} is on {t.device} but the activations are on {device}")


class Backend:
    """Base class of every backend; see the module docstring."""

    name = "base"
    # Count types each op's kernels add into directly; any other allowed type is counted
    # through an int32 scratch (see _count_in).
    activation_count_dtypes: tuple[torch.dtype, ...] = (torch.int32,)
    influence_count_dtypes: tuple[torch.dtype, ...] = (torch.int32,)
    #: True when the backend's entry points check every label value themselves before writing
    #: any count (the cpu backend's C++ does, with the same message): the Python check then skips
    #: its pass over the labels, which from a cold cache costs more than a small update.
    checks_label_values = False

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        """None when this backend can run on ``device``, else why not (in words)."""
        raise NotImplementedError

    def activation_update(self, acts: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                          rule: SelectionRule, excluded: torch.Tensor | None = None,
                          maxima: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                          labels_checked: bool = False) -> None:
        """Add one batch to the activation counts (SPEC.md A).

        acts: (B, C, H, W) float tensor, any memory layout. labels: (B,) integer class indices.
        counts: (K, C) int32 or int16, updated in place (the caller keeps int16 from overflowing).
        excluded: optional (C,) bool mask of channels treated as zero. maxima: optional outputs
        (values, positions), (B, C) float32 and int64, contiguous (see :func:`empty_maxima`),
        filled with what :func:`summit_fast.examples.channel_max_positions` returns: each
        channel's max (excluded channels too) and the flat position h * W + w of its first occurrence.
        labels_checked: the caller guarantees that every label indexes a row of ``counts``
        (aggregate checks each batch's labels once, and the row count of every count tensor);
        the op's own pass over the labels, a host synchronisation on a GPU, is then skipped.

        acts, labels, counts and excluded may also be NumPy or CuPy arrays or other DLPack
        objects (see :mod:`summit_fast.arrays`): they are shared, not copied, so such counts are
        updated in place; with CuPy arrays the update runs on CuPy's current stream.
        """
        if foreign(acts, labels, counts, excluded):
            with caller_stream(acts, labels, counts, excluded):
                return self.activation_update(
                    as_tensor(acts, "activations"), as_tensor(labels, "labels"),
                    as_tensor(counts, "counts", writable=True), rule,
                    None if excluded is None else as_tensor(excluded, "excluded"), maxima,
                    labels_checked=labels_checked)
        _check_float4d(acts, "activations")
        b, c = acts.shape[:2]
        _check_counts(counts, (counts.shape[0] if counts.dim() == 2 else -1, c), acts.device)
        check_labels(labels, b, counts.shape[0],
                     values=self._checks_label_values_here(counts, self.activation_count_dtypes, labels_checked))
        if excluded is not None and (excluded.dtype != torch.bool or tuple(excluded.shape) != (c,)):
            raise ValueError(f"excluded must be a bool mask of shape ({c},), got {excluded.dtype} {tuple(excluded.shape)}")
        if maxima is not None:
            _check_maxima(maxima, b, c, acts.device)
        if b == 0:
            return
        excluded = None if excluded is None else excluded.to(acts.device)
        if maxima is None:
            def update(rows, into):
                self._activation_update(acts, rows, into, rule, excluded)
        else:
            def update(rows, into):
                self._activation_update_maxima(acts, rows, into, rule, excluded, maxima)
        self._count_in(counts, labels.to(acts.device), self.activation_count_dtypes, update)

    def influence_update(self, x: torch.Tensor, weight: torch.Tensor, conv: ConvSpec, labels: torch.Tensor,
                         counts: torch.Tensor, k: int = 5, spatial_stride: int = 1, *,
                         labels_checked: bool = False) -> None:
        """Add one batch to a conv edge's influence counts (SPEC.md B).

        x: the conv's input (B, C_in, H, W). weight: (C_out, C_in/groups, kh, kw).
        counts: (K, C_out, C_in/groups) int32 or int16, updated in place; entry [k, j, s] is source
        channel ``group(j) * C_in/groups + s`` (for groups=1 simply input channel s), so grouped
        and depthwise convs store only the sources a target can have. labels_checked: as for
        :meth:`activation_update`; x, weight, labels and counts may be arrays as there.
        """
        if foreign(x, weight, labels, counts):
            with caller_stream(x, weight, labels, counts):
                return self.influence_update(
                    as_tensor(x, "conv input"), as_tensor(weight, "conv weight"), conv, as_tensor(labels, "labels"),
                    as_tensor(counts, "counts", writable=True), k, spatial_stride, labels_checked=labels_checked)
        _check_float4d(x, "conv input")
        _check_float4d(weight, "conv weight")
        b, c_in, h, w = x.shape
        c_out, cin_g, kh, kw = weight.shape
        if c_in % conv.groups or c_out % conv.groups or cin_g * conv.groups != c_in:
            raise ValueError(f"conv weight {tuple(weight.shape)} with groups={conv.groups} does not fit an input with {c_in} channels")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"influence k must be a positive int, got {k!r}")
        if isinstance(spatial_stride, bool) or not isinstance(spatial_stride, int) or spatial_stride < 1:
            raise ValueError(f"spatial_stride must be a positive int, got {spatial_stride!r}")
        if weight.device != x.device:
            raise ValueError(f"conv weight is on {weight.device} but its input is on {x.device}")
        _check_counts(counts, (counts.shape[0] if counts.dim() == 3 else -1, c_out, cin_g), x.device)
        check_labels(labels, b, counts.shape[0],
                     values=self._checks_label_values_here(counts, self.influence_count_dtypes, labels_checked))
        conv.output_size(h, w, kh, kw, spatial_stride)  # raises if the kernel does not fit
        if b == 0:
            return
        self._count_in(counts, labels.to(x.device), self.influence_count_dtypes,
                       lambda rows, into: self._influence_update(x, weight, conv, rows, into, k, spatial_stride))

    def _checks_label_values_here(self, counts: torch.Tensor, native_dtypes: tuple, labels_checked: bool) -> bool:
        """Whether the Python check must look at the label values: not when the caller did
        (``labels_checked``), nor when the kernels do and see the labels themselves; kernels
        counting into a scratch (see _count_in) see only its rows."""
        return not labels_checked and (not self.checks_label_values or counts.dtype not in native_dtypes)

    @staticmethod
    def _count_in(counts: torch.Tensor, labels: torch.Tensor, native_dtypes: tuple, update) -> None:
        """Run ``update(rows, into)`` so that it adds into ``counts``: directly when the kernels
        support the count type (``native_dtypes``), else into an int32 scratch with one row per
        image, whose rows are then added to their labels' rows (exact: each scratch entry is 0 or
        1). One row per image rather than per distinct class: finding the classes
        (``torch.unique``) would be a host synchronisation on a GPU, and a shuffled batch holds
        nearly as many classes as images anyway."""
        if counts.dtype in native_dtypes:
            update(labels, counts)
            return
        images = torch.arange(labels.shape[0], device=counts.device)
        scratch = torch.zeros((labels.shape[0], *counts.shape[1:]), dtype=torch.int32, device=counts.device)
        update(images, scratch)
        counts.index_add_(0, labels, scratch.to(counts.dtype))

    # -- implemented by each backend; arguments are already validated ---------------------
    def _activation_update(self, acts, labels, counts, rule, excluded) -> None:
        raise NotImplementedError

    def _activation_update_maxima(self, acts, labels, counts, rule, excluded, maxima) -> None:
        """The update, and ``maxima`` filled. This default makes a second pass over the
        activations; a backend that finds the maxima in its own pass overrides it."""
        self._activation_update(acts, labels, counts, rule, excluded)
        for out, found in zip(maxima, channel_max_positions(acts)):
            out.copy_(found)

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride) -> None:
        raise NotImplementedError
