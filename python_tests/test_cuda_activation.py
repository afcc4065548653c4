"""The CUDA activation kernel (csrc/cuda/activation.cu) against the float64 torch reference,
with exact integer equality: executed on the CPU here (``CudaBackend(emulate=True)``, the
same kernel source nvcc compiles), and compiled on a GPU when one is present, where its counts
must also equal the emulated ones. The fused maxima must equal ``channel_max_positions``.

Emulated kernels are slow (every CUDA thread is a fiber), so the grids are small but cover
what the kernel distinguishes: NCHW (spatial-inner tiles, small planes several to a warp),
channels_last (channel-inner tiles), a strided view (neither: positions walked by index),
positions split over blocks (big planes, few images), every dtype, ties at the cut.
"""

import pytest
import torch

import summit_fast.backends.base as base
from summit_fast._native import import_error, native
from summit_fast.backends.base import empty_maxima
from summit_fast.backends.cuda import CudaBackend
from summit_fast.rules import mass, topk

from test_cpu_backend import DTYPES, REF, RULES, _labels, _layout, _random
from test_examples_fused import _assert_maxima_exact, _data, _special_cases

pytestmark = pytest.mark.skipif(native is None, reason=f"summit_fast._C is not built: {import_error}")


def _gpu_reason() -> str | None:
    if native is None or not native.with_cuda or not torch.cuda.is_available():
        return "needs a CUDA device"
    return None


@pytest.fixture(scope="module", params=["emulated", "gpu"])
def engine(request):
    """(backend, device): the kernels executed on the CPU, or compiled on a GPU."""
    if request.param == "emulated":
        return CudaBackend(emulate=True), torch.device("cpu")
    if _gpu_reason():
        pytest.skip(_gpu_reason())
    return CudaBackend(), torch.device("cuda")


def _on(device, t):
    """``t`` on ``device`` with the very same strides (a strided view stays one)."""
    if t is None or t.device == device:
        return t
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    out.copy_(t)
    return out


def _update(engine, acts, labels, counts, rule, excluded=None, maxima=False):
    """One update on the engine's device; counts (and the maxima, if asked) come back on the CPU."""
    backend, device = engine
    dev_counts = counts.to(device)
    found = empty_maxima(_on(device, acts)) if maxima else None
    if found is not None:
        found[0].fill_(float("nan"))
        found[1].fill_(-7)
    backend.activation_update(_on(device, acts), labels.to(device), dev_counts, rule, _on(device, excluded), found)
    counts.copy_(dev_counts.cpu())
    return None if found is None else (found[0].cpu(), found[1].cpu())


def _check(engine, acts, labels, num_classes, rule, excluded=None, maxima=False):
    want = torch.zeros(num_classes, acts.shape[1], dtype=torch.int32)
    got = torch.zeros_like(want)
    REF.activation_update(acts, labels, want, rule, excluded)
    found = _update(engine, acts, labels, got, rule, excluded, maxima)
    assert torch.equal(got, want), f"{rule}, excluded={excluded is not None}: {int((got - want).abs().sum())} differ"
    if maxima:
        _assert_maxima_exact(*found, acts)
    return want


def _excluded(c):
    mask = torch.zeros(c, dtype=torch.bool)
    mask[[0, 7 % c, c - 1]] = True
    return mask


# ------------------------------------------------------------------------------ the grid
# (5, 50, 7, 7): 7x7 planes, a warp per plane; (1, 50, 13, 13): batch 1; (2, 130, 3, 5): odd
# planes of 15 (16 lanes each, two to a warp) and channels beyond a channel-inner tile.
@pytest.mark.parametrize("shape", [(5, 50, 7, 7), (1, 50, 13, 13), (2, 130, 3, 5)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_cuda_activation_matches_reference(engine, shape, dtype, layout):
    acts = _random(shape, DTYPES[dtype], layout, seed=sum(shape))
    labels = _labels(shape[0], 3, seed=shape[1])
    excluded = _excluded(shape[1])
    # both kernel variants: without the maxima and with them (fused)
    for rule, excl, maxima in ((mass(0.01), None, False), (mass(1.0), excluded, True),
                               (topk(5), excluded, False), (topk(60), None, True)):
        assert _check(engine, acts, labels, 3, rule, excl, maxima).sum() > 0


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_cuda_activation_every_rule_and_many_classes(engine, layout):
    acts = _random((4, 50, 9, 11), torch.float32, layout, seed=11)
    labels = torch.tensor([999, 0, 998, 999])  # labels near num_classes
    for rule in RULES:
        for excl in (None, _excluded(50)):
            _check(engine, acts, labels, 1000, rule, excl)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_cuda_activation_ties_lower_index_first(engine, dtype, layout):
    """Integer data: many channels share the image's max, so the cut falls inside a tie."""
    acts = _data((3, 40, 5, 6), dtype, layout, "ties", seed=5)
    labels = torch.tensor([0, 1, 0])
    for rule in (topk(1), topk(3), topk(17), mass(0.05), mass(0.3), mass(0.77)):
        _check(engine, acts, labels, 2, rule, _excluded(40) if rule == mass(0.3) else None, maxima=True)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided", "nchw-cropped", "nhwc-cropped"])
def test_cuda_activation_positions_split_over_blocks(engine, layout):
    """Few images x channels with big planes: each channel's positions are shared out among
    blocks, whose partial maxima the selection merges (first position across blocks). Cropped
    planes (rows that do not follow each other) take the kernel's position-by-index path."""
    for kind in ("random", "ties"):
        cropped = layout.endswith("-cropped")
        acts = _data((1, 3, 57, 58 if cropped else 57), "f32", layout.removesuffix("-cropped"), kind, seed=2)
        acts = acts[:, :, :, 1:] if cropped else acts
        _check(engine, acts, torch.tensor([1]), 2, mass(0.5), maxima=True)
        _check(engine, acts, torch.tensor([0]), 2, topk(2), maxima=True)


def test_cuda_activation_large_channel_count(engine):
    """5000 channels (more than 48 KiB of float64 keys): the selection has no size limit."""
    acts = _random((2, 5000, 2, 2), torch.float64, "nchw", seed=1)
    labels = torch.tensor([1, 1])
    for rule in (mass(0.3), topk(100)):
        _check(engine, acts, labels, 2, rule)


def test_cuda_activation_no_positive_mass_selects_nothing(engine):
    acts = -torch.rand(4, 50, 7, 7, generator=torch.Generator().manual_seed(0)) - 0.1
    labels = torch.tensor([0, 1, 2, 0])
    assert _check(engine, acts, labels, 3, mass(0.01)).sum() == 0
    assert _check(engine, acts, labels, 3, topk(3)).sum() == 12  # top-k still picks


def test_cuda_activation_counts_accumulate_int16(engine):
    """Counts add up over calls, in int32 and in int16 (through the base class's scratch)."""
    for dtype in (torch.int32, torch.int16):
        want = torch.zeros(3, 50, dtype=dtype)
        got = torch.zeros_like(want)
        for seed in range(3):
            acts = _random((4, 50, 6, 5), torch.float32, "nhwc", seed)
            labels = _labels(4, 3, seed)
            REF.activation_update(acts, labels, want, mass(0.05))
            _update(engine, acts, labels, got, mass(0.05))
        assert torch.equal(got, want) and int(want.sum()) > 12


@pytest.mark.parametrize("name,acts", _special_cases(), ids=[n for n, _ in _special_cases()])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_cuda_activation_maxima_special_values(engine, name, acts, layout):
    """Signed zeros, float64 values that round to one float, -inf, maxima in the last
    positions, a plane of a million positions."""
    acts = _layout(acts, layout)
    _check(engine, acts, torch.zeros(acts.shape[0], dtype=torch.int64), 1, topk(1), maxima=True)


def test_cuda_activation_maxima_come_from_the_same_pass(engine, monkeypatch):
    monkeypatch.setattr(base, "channel_max_positions", lambda acts: pytest.fail("second pass over the activations"))
    acts = _random((2, 20, 5, 7), torch.bfloat16, "nhwc", seed=3)
    _check(engine, acts, torch.tensor([0, 1]), 2, mass(0.1), maxima=True)


# ------------------------------------------------------------------------------ GPU only
@pytest.mark.skipif(_gpu_reason() is not None, reason="needs a CUDA device")
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_cuda_activation_gpu_equals_emulated(layout):
    """The compiled kernel and its CPU execution count the same, on the same inputs, also on a
    non-default stream."""
    gpu, emulated = (CudaBackend(), torch.device("cuda")), (CudaBackend(emulate=True), torch.device("cpu"))
    for shape in ((8, 70, 14, 14), (2, 6, 64, 64), (3, 300, 1, 1)):
        acts = _random(shape, torch.bfloat16, layout, seed=shape[1])
        labels = _labels(shape[0], 5, seed=1)
        for rule in (mass(0.01), topk(7)):
            on_cpu = torch.zeros(5, shape[1], dtype=torch.int32)
            on_gpu = torch.zeros_like(on_cpu)
            cpu_max = _update(emulated, acts, labels, on_cpu, rule, maxima=True)
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                gpu_max = _update(gpu, acts, labels, on_gpu, rule, maxima=True)
            assert torch.equal(on_gpu, on_cpu)
            assert torch.equal(gpu_max[0], cpu_max[0]) and torch.equal(gpu_max[1], cpu_max[1])
