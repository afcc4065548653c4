"""Saved results: a save is published whole (concurrent saves and loads never mix two results),
a load checks the manifest and the counts against each other, counts are stored compactly and
losslessly, and results of format 1 still load."""

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import summit_fast
from summit_fast import ResultFormatError, SummitResult, storage
from summit_fast.convspec import ConvSpec
from summit_fast.result import probability_to_fixed

from tiny_models import TinyInception

FORMAT_1 = Path(__file__).parent / "data" / "result_v1"  # saved by the code before format 2


@pytest.fixture(scope="module")
def run():
    """TinyInception (random weights) and 18 images in two batches, every class among the labels."""
    torch.manual_seed(0)
    images = torch.randn(18, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(18) % 5
    return TinyInception().eval(), [(images[:9], labels[:9]), (images[9:], labels[9:])]


@pytest.fixture(scope="module")
def result(run):
    return summit_fast.aggregate(*run, backend="torch", progress=False, examples=2)


@pytest.fixture(scope="module")
def residual():
    """A result with a counted skip connection (TwoResidualBlocks, classes [0, 2])."""
    return SummitResult.load(FORMAT_1)


def copy(result, **fields):
    """A copy of ``result`` (its own tensors) with ``fields`` replaced."""
    return dataclasses.replace(result.to("cpu"), **fields)


# ------------------------------------------------------------------ one save is one file
def test_concurrent_saves_and_loads_never_mix_two_results(tmp_path, result):
    a = copy(result, class_names=[f"a{k}" for k in range(5)])
    b = copy(result + result, class_names=[f"b{k}" for k in range(5)])  # other manifest, other counts
    folder = tmp_path / "r"
    a.save(folder)
    failures = []

    def keep_saving(r):
        try:
            for _ in range(30):
                r.save(folder)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    writers = [threading.Thread(target=keep_saving, args=(r,)) for r in (a, b)]
    for w in writers:
        w.start()
    try:
        loads = [SummitResult.load(folder) for _ in range(60)]
    finally:
        for w in writers:
            w.join()
    assert failures == []
    mixed = [i for i, r in enumerate(loads) if r != a and r != b]
    assert mixed == [], f"loads {mixed} mixed two saves"
    assert SummitResult.load(folder) in (a, b)
    assert sorted(p.name for p in folder.iterdir()) == ["counts.safetensors", "manifest.json"]


def test_load_reads_the_manifest_in_the_counts_file(tmp_path, result):
    """manifest.json is a readable copy: the counts file alone decides what loads."""
    folder = result.save(tmp_path / "r")
    assert isinstance(folder, Path) and folder == tmp_path / "r"
    with safe_open(str(folder / "counts.safetensors"), framework="pt") as f:
        embedded = json.loads(f.metadata()[storage.MANIFEST_KEY])
    assert json.loads((folder / "manifest.json").read_text()) == embedded
    assert embedded["version"] == 2
    other = copy(result, class_names=[f"c{k}" for k in range(5)]).save(tmp_path / "other")
    shutil.copy(other / "manifest.json", folder / "manifest.json")  # a stale copy, as after concurrent saves
    assert SummitResult.load(folder) == result


def test_format_1_results_still_load(tmp_path, residual):
    manifest = json.loads((FORMAT_1 / "manifest.json").read_text())
    assert manifest["version"] == 1
    stored = load_file(str(FORMAT_1 / "counts.safetensors"))
    # format 1 kept the probability sum as float64; it loads as the fixed-point sum
    old_sum = stored.pop("top1_probability")
    assert old_sum.dtype == torch.float64 and bool((old_sum > 0).any())
    loaded = residual.tensors()
    assert torch.equal(loaded.pop("top1_probability_fixed"), probability_to_fixed(old_sum))
    # saved before the per-image probabilities were counted: an empty histogram
    assert torch.equal(loaded.pop("top1_probability_histogram"), torch.zeros(2, 101, dtype=torch.int64))
    assert loaded.keys() == stored.keys() and residual.skip
    assert all(torch.equal(t, stored[k]) and t.dtype == stored[k].dtype for k, t in loaded.items())
    assert residual.params == manifest["params"] and residual.class_names == ["zero", "two"]
    assert residual.class_ids == [0, 2]
    assert SummitResult.load(residual.save(tmp_path / "r")) == residual  # saved again as format 2


def test_format_1_manifests_are_checked_too(tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(FORMAT_1, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["params"]["classes"] = [0, 2, 1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResultFormatError, match=r"manifest\.json: params\.classes has 3 classes but the counts have 2"):
        SummitResult.load(folder)
    shutil.copy(FORMAT_1 / "manifest.json", folder / "manifest.json")
    data = bytearray((folder / "counts.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "counts.safetensors").write_bytes(bytes(data))
    with pytest.raises(ResultFormatError, match="corrupted or truncated: its checksum does not match manifest.json"):
        SummitResult.load(folder)


# ------------------------------------------------------------------ what a load checks
def _edge(result, conv, **changes):
    edges = [dataclasses.replace(e, **changes) if e.conv == conv else e for e in result.graph.edges]
    return dataclasses.replace(result.graph, edges=edges)


def _skip(result, **changes):
    return dataclasses.replace(result.graph, skips=[dataclasses.replace(s, **changes) for s in result.graph.skips])


def _with(tensor_key, edit):
    """A change that edits one tensor of the flat view in place."""
    def change(r):
        edit(r.tensors()[tensor_key], r.images_per_class)
        return r
    return change


def _set(index, value):
    return lambda t, images: t.__setitem__(index, value(images) if callable(value) else value)


MANIFEST_CASES = {
    "classes shortened": (lambda r: copy(r, params=dict(r.params, classes=[0, 1])),
                          r"params\.classes has 2 classes but the counts have 5 rows"),
    "classes repeated": (lambda r: copy(r, params=dict(r.params, classes=[0, 1, 1, 2, 3])), "repeats a class"),
    "classes negative": (lambda r: copy(r, params=dict(r.params, classes=[-1, 1, 2, 3, 4])),
                         "params.classes is .*, expected a list of non-negative integers"),
    "classes beyond the model": (lambda r: copy(r, params=dict(r.params, classes=[0, 1, 2, 3, 9])),
                                 r"params\.classes holds class 9, beyond the model's 5 classes"),
    "class names": (lambda r: copy(r, class_names=["x", "y"]), "class_names must be 5 strings"),
    "edge target offset": (lambda r: copy(r, graph=_edge(r, "mix1_3x3", target_offset=100)),
                           r"graph\.edges\[\d+\] \(conv 'mix1_3x3'\): target_offset 100 \+ 5 channels does not "
                           r"fit in the 10 channels of 'mix1'"),
    "edge source": (lambda r: copy(r, graph=_edge(r, "mix2_1x1", source="nowhere")),
                    r"\(conv 'mix2_1x1'\): source 'nowhere' is not in graph\.channels"),
    "edge groups": (lambda r: copy(r, graph=_edge(r, "mix2_1x1", spec=ConvSpec(groups=3))),
                    r"must be positive multiples of groups 3"),
    "channels": (lambda r: copy(r, graph=dataclasses.replace(r.graph, channels=dict(r.graph.channels, mix1=-10))),
                 r"graph\.channels\['mix1'\] is -10"),
}

COUNT_CASES = {
    "negative activation": (_with("activation/mix1", _set((0, 3), -1)), r"activation/mix1 holds counts from -1"),
    "activation above images": (_with("activation/mix2", _set((1, 0), lambda n: n[1] + 1)),
                                r"activation/mix2 holds counts from \d+ to (\d+) for class 1, expected 0\.\.\d+"),
    "influence above images": (_with("influence/mix2_3x3", _set((2, 1, 0), lambda n: n[2] + 1)),
                               r"influence/mix2_3x3 holds counts .* for class 2"),
    "negative images": (_with("images_per_class", _set(4, -3)), "images_per_class is negative for class 4"),
    "negative confusion": (_with("confusion", _set((0, 1), -1)), r"confusion holds counts from -1"),
    "confusion above images": (_with("confusion", lambda t, n: t[3].fill_(0).__setitem__(slice(0, 2), n[3])),
                               "confusion row of class 3 sums to"),
    "negative histogram": (_with("top1_probability_histogram", _set((0, 50), -1)),
                           r"top1_probability_histogram holds counts from -1"),
    "histogram above images": (_with("top1_probability_histogram",
                                     lambda t, n: t[3].fill_(0).__setitem__(slice(0, 2), n[3])),
                               "top1_probability_histogram row of class 3 sums to"),
    "example slot": (_with("examples/mix1/y", _set((0, 1), -1)), r"examples/mix1: each slot must be filled"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES) + list(COUNT_CASES))
def test_an_inconsistent_result_is_refused_naming_file_and_field(tmp_path, result, case):
    change, message = {**MANIFEST_CASES, **COUNT_CASES}[case]
    change(copy(result)).save(tmp_path / "r")
    with pytest.raises(ResultFormatError, match=rf"r/counts\.safetensors: (.* )?{message}") as error:
        SummitResult.load(tmp_path / "r")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change,message", [
    (_with("skip/block1->block2@0", _set((1, 2), lambda n: n[1] + 1)), r"skip/block1->block2@0 holds counts .* class 2"),
    (lambda r: copy(r, graph=_skip(r, target_offset=3)),
     r"graph\.skips\[0\] \(block1->block2@3\): target_offset 3 \+ 6 channels does not fit in the 6 channels"),
])
def test_skips_are_checked(tmp_path, residual, change, message):
    change(copy(residual)).save(tmp_path / "r")
    with pytest.raises(ResultFormatError, match=message):
        SummitResult.load(tmp_path / "r")


def test_results_at_the_limits_load(tmp_path, result):
    """Counts equal to their class's images, a class without images and a full confusion row."""
    r = copy(result)
    r.images_per_class[0] = 0
    r.top1_probability_fixed[0] = 0
    for t in [*r.activation.values(), *r.influence.values()]:
        t[0] = 0
        t[1, 0] = r.images_per_class[1]
    r.confusion[0] = 0
    r.confusion[2] = 0
    r.confusion[2, 4] = r.images_per_class[2]
    r.top1_probability_histogram[0] = 0
    r.top1_probability_histogram[2] = 0
    r.top1_probability_histogram[2, 100] = r.images_per_class[2]
    assert SummitResult.load(r.save(tmp_path / "r")) == r


# ------------------------------------------------------------------ compact storage
def _scaled(result, factor, count_dtype="int32"):
    """``result`` with every count and image total multiplied by ``factor`` (still consistent)."""
    r = result.with_count_dtype(count_dtype)
    for key, t in r.tensors().items():
        if not key.startswith(("examples/", "top1_probability_fixed")):
            t.mul_(factor)
    return r


@pytest.mark.parametrize("factor,count_dtype,stored", [
    (1, "int32", torch.uint8), (1, "int16", torch.uint8), (300, "int16", torch.int16), (300, "int32", torch.int16),
    (40000, "int32", torch.int32),
])
def test_compact_storage_restores_counts_and_types_exactly(tmp_path, result, factor, count_dtype, stored):
    r = _scaled(result, factor, count_dtype)
    loaded = SummitResult.load(r.save(tmp_path / "r"))
    assert loaded == r
    assert all(t.dtype == r.tensors()[k].dtype for k, t in loaded.tensors().items())
    on_disk = load_file(str(tmp_path / "r" / "counts.safetensors"))
    assert on_disk["activation/mix1"].dtype == stored


def test_compact_storage_is_smaller_and_saved_size_reports_it(tmp_path, run):
    """1000 classes, of which a handful have images: the rows of the others are zeros."""
    r = summit_fast.aggregate(*run, backend="torch", progress=False, num_classes=1000, predictions=False)
    compact, dense = r.save(tmp_path / "compact"), r.save(tmp_path / "dense", compact=False)
    for folder in (compact, dense):
        assert SummitResult.saved_size(folder) == sum(p.stat().st_size for p in folder.iterdir())
        assert SummitResult.load(folder) == r
    assert SummitResult.saved_size(compact) * 20 < SummitResult.saved_size(dense)
    on_disk = load_file(str(compact / "counts.safetensors"))
    assert "sparse_index/influence/mix2_1x1" in on_disk


@pytest.mark.parametrize("tensor,stored_dtype,sparse", [
    (torch.tensor([[0, 255], [3, 1]], dtype=torch.int32), torch.uint8, False),
    (torch.tensor([[0, 256], [3, 1]], dtype=torch.int32), torch.int16, False),
    (torch.tensor([-1, 127, 5], dtype=torch.int64), torch.int8, False),
    (torch.tensor([-1, 2**40], dtype=torch.int64), torch.int64, False),
    (torch.tensor([[-32768, 0]], dtype=torch.int16), torch.int16, False),
    (torch.zeros(3, 40, dtype=torch.int32).index_fill_(1, torch.tensor([7]), 200), torch.uint8, True),
    (torch.zeros(2, 0, 5, dtype=torch.int32), torch.int32, False),
    (torch.zeros(4, 4, dtype=torch.int16), torch.uint8, True),
    (torch.tensor([0.5, float("-inf"), float("nan")], dtype=torch.float32), torch.float32, False),
])
def test_encoding_picks_the_narrowest_exact_form(tensor, stored_dtype, sparse):
    stored = storage.encode({"activation/x": tensor})
    assert stored["activation/x"].dtype == stored_dtype
    assert ("sparse_index/activation/x" in stored) == sparse
    decoded = storage.decode(stored, {"activation/x": (tuple(tensor.shape), tensor.dtype)})["activation/x"]
    assert decoded.dtype == tensor.dtype and torch.equal(decoded.nan_to_num(0.25), tensor.nan_to_num(0.25))


@pytest.mark.parametrize("stored,message", [
    ({"a": torch.zeros(2, 3, dtype=torch.int32)}, r"tensor 'a' is torch.int32 \(2, 3\), expected torch.int16 \(2, 3\)"),
    ({"a": torch.zeros(3, 2, dtype=torch.uint8)}, r"tensor 'a' is torch.uint8 \(3, 2\), expected torch.int16 \(2, 3\)"),
    ({"a": torch.ones(2, dtype=torch.uint8), "sparse_index/a": torch.tensor([3, 3])}, "not increasing"),
    ({"a": torch.ones(1, dtype=torch.uint8), "sparse_index/a": torch.tensor([6])}, r"within \[0, 6\)"),
    ({"a": torch.ones(2, dtype=torch.uint8), "sparse_index/a": torch.tensor([1])}, r"expected torch.int16 \(1,\)"),
    ({"a": torch.ones(1, dtype=torch.uint8), "sparse_index/a": torch.tensor([1.0])}, "sparse positions of torch.float32"),
    ({"a": torch.zeros(2, 3, dtype=torch.int16), "b": torch.zeros(1)}, r"holds tensors \['b'\]"),
])
def test_stored_tensors_that_do_not_fit_are_refused(stored, message):
    with pytest.raises(ValueError, match=message):
        storage.decode(stored, {"a": ((2, 3), torch.int16)})
