"""The viewer on deep models, in Chromium: a 19-layer graph (MobileNetV2's summary layers) with no
node box or label overlapping another; details that name what a node's sources are channels of and
say of how many images; two classes compared; and graphs over a subset of the layers
(``--layers``) from the export to the page. Each browser test saves a screenshot in its tmp_path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import summit_fast
from summit_fast.models import digits_cnn

from cli_command import run_cli
from test_viewer import browser, counts_in, needs_browser, page, serve, wait_for_graph  # noqa: F401 (fixtures)

# MobileNetV2's summary layers and their channels (summit_fast.models.mobilenet_v2)
DEEP = {f"features.{i}": c for i, c in enumerate(
    [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280])}
DEEP_NAMES = ["tench", "goldfish", "great white shark"]
INSTANCES = [183, 1, None]  # images per class; the last class's count is unknown


def writer(layer: str, channels: int) -> dict:
    """The conv that writes ``layer`` in MobileNetV2: a block's projection, reading its depthwise
    conv's output (not a summary layer), or the last 1x1 conv, reading features.17."""
    if layer == "features.18":
        return {"offset": 0, "channels": channels, "conv": "features.18.0", "source": "features.17"}
    return {"offset": 0, "channels": channels, "conv": f"{layer}.conv.2", "source": f"{layer}.conv.1.0"}


def deep_graph(rng: random.Random) -> dict:
    """A graph over DEEP's 19 layers with 2..28 nodes a layer (four-digit channels in features.18)."""
    layers = list(DEEP)
    kept = {layer: sorted(rng.sample(range(DEEP[layer]), min(DEEP[layer], rng.randint(2, 28)))) for layer in layers}
    graph = {}
    for depth, layer in reversed(list(enumerate(layers))):
        below = kept[layers[depth - 1]] if depth else []
        graph[layer] = [{
            "channel": ch, "count": rng.randint(2, 180), "layer": layer, "pagerank": rng.random() / 100,
            "prev_channels": [{"prev_channel": p, "inf": rng.randint(1, 150)}
                              for p in rng.sample(below, min(len(below), rng.randint(1, 3)))],
            "attr_channels": [{"prev_channel": str(p), "inf": rng.randint(2, 150)} for p in rng.sample(range(960), 3)],
        } for ch in kept[layer]]
    return graph


def write_deep_export(out: Path) -> list[dict]:
    """A 3-class export over DEEP's layers; returns the graphs by class. Class 0's first node of
    features.5 has count 83 and a source of count 1 (for the wording checks)."""
    rng = random.Random(19)
    (out / "ag").mkdir(parents=True)
    graphs = [deep_graph(rng) for _ in DEEP_NAMES]
    graphs[0]["features.5"][0]["count"] = 83
    graphs[0]["features.5"][0]["attr_channels"][2]["inf"] = 1
    graphs[2]["features.5"][0]["attr_channels"][0]["inf"] = 1
    for c, graph in enumerate(graphs):
        (out / "ag" / f"ag-{c}.json").write_text(json.dumps(graph))
    classes = [{"name": name, "target_class": c, "numOfInstances": INSTANCES[c],
                "topChannels": {layer: [] for layer in DEEP},
                "embed": {layer: {"x": c, "y": -c} for layer in DEEP}} for c, name in enumerate(DEEP_NAMES)]
    (out / "classes.json").write_text(json.dumps(classes))
    (out / "summit_fast.json").write_text(json.dumps({
        "schema": "summit_fast.export", "version": 2, "num_classes": len(DEEP_NAMES), "layers": list(DEEP),
        "channels": DEEP, "class_names": DEEP_NAMES, "embedding": {"method": "pca"},
        "images": {"feature_vis": None, "dataset_examples": None},
        "attr_sources": {layer: [writer(layer, c)] for layer, c in DEEP.items()},
        "graphs": "ag/ag-{c}.json", "classes": "classes.json"}))
    return graphs


# Every node box (the ring: the node's square), channel label and layer label on screen, and the
# pairs of them that overlap (by more than a rounding error).
OVERLAPS = """() => {
  const boxes = [];
  for (const node of document.querySelectorAll('#graph-svg g.node:not(.filtered)')) {
    const name = `${node.dataset.layer}:${node.dataset.channel}`;
    boxes.push([`node ${name}`, node.querySelector('.ring').getBoundingClientRect()]);
    boxes.push([`label ${name}`, node.querySelector('.channel-label').getBoundingClientRect()]);
  }
  for (const label of document.querySelectorAll('#graph-svg .layer-label')) {
    boxes.push([`layer ${label.textContent}`, label.getBoundingClientRect()]);
  }
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i][1], boxes[j][1]];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 0.5 && h > 0.5) overlaps.push([boxes[i][0], boxes[j][0]]);
    }
  }
  return { boxes: boxes.length, overlaps: overlaps.slice(0, 10), smallest: Math.min(...boxes.slice(0, -1).map(([, r]) => r.width)) };
}"""


def assert_no_overlaps(page, nodes: int, rows: int) -> None:
    found = page.evaluate(OVERLAPS)
    assert found["boxes"] == 2 * nodes + rows
    assert found["overlaps"] == []


@pytest.fixture
def deep_export(tmp_path):
    folder = tmp_path / "deep"
    return folder, write_deep_export(folder)


@needs_browser
def test_nineteen_layers_without_overlaps(page, deep_export, serve, tmp_path):
    folder, graphs = deep_export
    page.goto(serve(folder))
    wait_for_graph(page, graphs[0])
    nodes, _ = counts_in(graphs[0])
    assert page.locator("#graph-svg .layer-band").count() == 19
    assert_no_overlaps(page, nodes, 19)
    page.screenshot(path=tmp_path / "deep.png")

    # The size sliders cannot squeeze the layout into overlaps; zooming in keeps it apart too.
    for slider in ("#graph-width", "#graph-height"):
        page.eval_on_selector(slider, "input => { input.value = 0; input.dispatchEvent(new Event('input')); }")
    page.wait_for_timeout(400)  # the layout's transition
    assert_no_overlaps(page, nodes, 19)
    page.mouse.move(500, 400)
    page.mouse.wheel(0, -600)
    page.click("#graph-fit")
    assert_no_overlaps(page, nodes, 19)
    page.screenshot(path=tmp_path / "deep-smallest.png")


@needs_browser
def test_details_name_the_sources_layer_and_reconcile_counts(page, deep_export, serve):
    folder, graphs = deep_export
    page.goto(serve(folder))
    wait_for_graph(page, graphs[0])
    node = graphs[0]["features.5"][0]
    page.hover(f"#graph-svg g.node[data-layer='features.5'][data-channel='{node['channel']}']", force=True)
    details = page.locator("#details")
    facts = dict(zip(details.locator("dt").all_text_contents(), details.locator("dd").all_text_contents()))
    assert facts["count"] == "83 of 183 images"
    assert details.locator(".sources-in").text_content() == (
        "channels of features.5.conv.1.0 (not drawn in the graph), the input of conv features.5.conv.2")
    items = [li.text_content() for li in details.locator("ol.sources li").all()]
    assert items == [f"features.5.conv.1.0 channel {s['prev_channel']}{s['inf']} of 183 images"
                     for s in node["attr_channels"]]
    assert items[2].endswith("1 of 183 images")

    last = graphs[0]["features.18"][0]  # written by a conv that reads a drawn layer
    page.hover(f"#graph-svg g.node[data-layer='features.18'][data-channel='{last['channel']}']", force=True)
    assert details.locator(".sources-in").text_content() == "channels of features.17, the input of conv features.18.0"

    page.click("#class-list li[data-class='2'] button")  # unknown image count: no "of", singular for 1
    wait_for_graph(page, graphs[2])
    node = graphs[2]["features.5"][0]
    page.hover(f"#graph-svg g.node[data-layer='features.5'][data-channel='{node['channel']}']", force=True)
    facts = dict(zip(details.locator("dt").all_text_contents(), details.locator("dd").all_text_contents()))
    assert facts["count"] == f"{node['count']} images"
    assert details.locator("ol.sources li").first.text_content().endswith("channel "
                                                                          f"{node['attr_channels'][0]['prev_channel']}1 image")


def membership(first: dict, second: dict) -> dict[str, set]:
    """Nodes (layer, channel) of two graphs: in both, only the first, only the second."""
    a = {(layer, n["channel"]) for layer, nodes in first.items() for n in nodes}
    b = {(layer, n["channel"]) for layer, nodes in second.items() for n in nodes}
    return {"both": a & b, "first": a - b, "second": b - a}


def shown(page, which: str) -> set:
    return {(layer, int(ch)) for layer, ch in page.eval_on_selector_all(
        f"#graph-svg g.node.in-{which}", "ns => ns.map(n => [n.dataset.layer, n.dataset.channel])")}


@needs_browser
def test_compare_two_classes(page, deep_export, serve, tmp_path):
    folder, graphs = deep_export
    # Two graphs that share channels: class 1's is class 0's with some nodes dropped and others added.
    rng = random.Random(3)
    second = {layer: [n for n in nodes if rng.random() < 0.6] for layer, nodes in graphs[0].items()}
    for layer, nodes in graphs[1].items():
        second[layer] += [n for n in nodes if n["channel"] not in {m["channel"] for m in graphs[0][layer]}][:3]
    (folder / "ag" / "ag-1.json").write_text(json.dumps(second))
    expected = membership(graphs[0], second)
    assert all(expected.values())

    url = serve(folder)
    page.goto(url)
    wait_for_graph(page, graphs[0])
    page.select_option("#compare-select", "1")
    page.wait_for_function("n => document.querySelectorAll('#graph-svg g.node').length === n",
                           arg=sum(map(len, expected.values())))
    assert {which: shown(page, which) for which in expected} == expected
    assert page.text_content("#graph-title") == "tench vs goldfish"
    colours = {which: page.eval_on_selector(f"#graph-svg g.node.in-{which} .ring", "r => getComputedStyle(r).stroke")
               for which in expected}
    assert len(set(colours.values())) == 3
    assert page.locator("#compare-legend .legend-item").all_text_contents() == [
        "in both classes", "only tench", "only goldfish"]
    assert page.locator("#compare-legend").is_visible()
    facts = dict(zip(page.locator("#details dt").all_text_contents(), page.locator("#details dd").all_text_contents()))
    assert facts["channels in both"] == str(len(expected["both"]))
    assert facts["only goldfish"] == str(len(expected["second"]))
    assert "compare=1" in page.url
    page.screenshot(path=tmp_path / "compare.png")

    page.goto(url + "#class=1&compare=0")  # from the address; "none" turns it off
    page.reload()
    page.wait_for_function("() => document.getElementById('graph-title').textContent === 'goldfish vs tench'")
    assert shown(page, "second") == expected["first"]
    page.select_option("#compare-select", "")
    page.wait_for_function("n => document.querySelectorAll('#graph-svg g.node').length === n", arg=counts_in(second)[0])
    assert page.locator("#graph-svg g.node.in-both").count() == 0 and not page.locator("#compare-legend").is_visible()
    assert "compare" not in page.url


@pytest.fixture(scope="module")
def digits_result_dir(tmp_path_factory):
    """The digits CNN (random weights, three summary layers) aggregated on a few synthetic batches, saved."""
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)) for _ in range(3)]
    torch.manual_seed(0)
    result = summit_fast.aggregate(digits_cnn(4).eval(), batches, selection=summit_fast.topk(4), backend="torch",
                                   progress=False)
    folder = tmp_path_factory.mktemp("digits") / "result"
    result.save(folder)
    return folder


@needs_browser
def test_export_of_a_layer_subset_end_to_end(page, digits_result_dir, serve, tmp_path):
    out = tmp_path / "viewer"
    done = run_cli("export", str(digits_result_dir), "--out", str(out), "--layers", "block3", "--layers", "block1",
                   "--embedding", "pca", timeout=300)
    assert done.returncode == 0, done.stderr
    index = json.loads((out / "summit_fast.json").read_text())
    assert index["layers"] == ["block1", "block3"] and list(index["attr_sources"]) == ["block1", "block3"]
    graph = json.loads((out / "ag" / "ag-0.json").read_text())
    assert list(graph) == ["block3", "block1"] and counts_in(graph)[1] > 0
    page.goto(serve(out))
    wait_for_graph(page, graph)
    assert page.locator("#graph-svg .layer-label").all_text_contents() == ["block3", "block1"]
    page.screenshot(path=tmp_path / "subset.png")

    for layers, message in (("block1,block9", "unknown layer(s) 'block9'; the summary layers are block1, block2, block3"),
                            ("block2", "a graph needs at least two layers, got ['block2']; the summary layers are "
                                       "block1, block2, block3")):
        failed = run_cli("export", str(digits_result_dir), "--out", str(tmp_path / "bad"), "--layers", layers,
                         timeout=300)
        assert failed.returncode != 0
        assert failed.stderr.splitlines() == [f"summit-fast export: error: {message}"]
        assert not (tmp_path / "bad" / "summit_fast.json").exists()


def test_run_refuses_an_unknown_layer_before_counting(tmp_path):
    (tmp_path / "images").mkdir()
    failed = run_cli("run", "--model", "mobilenet_v2", "--images", str(tmp_path / "images"), "--out",
                     str(tmp_path / "out"), "--layers", "features.0,features.19", "--workers", "0", timeout=300)
    assert failed.returncode != 0
    assert failed.stderr.splitlines()[-1] == (
        "summit-fast run: error: unknown layer(s) 'features.19'; the summary layers are "
        + ", ".join(DEEP))
    assert not (tmp_path / "out" / "result").exists() and not (tmp_path / "out" / "viewer").exists()
