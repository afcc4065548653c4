"""summit_fast.aggregate end to end: discovery, counts against an independent per-image loop,
additivity, labels from predictions, and the all-or-nothing handling of bad input."""

import pytest
import torch
import torch.nn as nn

import summit_fast
from summit_fast import Aggregator, DiscoveryError, SummitResult, mass, topk

from spec_oracle import oracle_scores, oracle_select, oracle_top
from tiny_models import TinyInception, TinySequential


def make_batches(n_batches=3, batch=4, shape=(3, 9, 9), classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n_batches)]


def model(cls=TinyInception, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


def oracle_counts(net, batches, layers, edges, rule, k, r, num_classes, labels_from_prediction=False):
    """Counts from a per-image loop over SPEC.md A and B, sharing no code with summit_fast."""
    modules = dict(net.named_modules())
    act, inf = {}, {}
    for images, labels in batches:
        for b in range(images.shape[0]):
            seen = {}
            hooks = [modules[l].register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, o)) for l in layers]
            hooks += [modules[e.conv].register_forward_hook(lambda m, i, o, c=e.conv: seen.__setitem__(c, i[0]))
                      for e in edges]
            with torch.no_grad():
                out = net(images[b:b + 1])
            for h in hooks:
                h.remove()
            label = int(out.argmax()) if labels_from_prediction else int(labels[b])
            for l in layers:
                z = seen[l][0].double().amax(dim=(1, 2)).tolist()
                counts = act.setdefault(l, torch.zeros(num_classes, len(z), dtype=torch.int32))
                for c in oracle_select(z, rule):
                    counts[label, c] += 1
            for e in edges:
                conv = modules[e.conv]
                scores = oracle_scores(seen[e.conv], conv.weight.detach(), e.spec.pad, e.spec.stride,
                                       e.spec.dilation, e.spec.groups, e.spec.padding_mode, r)[0]
                counts = inf.setdefault(e.conv, torch.zeros(num_classes, e.out_channels, e.in_channels, dtype=torch.int32))
                cin_g = e.in_channels // e.spec.groups
                for j in range(e.out_channels):
                    start = (j // (e.out_channels // e.spec.groups)) * cin_g
                    for s in oracle_top(scores[j].tolist(), k):
                        counts[label, j, start + s] += 1  # dense, by input channel
    return act, inf


def test_discovery_finds_inception_branches_with_offsets():
    result = summit_fast.aggregate(model(), make_batches(1), backend="torch", progress=False)
    found = {(e.conv, e.source, e.target, e.target_offset) for e in result.edges}
    assert found == TinyInception.EXPECTED_EDGES
    assert result.graph.input_node == "stem"
    assert result.channels["mix1"] == 10 and result.channels["mix2"] == 11


@pytest.mark.parametrize("rule,k,r", [(mass(0.01), 5, 1), (mass(0.2), 2, 1), (topk(3), 3, 3)])
def test_aggregate_equals_independent_per_image_loop(rule, k, r):
    net, batches = model(), make_batches()
    result = summit_fast.aggregate(net, batches, selection=rule, influence_k=k, spatial_stride=r,
                                   backend="torch",
                                   progress=False)
    act, inf = oracle_counts(net, batches, result.layers, result.edges, rule.to_json(), k, r, result.num_classes)
    for layer in result.layers:
        assert torch.equal(result.activation[layer], act[layer]), layer
    for conv, counts in inf.items():
        assert torch.equal(result.influence[conv], counts), conv
    assert result.images_per_class.sum() == 12
    assert result.influence["mix1_3x3"].sum() == 12 * 5 * min(k, 4)  # every (image, target) keeps min(k, C_in)


def test_sequential_cnn_with_stride_groups_dilation():
    net = model(TinySequential)
    batches = make_batches(2, 3, classes=4)
    result = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    assert [(e.conv, e.source, e.target) for e in result.edges] == [
        ("features.0", "input", "features.1"), ("features.2", "features.1", "features.3"),
        ("features.4", "features.3", "features.5")]
    act, inf = oracle_counts(net, batches, result.layers, result.edges, mass(0.01).to_json(), 5, 1, 4)
    assert all(torch.equal(result.activation[l], act[l]) for l in result.layers)
    grouped = result.edges[2]
    assert grouped.spec.groups == 2 and result.influence["features.4"].shape == (4, 8, 4)  # compact: C_in/groups
    assert all(torch.equal(e.dense(result.influence[e.conv]), inf[e.conv]) for e in result.edges)


def test_shards_add_up_and_merge():
    net, batches = model(), make_batches(4)
    whole = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    a = summit_fast.aggregate(net, batches[:1], backend="torch", progress=False)
    b = summit_fast.aggregate(net, batches[1:], backend="torch", progress=False)
    assert a + b == whole
    assert SummitResult.merge([a, b]) == whole
    assert sum([a, b]) == whole
    alone = sum([a])
    assert alone == a and alone is not a and alone.activation["mix1"] is not a.activation["mix1"]
    with pytest.raises(TypeError):
        1 + a
    other = summit_fast.aggregate(net, batches, selection=topk(2), backend="torch", progress=False)
    with pytest.raises(ValueError, match=r'different parameters: selection: \{"rule": "mass".* vs \{"rule": "topk"'):
        whole + other
    # Same layers and options, other weights: refused, the weights' digests differ.
    retrained = model()
    with torch.no_grad():
        next(retrained.parameters()).add_(1.0)
    shard = summit_fast.aggregate(retrained, batches[:1], backend="torch", progress=False)
    assert a.params["model_digest"] == whole.params["model_digest"] != shard.params["model_digest"]
    with pytest.raises(ValueError, match=r"different parameters: model_digest: "):
        shard + b
    narrow = a.with_count_dtype("int16")
    with pytest.raises(ValueError, match=r'count_dtype: "int16" vs unset \(result.with_count_dtype converts one\)'):
        narrow + b


def test_save_load_round_trip(tmp_path):
    result = summit_fast.aggregate(model(), make_batches(2), backend="torch", progress=False,
                                   class_names=[f"class {i}" for i in range(5)], excluded={"mix1": [2]})
    result.save(tmp_path / "r")
    loaded = SummitResult.load(tmp_path / "r")
    assert loaded == result
    assert loaded.class_names == result.class_names and loaded.params == result.params
    assert loaded.edges == result.edges
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["counts.safetensors", "manifest.json"]


def test_label_source_prediction_uses_argmax():
    net, batches = model(), make_batches(2)
    unlabeled = [images for images, _ in batches]
    result = summit_fast.aggregate(net, unlabeled, label_source="prediction", backend="torch", progress=False)
    with torch.no_grad():
        predicted = [(images, net(images).argmax(1)) for images in unlabeled]
    expected = summit_fast.aggregate(net, predicted, backend="torch", progress=False)
    assert result.params["label_source"] == "prediction"
    assert torch.equal(result.images_per_class, expected.images_per_class)
    assert all(torch.equal(result.activation[l], expected.activation[l]) for l in result.layers)
    assert all(torch.equal(result.influence[c], expected.influence[c]) for c in result.influence)


def test_excluded_channels_never_counted():
    result = summit_fast.aggregate(model(), make_batches(2), excluded={"mix1": [0, 5]}, backend="torch",
                                   progress=False)
    assert result.activation["mix1"][:, [0, 5]].sum() == 0


def test_num_classes_inferred_and_overridden():
    assert summit_fast.aggregate(model(), make_batches(1), backend="torch", progress=False).num_classes == 5
    r = summit_fast.aggregate(model(), make_batches(1), num_classes=7, backend="torch", progress=False)
    assert r.num_classes == 7 and r.activation["mix1"].shape == (7, 10)


def test_activation_only_run_has_no_influence_counts():
    r = summit_fast.aggregate(model(), make_batches(1), influence=False, backend="torch", progress=False)
    assert r.influence == {} and r.skip == {}  # not even allocated
    assert int(r.activation["mix2"].sum()) > 0


def test_explicit_edges_override():
    edges = [{"conv": "mix2_1x1", "source": "mix1", "target": "mix2", "target_offset": 0}]
    r = summit_fast.aggregate(model(), make_batches(1), edges=edges, backend="torch", progress=False)
    assert [e.conv for e in r.edges] == ["mix2_1x1"]
    with pytest.raises(DiscoveryError, match="not a Conv2d"):
        summit_fast.aggregate(model(), make_batches(1), edges=[{"conv": "mix1", "source": "stem", "target": "mix1"}],
                              backend="torch", progress=False)


def test_train_mode_is_switched_and_restored():
    net = TinyInception().train()
    with pytest.warns(UserWarning, match="train mode"):
        summit_fast.aggregate(net, make_batches(1), backend="torch", progress=False)
    assert net.training


# ------------------------------------------------------------------ bad input
def good_then(bad_images, bad_labels, **options):
    """Aggregate a good batch, then try a bad one; return (error, counts before, counts after)."""
    agg = Aggregator(model(), backend="torch", **options)
    images, labels = make_batches(1)[0]
    agg.update(images, labels)
    before = agg.result.to("cpu")
    with pytest.raises(Exception) as info:
        agg.update(bad_images, bad_labels, batch_index=1)
    return info.value, before, agg.result


@pytest.mark.parametrize("labels,kind,message", [
    (torch.tensor([0, 1, 5, 2]), ValueError, "class index 5 is out of range"),
    (torch.tensor([0, -1, 2, 2]), ValueError, "class index -1 is out of range"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer dtype"),
    (torch.tensor([0, 1]), ValueError, "shape"),
])
def test_bad_labels_raise_and_leave_counts_unchanged(labels, kind, message):
    error, before, after = good_then(make_batches(1, seed=5)[0][0], labels)
    assert isinstance(error, kind) and message in str(error) and "batch 1" in str(error)
    assert after == before


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_activation_names_layer_and_batch(bad_value):
    images = make_batches(1, seed=6)[0][0]
    images[2, 0, 4, 4] = bad_value
    error, before, after = good_then(images, torch.tensor([0, 1, 2, 3]))
    assert isinstance(error, FloatingPointError)
    # The first captured tensor holding it, in forward order: the stem's output, mix1_1x1's input.
    assert str(error) == "batch 1: NaN or Inf in the input of conv 'mix1_1x1'"
    assert after == before


def test_unknown_layer_lists_available():
    with pytest.raises(ValueError, match="unknown layer name.*'nope'.*available modules: stem"):
        summit_fast.aggregate(model(), make_batches(1), layers=["mix1", "nope"], progress=False)


def test_layer_output_not_4d():
    with pytest.raises(DiscoveryError, match="'head' must output a 4-D"):
        summit_fast.aggregate(model(), make_batches(1), layers=["mix1", "head"], backend="torch", progress=False)


@pytest.mark.parametrize("loader,message", [
    ([torch.randn(2, 3, 9, 9)], "must yield \\(images, labels\\) pairs; batch 0 is Tensor"),
    ([(torch.randn(2, 3, 9, 9), torch.tensor([0, 1]), "extra")], "batch 0 is tuple of length 3"),
    ([(torch.randn(2, 9, 9), torch.tensor([0, 1]))], "images must be a 4-D tensor"),
])
def test_loader_with_wrong_structure(loader, message):
    with pytest.raises(TypeError, match=message):
        summit_fast.aggregate(model(), loader, backend="torch", progress=False)


def test_empty_loader_gives_zero_counts():
    result = summit_fast.aggregate(model(), [], backend="torch", progress=False)
    assert result.num_images == 0 and result.num_classes == 5
    assert all(int(v.sum()) == 0 for v in [*result.activation.values(), *result.influence.values()])
    no_shape = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        summit_fast.aggregate(no_shape, [], layers=["1"], progress=False)


def test_zero_size_batches_are_skipped():
    batches = [(torch.zeros(0, 3, 9, 9), torch.zeros(0, dtype=torch.long))] + make_batches(1)
    result = summit_fast.aggregate(model(), batches, backend="torch", progress=False)
    assert result == summit_fast.aggregate(model(), batches[1:], backend="torch", progress=False)


def test_no_conv_between_layers_is_named():
    class NoConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.a = nn.ReLU()
            self.b = nn.Identity()

        def forward(self, x):
            return self.b(self.a(self.conv(x))).mean(dim=(2, 3))

    with pytest.raises(DiscoveryError, match="no Conv2d found between 'a' and summary layer 'b'"):
        summit_fast.aggregate(NoConv().eval(), make_batches(1), layers=["a", "b"], num_classes=5, progress=False)


def test_classes_restrict_the_rows_to_those_classes():
    net = model()
    batches = [(images, labels % 2 * 3 + 1) for images, labels in make_batches(3)]  # classes 1 and 4 only
    full = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    some = summit_fast.aggregate(net, batches, classes=[4, 1], backend="torch", progress=False)
    assert some.num_classes == 2 and some.class_ids == [4, 1] and full.class_ids == [0, 1, 2, 3, 4]
    for layer in full.layers:
        assert torch.equal(some.activation[layer], full.activation[layer][[4, 1]])
    for conv in full.influence:
        assert torch.equal(some.influence[conv], full.influence[conv][[4, 1]])
    assert torch.equal(some.confusion, full.confusion[[4, 1]][:, [4, 1]])
    with pytest.raises(ValueError, match="batch 0: label 1 is not one of the classes"):
        summit_fast.aggregate(net, batches, classes=[4], backend="torch", progress=False)
    with pytest.raises(ValueError, match="out of range for 5 classes"):
        summit_fast.aggregate(net, batches, classes=[7], backend="torch", progress=False)


def test_activation_only_result_saves_and_refuses_graphs(tmp_path):
    from summit_fast.graph import class_graph

    r = summit_fast.aggregate(model(), make_batches(1), influence=False, backend="torch", progress=False)
    r.save(tmp_path / "r")
    assert SummitResult.load(tmp_path / "r") == r
    with pytest.raises(ValueError, match="influence=False"):
        class_graph(r, 0)
