"""Hostile and unusual input: bounded memory over many batches, varying image sizes,
duplicate layer names."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import summit_fast

from tiny_models import TinyInception

HERE = Path(__file__).resolve().parent


def net():
    torch.manual_seed(0)
    return TinyInception().eval()


def test_peak_memory_stays_flat_over_many_batches():
    proc = subprocess.run([sys.executable, str(HERE / "memory_child.py"), "torch", "80"], cwd=HERE,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    at_10th, at_end = map(int, proc.stdout.split())
    assert at_end - at_10th < 16 * 1024, f"peak RSS grew by {(at_end - at_10th) / 1024:.1f} MiB after the 10th batch"


def test_images_of_varying_size_across_batches():
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 3, s, s, generator=g), torch.randint(0, 5, (3,), generator=g)) for s in (9, 13, 11, 9)]
    whole = summit_fast.aggregate(net(), batches, backend="torch", progress=False)
    parts = [summit_fast.aggregate(net(), [b], backend="torch", progress=False) for b in batches]
    assert whole == summit_fast.SummitResult.merge(parts)


def test_duplicate_layer_names_are_refused():
    with pytest.raises(ValueError, match=r"duplicate layer name\(s\) \['mix1'\]"):
        summit_fast.aggregate(net(), [], layers=["mix1", "mix2", "mix1"], progress=False)


@pytest.mark.parametrize("classes", [[], [1, 1], [-1]])
def test_classes_must_be_distinct_class_indices_and_at_least_one(classes):
    with pytest.raises(ValueError, match=r"classes must be distinct non-negative class indices \(at least one\)"):
        summit_fast.Aggregator(net(), classes=classes)


@pytest.mark.parametrize("num_classes", [0, -3, True, 2.5, "5"])
def test_num_classes_that_is_not_a_positive_int_is_refused(num_classes):
    with pytest.raises(ValueError, match=rf"num_classes must be an int >= 1 .*got {num_classes!r}"):
        summit_fast.Aggregator(net(), num_classes=num_classes)


def test_aggregator_names_the_failing_batch_by_its_place_in_the_stream():
    aggregator = summit_fast.Aggregator(net(), backend="torch", num_classes=5)
    aggregator.update(torch.randn(2, 3, 9, 9), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"batch 1: labels: class index 7 is out of range \[0, 5\)"):
        aggregator.update(torch.randn(2, 3, 9, 9), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"batch 9: labels"):
        aggregator.update(torch.randn(2, 3, 9, 9), torch.tensor([0, 7]), batch_index=9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_a_cuda_device_without_cuda_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"device 'cuda': CUDA is not available here: .*; use device='cpu'"):
        summit_fast.aggregate(net(), [], device="cuda", progress=False)
    with pytest.raises(ValueError, match=r"device: .*nonsense"):
        summit_fast.aggregate(net(), [], device="nonsense", progress=False)


def test_labels_given_as_a_list_are_accepted_and_checked():
    images = torch.randn(2, 3, 9, 9)
    result = summit_fast.aggregate(net(), [(images, [1, 3])], backend="torch", progress=False)
    assert result.images_per_class.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(TypeError, match="integer dtype"):
        summit_fast.aggregate(net(), [(images, [1.5, 3.0])], backend="torch", progress=False)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_activations_are_refused_before_counting(value):
    model = net()
    aggregator = summit_fast.Aggregator(model, backend="torch")
    g = torch.Generator().manual_seed(2)
    images, labels = torch.randn(3, 3, 9, 9, generator=g), torch.tensor([0, 1, 1])
    aggregator.update(images, labels)
    before = {k: v.clone() for k, v in aggregator.result.tensors().items()}

    def poison(module, inputs, output):
        output = output.clone()
        output[1, 4, 2, 3] = value
        return output

    handle = model.mix1.register_forward_hook(poison)
    with pytest.raises(FloatingPointError, match="batch 5: NaN or Inf in the summary layer 'mix1'"):
        aggregator.update(images, labels, batch_index=5)
    handle.remove()
    assert all(torch.equal(v, before[k]) for k, v in aggregator.result.tensors().items())
    aggregator.update(images, labels)  # the aggregator is still usable
    assert aggregator.images_counted == 6


def test_finite_float64_activations_beyond_float32_range_are_accepted():
    model = net().double()
    images, labels = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.tensor([0, 1])
    handle = model.mix1.register_forward_hook(lambda module, inputs, output: output * 1e300)
    result = summit_fast.aggregate(model, [(images, labels)], backend="torch", progress=False)  # no FloatingPointError
    handle.remove()
    assert result.num_images == 2


def test_aggregate_checks_label_values_once_per_batch_not_per_op(monkeypatch):
    """On a GPU each pass over the labels is a host synchronisation: aggregate checks them once
    per batch and tells the ops so, which then skip their own pass (counted here)."""
    import summit_fast.backends.base as base

    value_checks = []
    original = base.check_labels

    def counting(labels, batch, num_classes, what="labels", values=True):
        value_checks.append(values)
        return original(labels, batch, num_classes, what, values)

    monkeypatch.setattr(base, "check_labels", counting)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(3, 3, 9, 9, generator=g), torch.randint(0, 5, (3,), generator=g)) for _ in range(2)]
    # torch counts int16 natively; the cpu backend's activation goes through an int32 scratch.
    for backend, count_dtype in (("torch", "int32"), ("torch", "int16"), ("cpu", "int16")):
        value_checks.clear()
        result = summit_fast.aggregate(net(), batches, backend=backend, progress=False, count_dtype=count_dtype)
        ops = 2 * (len(result.layers) + len(result.edges))
        assert len(value_checks) == ops and not any(value_checks)
    # Called directly, the ops still check every label value.
    counts = torch.zeros(5, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="class index 7 is out of range"):
        summit_fast.get_backend("torch").activation_update(torch.randn(2, 4, 3, 3), torch.tensor([1, 7]), counts,
                                                          summit_fast.mass(0.5))


# aten ops that read tensor data back to the host, or size their output from it: each waits for
# a GPU to finish all queued work. item(), bool() and int() show up as item, is_nonzero or
# _local_scalar_dense; tolist() on a CPU tensor reads memory without any op and is not seen.
HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "_unique2", "unique_dim",
              "unique_consecutive", "bincount", "masked_select", "repeat_interleave"}


class CountHostReads(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend, count_dtype", [("torch", "int32"), ("cpu", "int16")])
def test_a_batch_reads_few_tensor_values_back_to_the_host(backend, count_dtype):
    """A batch makes a handful of host reads, however many layers and conv edges the model has
    (it made two per op and one per captured tensor before; int16 through a scratch one more
    per op)."""
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(3, 3, 9, 9, generator=g), torch.randint(0, 5, (3,), generator=g)) for _ in range(4)]
    aggregator = summit_fast.Aggregator(net(), backend=backend, count_dtype=count_dtype)
    aggregator.update(*batches[0])  # setup: discovery and allocation happen once
    with CountHostReads() as counter:
        for images, labels in batches[1:]:
            aggregator.update(images, labels)
    ops = len(aggregator.result.layers) + len(aggregator.result.edges)
    per_batch = len(counter.reads) / 3
    assert per_batch <= 4 < ops, f"{per_batch:.1f} host reads per batch: {sorted(set(counter.reads))}"


def test_count_tensors_with_other_row_counts_are_refused():
    """The ops trust aggregate's label check, so aggregate checks that the counts they write
    still have one row per class."""
    aggregator = summit_fast.Aggregator(net(), backend="torch")
    images, labels = torch.randn(2, 3, 9, 9), torch.tensor([4, 4])
    aggregator.update(images, labels)
    aggregator.result.activation["mix2"] = aggregator.result.activation["mix2"][:2].clone()
    with pytest.raises(ValueError, match=r"batch 7: the activation counts of 'mix2' have shape \(2, 11\), not one "
                                         r"row per class \(5\)"):
        aggregator.update(images, labels, batch_index=7)


def test_non_finite_values_are_named_where_they_first_appear():
    model = net()
    handle = model.mix2_3x3_bottleneck.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(FloatingPointError, match="batch 0: NaN or Inf in the input of conv 'mix2_3x3'"):
        summit_fast.aggregate(model, [(torch.randn(2, 3, 9, 9), torch.tensor([0, 1]))], backend="torch", progress=False)
    handle.remove()
