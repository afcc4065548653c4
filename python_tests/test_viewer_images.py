"""Channels shown as pictures, in Summit's layout: the export index lists which image files exist
(summit_fast.export.image_index), `run --feature-vis` renders them, and the page draws each node
as its feature visualisation (else its top dataset example, else a circle), shows its diversity
images and dataset examples on hover, pins a node on click, and asks for no picture that is not
there (no failed request, no console error). Browser tests reuse test_viewer.py's fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from summit_fast.export import export, image_index, refresh_image_index, schema
from summit_fast.featvis import LAYOUT
from summit_fast.result import SummitResult

from test_cli_run import cli, images, tiny  # noqa: F401  (fixtures)
from test_export import digits_result  # noqa: F401  (fixture)
from test_viewer import (LAYERS, SUMMIT_DATA, _png, browser, needs_browser, serve, wait_for_graph,  # noqa: F401
                         write_export)


def images_validator():
    return jsonschema.Draft202012Validator({**schema(), "$ref": "#/$defs/images"})


# -- the index ------------------------------------------------------------------------------
def test_image_index_lists_the_files_that_exist_by_file_name_form():
    present = {"feature-vis/channel/features_14-3-channel.jpg",
               "feature-vis/diversity-0/features_14-3-diversity-0.jpg",
               "feature-vis/diversity-1/features_14-3-diversity-1.jpg",
               "feature-vis/diversity-3/features_14-3-diversity-3.jpg",   # after a gap: not shown
               "feature-vis/dataset-p/features_14-5-dataset-p-0.jpg",
               "feature-vis/dataset-p/features_14-5-dataset-p-1.jpg",
               "feature-vis/channel/features.14-5-channel.jpg",           # the layer's name, not its file-name form
               "feature-vis/channel/mixed4d-0-channel.jpg"}
    asked = []

    def exists(path):
        asked.append(path)
        return path in present

    index = image_index(LAYOUT, {"features.14": [5, 3, 7], "mixed4d": [0]}, exists)
    assert index == {**LAYOUT, "files": {
        "features.14": {"name": "features_14", "feature_vis": [3],
                        "diversity": {"3": 2}, "dataset_examples": {"5": 2}},
        "mixed4d": {"name": "mixed4d", "feature_vis": [0], "diversity": {}, "dataset_examples": {}}}}
    images_validator().validate(index)
    only_channels = image_index({"feature_vis": LAYOUT["feature_vis"]}, {"mixed4d": [0, 1]}, exists)
    assert only_channels["diversity"] is None and only_channels["files"]["mixed4d"]["feature_vis"] == [0]
    assert not any("diversity" in path for path in asked[-2:])  # no pattern: nothing looked for
    with pytest.raises(ValueError, match="layers 'a.b' and 'a_b' have the same file-name form"):
        image_index(LAYOUT, {"a.b": [0], "a_b": [0]}, exists)


def graph_channels(folder: Path) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for path in (folder / "ag").glob("ag-*.json"):
        for layer, nodes in json.loads(path.read_text()).items():
            found.setdefault(layer, set()).update(n["channel"] for n in nodes)
    return found


def test_export_lists_the_images_written_and_carried_over(digits_result, tmp_path):  # noqa: F811
    def write_first_channels(folder, channels):
        for layer, chans in channels.items():
            path = folder / LAYOUT["feature_vis"].format(layer=layer, channel=chans[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"jpg")

    out = export(digits_result, tmp_path / "out", embedding="pca", **LAYOUT, write_images=write_first_channels)
    index = json.loads((out / "summit_fast.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(index)
    nodes = graph_channels(out)
    files = index["images"]["files"]
    assert {layer: f["feature_vis"] for layer, f in files.items()} == {layer: [min(nodes[layer])] for layer in nodes}
    assert all(f["diversity"] == {} and f["dataset_examples"] == {} for f in files.values())

    again = export(digits_result, out, embedding="pca", **LAYOUT)          # feature-vis/ is carried over
    assert json.loads((again / "summit_fast.json").read_text())["images"]["files"] == files
    replaced = export(digits_result, out, embedding="pca", **LAYOUT, replaces=["feature-vis"])
    assert not (replaced / "feature-vis").exists()
    assert all(f["feature_vis"] == [] for f in json.loads((replaced / "summit_fast.json").read_text())["images"]["files"].values())


def test_refresh_image_index_lists_images_rendered_later(digits_result, tmp_path):  # noqa: F811
    out = export(digits_result, tmp_path / "out", embedding="pca", **LAYOUT)
    nodes = graph_channels(out)
    layer = "block2"
    channel = min(nodes[layer])
    for d in range(3):
        path = out / LAYOUT["diversity"].format(layer=layer, channel=channel, d=d)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"jpg")
    before = json.loads((out / "summit_fast.json").read_text())
    assert refresh_image_index(out, nodes)
    after = json.loads((out / "summit_fast.json").read_text())
    assert after["images"]["files"][layer]["diversity"] == {str(channel): 3}
    assert {k: v for k, v in after.items() if k != "images"} == {k: v for k, v in before.items() if k != "images"}
    (out / "summit_fast.json").write_text(json.dumps({**after, "version": 2}))
    assert not refresh_image_index(out, nodes)                              # an earlier version: left as it is
    assert json.loads((out / "summit_fast.json").read_text())["version"] == 2
    assert not refresh_image_index(tmp_path / "nothing", nodes)


# -- run --feature-vis ----------------------------------------------------------------------
FEATURE_VIS = ("--feature-vis", "--feature-vis-size", "16", "--feature-vis-steps", "2", "--diversity", "2")


def test_run_feature_vis_renders_the_graph_channels_and_reruns_from_the_cache(tiny, images, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "2", *FEATURE_VIS)
    assert code == 0, err
    viewer = out / "viewer"
    nodes = graph_channels(viewer)
    count = sum(len(c) for c in nodes.values())
    assert f"feature visualisations of the {count} channels in the graphs (16 px, 2 steps, 2 diversity images): " \
           f"rendered {count}, 0 from the cache" in stdout
    files = json.loads((viewer / "summit_fast.json").read_text())["images"]["files"]
    result = SummitResult.load(out / "result")
    for layer, chans in nodes.items():
        assert files[layer]["feature_vis"] == sorted(chans)
        assert files[layer]["diversity"] == {str(c): 2 for c in sorted(chans)}
        examples = (result.examples[layer]["image"] >= 0).sum(dim=1)
        assert files[layer]["dataset_examples"] == {str(c): int(examples[c]) for c in sorted(chans) if examples[c]}
        for c in chans:
            assert (viewer / LAYOUT["feature_vis"].format(layer=layer, channel=c)).is_file()
            assert (viewer / LAYOUT["diversity"].format(layer=layer, channel=c, d=1)).is_file()

    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "2", *FEATURE_VIS)
    assert code == 0, err
    assert f"rendered 0, {count} from the cache" in stdout

    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "2")
    assert code == 0, err
    files = json.loads((viewer / "summit_fast.json").read_text())["images"]["files"]
    assert all(f["feature_vis"] == [] and f["diversity"] == {} and f["dataset_examples"] for f in files.values())
    assert not list((viewer / "feature-vis").glob("channel/*.jpg"))
    assert list((viewer / "feature-vis" / ".cache").rglob("*.png"))    # kept for the next --feature-vis


def test_run_help_documents_the_feature_vis_defaults():
    from test_cli_run import run_cli

    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "--feature-vis-size PX their side in pixels (default 128 on a GPU, 64 on a CPU)" in text
    assert "--feature-vis-steps N optimisation steps per image (default 512 on a GPU, 128 on a CPU)" in text
    assert "--feature-vis-batch B images optimised at once (default 64 on a GPU, 32 on a CPU" in text
    assert "--diversity D diversity images per channel (default 4, as Summit; 0: none)" in text


def test_feature_vis_settings_without_feature_vis_are_one_line(tmp_path, capsys, images):  # noqa: F811
    code, _, err = cli(capsys, "--images", images, "--out", tmp_path / "out", "--feature-vis-steps", "8",
                       "--diversity", "0")
    assert code == 1 and err.strip().endswith(
        "error: --feature-vis-steps, --diversity set how --feature-vis renders: add --feature-vis, or leave out what "
        "it sets")
    assert not (tmp_path / "out").exists()


def test_a_feature_vis_size_the_model_cannot_take_stops_run_before_it_aggregates(tmp_path, capsys, images,  # noqa: F811
                                                                                monkeypatch):
    import importlib

    from test_featvis import ShrinkingNet

    monkeypatch.setattr("summit_fast.cli_run.load_model", lambda *args: ShrinkingNet())
    monkeypatch.setattr(importlib.import_module("summit_fast.aggregate"), "aggregate",
                        lambda *a, **k: pytest.fail("aggregated before the size was checked"))
    code, _, err = cli(capsys, "--images", images, "--out", tmp_path / "out", "--feature-vis", "--feature-vis-size", "8")
    assert code == 1 and err.strip().endswith(
        "error: --feature-vis-size 8 is too small for ShrinkingNet up to layer 'deep': the smallest --feature-vis-size "
        "that works is 12")
    assert not (tmp_path / "out" / "result").exists() and not (tmp_path / "out" / "viewer").exists()


# -- the page -------------------------------------------------------------------------------
def write_pictured_export(out: Path) -> Path:
    """test_viewer's export as version 3: feature visualisations of conv2 and conv3 but of conv3's
    channel 1 (drawn as its top dataset example instead), two diversity images per conv3 channel,
    three dataset examples per conv3 channel, nothing for conv1 (circles); the index lists them."""
    write_export(out)
    (out / "feature-vis" / "channel" / "conv3-1-channel.png").unlink()
    for ch in range(LAYERS["conv3"]):
        for d in range(2):
            (out / "feature-vis" / f"diversity-{d}").mkdir(parents=True, exist_ok=True)
            (out / "feature-vis" / f"diversity-{d}" / f"conv3-{ch}-diversity-{d}.png").write_bytes(_png((20, 200, 40 * d)))
    index = json.loads((out / "summit_fast.json").read_text())
    patterns = {**index["images"], "diversity": "feature-vis/diversity-{d}/{layer}-{channel}-diversity-{d}.png"}
    index.update(version=3, images=image_index(patterns, graph_channels(out), lambda path: (out / path).is_file()))
    (out / "summit_fast.json").write_text(json.dumps(index))
    return out


@pytest.fixture
def strict_page(browser):  # noqa: F811
    """A page that records script errors, console errors, failed requests and HTTP errors; the test
    fails on any of them."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(300_000)
    opened = context.new_page()
    opened.problems = []
    opened.on("pageerror", lambda error: opened.problems.append(f"script error: {error}"))
    opened.on("console", lambda m: m.type == "error" and opened.problems.append(f"console: {m.text}"))
    opened.on("requestfailed", lambda r: opened.problems.append(f"failed: {r.url}"))
    opened.on("response", lambda r: r.status >= 400 and opened.problems.append(f"HTTP {r.status}: {r.url}"))
    yield opened
    context.close()
    assert opened.problems == []


def node_selector(layer: str, channel: int) -> str:
    return f"#graph-svg g.node[data-layer='{layer}'][data-channel='{channel}']"


def all_pictures_loaded(page) -> None:
    page.wait_for_function("() => [...document.querySelectorAll('#graph-svg image.node-image')]"
                           ".every((image) => image.classList.contains('loaded'))")


@needs_browser
def test_nodes_are_their_pictures_hover_shows_them_click_pins(strict_page, serve, tmp_path):
    page = strict_page
    folder = write_pictured_export(tmp_path / "export")
    graph = json.loads((folder / "ag" / "ag-3.json").read_text())
    page.goto(serve(folder) + "#class=3")
    wait_for_graph(page, graph)
    all_pictures_loaded(page)
    hrefs = dict(page.eval_on_selector_all(
        "#graph-svg g.node", "gs => gs.map(g => [g.dataset.layer + '/' + g.dataset.channel,"
        " g.querySelector('image.node-image')?.getAttribute('href') ?? null])"))
    for layer, nodes in graph.items():
        for node in nodes:
            ch = node["channel"]
            expected = {"conv1": None, "conv2": f"data/feature-vis/channel/conv2-{ch}-channel.png",
                        "conv3": f"data/feature-vis/channel/conv3-{ch}-channel.png"}[layer]
            if layer == "conv3" and ch == 1:
                expected = "data/dataset-examples/conv3/conv3-1-0.png"   # no feature visualisation: top example
            assert hrefs[f"{layer}/{ch}"] == expected, (layer, ch)
    assert page.locator("#graph-svg g.node[data-layer='conv1'] circle.disc").count() == len(graph["conv1"])
    assert page.locator("#graph-svg g.node.pictured").count() == len(graph["conv2"]) + len(graph["conv3"])

    first, second = graph["conv3"][0]["channel"], graph["conv3"][1]["channel"]
    details = page.locator("#details")
    page.hover(node_selector("conv3", first))
    assert details.locator("h3").text_content() == f"conv3 · channel {first}"
    page.wait_for_function("() => document.querySelectorAll('#details .diversity img:not([hidden])').length === 2"
                           " && document.querySelectorAll('#details .examples img:not([hidden])').length === 3")
    page.screenshot(path=tmp_path / "hover.png")

    page.click(node_selector("conv3", first))                  # pinned: stays while others are hovered
    page.hover(node_selector("conv3", second))
    assert details.locator("h3").text_content() == f"conv3 · channel {first}"
    assert page.locator("#graph-svg g.node.pinned").count() == 1 and "pinned" in details.text_content()
    page.mouse.move(5, 5)
    assert details.locator("h3").text_content() == f"conv3 · channel {first}"
    page.click(node_selector("conv3", second))                 # another is pinned
    assert details.locator("h3").text_content() == f"conv3 · channel {second}"
    assert page.locator(f"{node_selector('conv3', second)}.pinned").count() == 1
    page.screenshot(path=tmp_path / "pinned.png")
    page.click(node_selector("conv3", second))                 # clicked again: released
    assert page.locator("#graph-svg g.node.pinned").count() == 0
    page.mouse.move(5, 5)
    assert details.locator("h3").text_content() == "fire truck"       # the class's summary again


@needs_browser
@pytest.mark.skipif(not (SUMMIT_DATA / "ag").is_dir(), reason=f"Summit's released data not found at {SUMMIT_DATA}")
def test_summit_folder_shows_its_feature_vis_and_asks_for_nothing_else(strict_page, serve, tmp_path):
    page = strict_page
    graph = json.loads((SUMMIT_DATA / "ag" / "ag-0.json").read_text())
    page.goto(serve(SUMMIT_DATA))
    wait_for_graph(page, graph)
    all_pictures_loaded(page)
    pictured = page.eval_on_selector_all("#graph-svg g.node.pictured", "gs => gs.map(g => g.dataset.layer)")
    on_disk = {int(p.name.split("-")[1]) for p in (SUMMIT_DATA / "feature-vis" / "channel").glob("mixed4d-*-channel.jpg")}
    assert len(pictured) == sum(n["channel"] in on_disk for n in graph["mixed4d"]) > 0 and set(pictured) == {"mixed4d"}
    page.hover(node_selector("mixed4d", graph["mixed4d"][0]["channel"]))
    page.wait_for_function("() => { const img = document.querySelector('#details img.feature-vis');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    assert page.locator("#details .diversity img, #details .examples img").count() == 0
    page.screenshot(path=tmp_path / "summit.png")
