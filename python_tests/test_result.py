"""SummitResult: predictions, save/load integrity (no pickle, corruption detected), merging."""

import json

import pytest
import torch

import summit_fast
from summit_fast import ResultFormatError, SummitResult
from summit_fast.result import PROBABILITY_SCALE

from result_files import edit_manifest, rewrite_manifest
from result_compare import assert_same_counts
from tiny_models import TinyInception


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyInception().eval()


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(6, 3, 9, 9, generator=g), torch.randint(0, 5, (6,), generator=g)) for _ in range(3)]


@pytest.fixture(scope="module")
def result(net, batches):
    return summit_fast.aggregate(net, batches, backend="torch", progress=False)


def test_predictions_recorded_in_the_same_pass(net, batches, result):
    confusion = torch.zeros(5, 5, dtype=torch.int64)
    probability = torch.zeros(5, dtype=torch.float64)
    fixed = torch.zeros(5, dtype=torch.int64)  # the same batches give the same probabilities: exact
    histogram = torch.zeros(5, 101, dtype=torch.int64)
    with torch.no_grad():
        for images, labels in batches:
            p = net(images).softmax(1)
            for label, row in zip(labels.tolist(), p):
                confusion[label, int(row.argmax())] += 1
                probability[label] += float(row.max())
                fixed[label] += round(float(row.max()) * 2**32)
                histogram[label, round(float(row.max()) * 100)] += 1  # half to even, as torch.round
    assert result.params["predictions"] is True
    assert torch.equal(result.confusion, confusion)
    assert PROBABILITY_SCALE == 2**32 and torch.equal(result.top1_probability_fixed, fixed)
    torch.testing.assert_close(result.top1_probability, probability)
    # every image's top-1 probability in whole percent, per class: Summit's per-image accs
    assert torch.equal(result.top1_probability_histogram, histogram)
    assert torch.equal(histogram.sum(1), result.images_per_class)
    acc = result.top1_accuracy_per_class
    assert acc.dtype == torch.float64 and acc.shape == (5,)
    torch.testing.assert_close(result.top1_accuracy, acc, rtol=0, atol=0, equal_nan=True)  # the old name
    for k in range(5):
        n = int(result.images_per_class[k])
        assert (torch.isnan(acc[k]) and n == 0) or acc[k] == confusion[k, k] / n
    assert result.top1_accuracy_overall == int(confusion.diagonal().sum()) / 18


def test_overall_accuracy_without_predictions_or_images_is_none(net, batches):
    unrecorded = summit_fast.aggregate(net, batches, backend="torch", progress=False, predictions=False)
    assert unrecorded.top1_accuracy_overall is None
    assert summit_fast.aggregate(net, [], backend="torch", progress=False).top1_accuracy_overall is None
    none_right = summit_fast.aggregate(net, batches[:1], backend="torch", progress=False)
    none_right.confusion.fill_diagonal_(0)
    assert none_right.top1_accuracy_overall == 0.0


def test_additive_counts_are_integers_and_equal_for_any_shard_split_and_order(net, batches):
    """Every tensor that adds up across shards is an integer one (the top-1 probability sum is
    fixed point), so the same images give identical results however they are split into shards,
    ordered or added together."""
    def shard(order):
        aggregator = summit_fast.Aggregator(net, backend="torch", examples=2)
        for i in order:  # dataset-wide image ids, so that dataset examples merge across shards
            aggregator.update(*batches[i], image_ids=6 * i + torch.arange(6))
        return aggregator.result

    forward = shard([0, 1, 2])
    assert all(not t.is_floating_point() for key, t in forward.tensors().items() if not key.startswith("examples/"))
    first, second, third = shard([0]), shard([1]), shard([2])
    for total in (shard([2, 1, 0]), first + second + third, third + second + first, second + (third + first),
                  sum([third, first, second]), SummitResult.merge([shard([1, 2]), first])):
        assert total == forward


class ProbabilityNet(TinyInception):
    """Outputs probabilities (a softmax head): recorded as they are, not softmaxed again."""

    def forward(self, x):
        return super().forward(x).softmax(1)


def test_predictions_of_a_probability_model_over_a_subset_of_classes(batches):
    torch.manual_seed(0)
    net = ProbabilityNet().eval()
    classes = [0, 2, 3]
    kept = [(images[torch.isin(labels, torch.tensor(classes))], labels[torch.isin(labels, torch.tensor(classes))])
            for images, labels in batches]
    result = summit_fast.aggregate(net, kept, backend="torch", progress=False, classes=classes)
    confusion = torch.zeros(3, 3, dtype=torch.int64)
    probability = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in kept:
            for label, row in zip(labels.tolist(), net(images)):
                predicted = int(row.argmax())
                if predicted in classes:  # predictions of other classes are left out
                    confusion[classes.index(label), classes.index(predicted)] += 1
                probability[classes.index(label)] += float(row.max())
    assert torch.equal(result.confusion, confusion)
    torch.testing.assert_close(result.top1_probability, probability)


def test_predictions_option(net, batches):
    off = summit_fast.aggregate(net, batches, backend="torch", progress=False, predictions=False)
    auto = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    assert off.params["predictions"] is False and auto.params["predictions"] is True
    assert int(off.confusion.sum()) == 0 and float(off.top1_probability.sum()) == 0
    assert int(off.top1_probability_histogram.sum()) == 0
    assert int(auto.confusion.sum()) == auto.num_images == int(auto.top1_probability_histogram.sum())
    for name, t in auto.tensors().items():  # everything else is the same
        if name not in ("confusion", "top1_probability_fixed", "top1_probability_histogram"):
            assert torch.equal(t, off.tensors()[name]), name
    with pytest.raises(ValueError, match=r"predictions=True needs the model's output to be \(B, 7\) class scores"):
        summit_fast.aggregate(net, batches, backend="torch", progress=False, predictions=True, num_classes=7)
    with pytest.raises(TypeError, match="predictions must be True, False or None"):
        summit_fast.Aggregator(net, predictions=1)


def test_saved_files_hold_no_pickle(tmp_path, result):
    result.save(tmp_path)
    data = (tmp_path / "counts.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])  # safetensors: a JSON header, then raw bytes
    assert "activation/mix1" in header
    assert b"\x80\x04" not in data[:2]  # not a pickle stream


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "counts.safetensors").write_bytes((d / "counts.safetensors").read_bytes()[:100]), "corrupted or truncated"),
    (lambda d: _flip_last_byte(d / "counts.safetensors"), "corrupted or truncated"),
    (lambda d: rewrite_manifest(d, lambda text: "{not json"), "not valid JSON"),
    (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda d: (d / "counts.safetensors").unlink(), "counts.safetensors is missing"),
    (lambda d: edit_manifest(d, version=99), "format version 99"),
    (lambda d: edit_manifest(d, format="something"), "not a summit_fast result manifest"),
    (lambda d: edit_manifest(d, num_classes=6), "do not match|expected"),
])
def test_damaged_result_is_refused(tmp_path, result, damage, message):
    result.save(tmp_path / "r")
    damage(tmp_path / "r")
    with pytest.raises(ResultFormatError, match=message):
        SummitResult.load(tmp_path / "r")


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_loading_a_run_folder_points_to_its_result(tmp_path, result):
    result.save(tmp_path / "run" / "result")  # the layout of `summit-fast run --out run`
    with pytest.raises(ResultFormatError, match=r"manifest.json is missing \(did you mean .*run/result\?\)"):
        SummitResult.load(tmp_path / "run")


def test_save_leaves_no_temporary_files(tmp_path, result):
    result.save(tmp_path / "r")
    result.save(tmp_path / "r")  # overwriting is fine
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["counts.safetensors", "manifest.json"]


def test_to_copies_and_nbytes(result):
    copy = result.to("cpu")
    assert copy == result and copy.activation["mix1"] is not result.activation["mix1"]
    assert result.nbytes == sum(t.numel() * t.element_size() for t in result.tensors().values())
    assert "18 images" in repr(result)


def test_merge_refuses_different_graphs(net, batches, result):
    other = summit_fast.aggregate(net, batches, layers=["mix1"], backend="torch", progress=False)
    with pytest.raises(ValueError, match="different model graph"):
        result + other
    with pytest.raises(ValueError, match="at least one"):
        SummitResult.merge([])


# ------------------------------------------------------------------ dataset examples
def brute_force_examples(net, batches, layer, n):
    """Per channel: all (value, image id, y, x) sorted by value desc, then id; the first n."""
    rows, image_id = {}, 0
    seen = {}
    hook = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.__setitem__("o", o))
    with torch.no_grad():
        for images, _ in batches:
            net(images)
            out = seen["o"]
            for b in range(out.shape[0]):
                for c in range(out.shape[1]):
                    plane = out[b, c]
                    flat = int(plane.flatten().argmax())
                    rows.setdefault(c, []).append((float(plane.max()), image_id, flat // plane.shape[1], flat % plane.shape[1]))
                image_id += 1
    hook.remove()
    return {c: sorted(r, key=lambda t: (-t[0], t[1]))[:n] for c, r in rows.items()}


def test_dataset_examples_track_the_top_n_per_channel(net, batches):
    result = summit_fast.aggregate(net, batches, backend="torch", progress=False, examples=4)
    expected = brute_force_examples(net, batches, "mix2", 4)
    state = result.examples["mix2"]
    for c, rows in expected.items():
        assert state["image"][c].tolist() == [r[1] for r in rows]
        assert state["y"][c].tolist() == [r[2] for r in rows] and state["x"][c].tolist() == [r[3] for r in rows]
        torch.testing.assert_close(state["value"][c], torch.tensor([r[0] for r in rows]))


def test_dataset_examples_do_not_depend_on_batching_and_survive_save(tmp_path, net, batches):
    whole = summit_fast.aggregate(net, batches, backend="torch", progress=False, examples=3)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    one_by_one = summit_fast.aggregate(net, [(images[i:i + 1], labels[i:i + 1]) for i in range(len(images))],
                                       backend="torch", progress=False, examples=3)
    # The counts are equal; example values and each image's probability may differ in the last
    # bit between batch sizes (assert_same_counts allows that for those two alone).
    assert_same_counts(one_by_one, whole)
    whole.save(tmp_path / "r")
    assert SummitResult.load(tmp_path / "r") == whole


def test_dataset_examples_merge_across_shards_with_global_ids(net, batches):
    whole = summit_fast.aggregate(net, batches, backend="torch", progress=False, examples=3)
    agg = summit_fast.Aggregator(net, backend="torch", examples=3)
    agg.update(*batches[0])
    first = agg.result
    agg2 = summit_fast.Aggregator(net, backend="torch", examples=3)
    for images, labels in batches[1:]:
        agg2.update(images, labels, image_ids=6 + agg2.images_counted + torch.arange(len(images)))
    assert first + agg2.result == whole


def test_result_tensors_are_ordinary_tensors_users_can_edit(net, batches):
    result = summit_fast.aggregate(net, batches, backend="torch", progress=False, examples=2)
    for t in result.tensors().values():
        assert not t.is_inference()
    result.activation["mix1"] += 1  # would raise for an inference tensor
