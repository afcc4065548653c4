"""Skip connections: a residual identity between consecutive summary layers is counted as
co-selection (images of the class selecting both ends) and becomes identity edges of the graph."""

import torch

import summit_fast
from summit_fast.discovery import Skip
from summit_fast.graph import class_graph

from spec_oracle import oracle_select
from tiny_models import TwoResidualBlocks


def batches():
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(5, 3, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(3)]


def net():
    torch.manual_seed(2)
    return TwoResidualBlocks().eval()


def test_residual_identity_is_found_and_counted_as_co_selection():
    model, data = net(), batches()
    result = summit_fast.aggregate(model, data, backend="torch", progress=False)
    assert result.graph.skips == [Skip("block1", "block2", 0, 0, 6)]
    assert [(e.conv, e.source, e.target) for e in result.edges] == [
        ("conv0", "input", "block1"), ("conv2", "conv1", "block2"), ("conv1", "block1", "conv1")]
    expected = torch.zeros(3, 6, dtype=torch.int32)
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in ("block1", "block2")]
    with torch.no_grad():
        for images, labels in data:
            for b in range(len(images)):
                model(images[b:b + 1])
                chosen = [oracle_select(seen[n][0].double().amax(dim=(1, 2)).tolist(), {"rule": "mass", "tau": 0.01})
                          for n in ("block1", "block2")]
                for c in chosen[0] & chosen[1]:
                    expected[int(labels[b]), c] += 1
    for h in hooks:
        h.remove()
    assert torch.equal(result.skip["block1->block2@0"], expected)
    assert int(expected.sum()) > 0


def test_skip_counts_become_identity_edges_of_the_graph():
    result = summit_fast.aggregate(net(), batches(), backend="torch", progress=False)
    for t in [*result.activation.values(), *result.influence.values(), *result.skip.values()]:
        t.zero_()
    result.activation["block1"][1, 2] = result.activation["block2"][1, 2] = 10
    result.skip["block1->block2@0"][1, 2] = 7  # the only edge of class 1: channel 2 -> channel 2
    graph = class_graph(result, 1)
    assert [(n.layer, n.channel) for nodes in graph.nodes.values() for n in nodes] == [("block1", 2), ("block2", 2)]
    assert graph.nodes["block2"][0].prev_channels == [(2, 7)]
    assert class_graph(result, 0).nodes == {"block1": [], "block2": []}  # no edge, no node


def test_skips_survive_save_load_and_merge(tmp_path):
    data = batches()
    whole = summit_fast.aggregate(net(), data, backend="torch", progress=False)
    parts = [summit_fast.aggregate(net(), [b], backend="torch", progress=False) for b in data]
    assert summit_fast.SummitResult.merge(parts) == whole
    whole.save(tmp_path / "r")
    assert summit_fast.SummitResult.load(tmp_path / "r").skip.keys() == {"block1->block2@0"}
