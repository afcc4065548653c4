"""int16 counts (``count_dtype="int16"``): exactly the int32 counts at half the memory, and a
clear OverflowError, with nothing changed, before any class could exceed 32767 images."""

import pytest
import torch

import summit_fast
from summit_fast import SummitResult
from summit_fast.backends import get_backend, unavailable_reason
from summit_fast.convspec import ConvSpec
from summit_fast.result import ResultFormatError

from result_files import edit_manifest
from tiny_models import TinyInception, TwoResidualBlocks

BACKENDS = [b for b in ("torch", "cpu", "triton") if unavailable_reason(b, "cpu") is None]
INT16_MAX = torch.iinfo(torch.int16).max


def batches(n=3, size=5, classes=4, hw=9, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, hw, hw, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


def counted(result: SummitResult) -> dict[str, torch.Tensor]:
    return {k: v for k, v in result.tensors().items() if k.startswith(("activation/", "influence/", "skip/"))}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_class", [TinyInception, TwoResidualBlocks])
def test_int16_counts_equal_int32_counts(backend, model_class):
    torch.manual_seed(0)
    model = model_class(num_classes=4).eval()
    data = batches()
    wide = summit_fast.aggregate(model, data, backend=backend, progress=False)
    narrow = summit_fast.aggregate(model, data, backend=backend, progress=False, count_dtype="int16")
    assert narrow.count_dtype == torch.int16 and wide.count_dtype == torch.int32
    assert set(counted(narrow)) == set(counted(wide))
    for key, t in counted(narrow).items():
        assert t.dtype == torch.int16, key
        assert torch.equal(t.to(torch.int32), counted(wide)[key]), key
    assert int(counted(wide)[next(iter(counted(wide)))].sum()) > 0
    assert narrow.nbytes < wide.nbytes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, groups", [(3, 2), (1, 1), (3, 4)])  # kxk, 1x1, depthwise (every source kept)
def test_backend_ops_add_into_int16_counts(backend, kernel, groups):
    """Each backend's two ops give the same counts into int16 as into int32, on top of existing counts."""
    engine = get_backend(backend, "cpu")
    g = torch.Generator().manual_seed(5)
    acts, labels = torch.randn(6, 13, 5, 7, generator=g), torch.tensor([0, 2, 2, 1, 0, 2])
    x, weight = torch.randn(6, 4, 7, 7, generator=g), torch.randn(8, 4 // groups, kernel, kernel, generator=g)
    conv = ConvSpec.from_module(torch.nn.Conv2d(4, 8, kernel, padding=kernel // 2, groups=groups))
    start_a = torch.randint(0, 100, (3, 13), generator=g, dtype=torch.int32)
    start_i = torch.randint(0, 100, (3, 8, 4 // groups), generator=g, dtype=torch.int32)
    expected_a, expected_i = start_a.clone(), start_i.clone()
    engine.activation_update(acts, labels, expected_a, summit_fast.mass(0.3))
    engine.influence_update(x, weight, conv, labels, expected_i, k=1)
    got_a, got_i = start_a.to(torch.int16), start_i.to(torch.int16)
    engine.activation_update(acts, labels, got_a, summit_fast.mass(0.3))
    engine.influence_update(x, weight, conv, labels, got_i, k=1)
    assert torch.equal(got_a.to(torch.int32), expected_a) and not torch.equal(expected_a, start_a)
    assert torch.equal(got_i.to(torch.int32), expected_i) and not torch.equal(expected_i, start_i)


def test_other_count_types_are_refused():
    with pytest.raises(ValueError, match="count_dtype must be one of int32, int16, got 'int8'"):
        summit_fast.Aggregator(TinyInception(), count_dtype="int8")
    engine = get_backend("torch", "cpu")
    with pytest.raises(TypeError, match="counts must be an int32 or int16 tensor, got torch.int64"):
        engine.activation_update(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]), torch.zeros(2, 3, dtype=torch.int64),
                                 summit_fast.mass(0.5))


def test_a_batch_that_would_overflow_int16_is_refused_before_counting():
    torch.manual_seed(0)
    aggregator = summit_fast.Aggregator(TinyInception(num_classes=4).eval(), backend="torch", count_dtype="int16")
    (images, labels), = batches(n=1)
    aggregator.update(images, labels)
    result = aggregator.result
    # Pretend class 1 has already been seen almost 32767 times (the bound every count obeys).
    result.images_per_class[1] = INT16_MAX - int((labels == 1).sum()) + 1
    before = {k: v.clone() for k, v in result.tensors().items()}
    with pytest.raises(OverflowError, match=r"batch 7 would give class 1 32768 images, more than int16 counts can "
                                            r"hold \(32767\)"):
        aggregator.update(images, labels, batch_index=7)
    assert all(torch.equal(v, before[k]) for k, v in result.tensors().items())
    assert not aggregator.interrupted
    result.images_per_class[1] -= 1  # now exactly 32767 after the batch: allowed
    aggregator.update(images, labels)
    assert int(aggregator.result.images_per_class[1]) == INT16_MAX


def test_int16_results_save_load_add_and_convert(tmp_path):
    torch.manual_seed(0)
    model = TinyInception(num_classes=4).eval()
    data = batches(n=4)
    narrow = summit_fast.aggregate(model, data, backend="torch", progress=False, count_dtype="int16")
    halves = [summit_fast.aggregate(model, part, backend="torch", progress=False, count_dtype="int16")
              for part in (data[:2], data[2:])]
    assert SummitResult.merge(halves) == narrow
    loaded = SummitResult.load(narrow.save(tmp_path / "r"))
    assert loaded == narrow and loaded.count_dtype == torch.int16
    wide = narrow.with_count_dtype("int32")
    # int32 results keep the parameters they had before count_dtype existed (old results merge)
    assert wide.count_dtype == torch.int32 and "count_dtype" not in wide.params
    assert wide == summit_fast.aggregate(model, data, backend="torch", progress=False)
    same = wide.with_count_dtype("int32")
    same.activation["mix1"] += 1  # a copy, even where the type does not change
    assert same != wide
    assert all(torch.equal(t, counted(narrow)[k].to(torch.int32)) for k, t in counted(wide).items())
    assert wide.with_count_dtype(torch.int16) == narrow

    big = narrow.to("cpu")
    big.images_per_class[2] = INT16_MAX
    with pytest.raises(OverflowError, match="adding these results would give class 2"):
        big + narrow
    over = big.with_count_dtype("int32")
    over.images_per_class[2] += 1
    with pytest.raises(OverflowError, match="storing the counts as int16 would give class 2 32768 images"):
        over.with_count_dtype("int16")


def test_int16_manifest_with_int32_counts_is_refused(tmp_path):
    torch.manual_seed(0)
    wide = summit_fast.aggregate(TinyInception(num_classes=4).eval(), batches(n=1), backend="torch", progress=False)
    folder = wide.save(tmp_path / "r", compact=False)  # int32 counts on disk
    edit_manifest(folder, params=dict(wide.params, count_dtype="int16"))
    with pytest.raises(ResultFormatError, match="is torch.int32 .* expected torch.int16"):
        SummitResult.load(folder)


def test_resume_with_another_count_type_is_refused(tmp_path):
    torch.manual_seed(0)
    model = TinyInception(num_classes=4).eval()
    data = batches(n=2)
    summit_fast.aggregate(model, data, backend="torch", progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r'made by a run with different parameters \(count_dtype: unset in the '
                                         r'checkpoint, "int16" now\)'):
        summit_fast.aggregate(model, data, backend="torch", progress=False, checkpoint_dir=tmp_path,
                              count_dtype="int16")


def test_graphs_and_export_of_int16_counts_equal_those_of_int32(tmp_path):
    """Consumers of the counts (graphs, export) must not do arithmetic in the narrow type."""
    from summit_fast.export import export
    from summit_fast.graph import build_graphs

    torch.manual_seed(0)
    model = TwoResidualBlocks(num_classes=4).eval()
    narrow = summit_fast.aggregate(model, batches(n=4), backend="torch", progress=False, count_dtype="int16")
    # Large counts (within int16) so that sums over channels or classes would overflow int16.
    for t in counted(narrow).values():
        t.mul_(3000)
    narrow.images_per_class.mul_(3000)
    wide = narrow.with_count_dtype("int32")
    graphs = {name: {c: g.to_summit() for c, g in build_graphs(r).items()} for name, r in (("n", narrow), ("w", wide))}
    assert graphs["n"] == graphs["w"] and all(graphs["w"].values())
    folders = [export(r, tmp_path / name, embedding="pca") for name, r in (("n", narrow), ("w", wide))]
    files = sorted(p.relative_to(folders[1]) for p in folders[1].rglob("*.json"))
    assert files == sorted(p.relative_to(folders[0]) for p in folders[0].rglob("*.json"))
    for f in files:  # identical but for the recorded parameter
        narrow_text = (folders[0] / f).read_text().replace(',"count_dtype":"int16"', "")
        assert narrow_text == (folders[1] / f).read_text(), f


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_labels_into_int16_counts_are_refused(backend):
    engine = get_backend(backend, "cpu")
    counts = torch.zeros(3, 5, dtype=torch.int16)
    with pytest.raises(ValueError, match=r"class index 3 is out of range \[0, 3\)"):
        engine.activation_update(torch.randn(2, 5, 4, 4), torch.tensor([0, 3]), counts, summit_fast.mass(0.5))
    assert not counts.any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count_dtype", ["int32", "int16"])
def test_aggregate_refuses_bad_labels_on_every_backend(backend, count_dtype):
    """The ops trust aggregate's label check (``labels_checked=True``): it must catch every bad
    label, for a subset of classes too, before anything is counted."""
    torch.manual_seed(0)
    aggregator = summit_fast.Aggregator(TinyInception(num_classes=4).eval(), backend=backend,
                                        count_dtype=count_dtype, classes=[0, 2])
    images = torch.randn(2, 3, 9, 9)
    aggregator.update(images, torch.tensor([0, 2]))
    before = {k: v.clone() for k, v in aggregator.result.tensors().items()}
    with pytest.raises(ValueError, match=r"label 1 is not one of the classes being aggregated \(classes=\[0, 2\]\)"):
        aggregator.update(images, torch.tensor([2, 1]))
    with pytest.raises(ValueError, match=r"class index 4 is out of range \[0, 4\)"):
        aggregator.update(images, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"class index -1 is out of range \[0, 4\)"):
        aggregator.update(images, torch.tensor([-1, 0]))
    assert all(torch.equal(v, before[k]) for k, v in aggregator.result.tensors().items())
