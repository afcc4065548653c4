"""The viewer: its index for Summit-only folders, its local server, ``summit-fast view``, and the page
itself, driven in Debian's headless Chromium through Playwright (never ``playwright install``: the
browser comes from ``.ci/install_browser.sh``).

Browser tests run against (a) a small folder in the export format written here, with a class named
like an HTML injection, and (b) Summit's released graphs in ../shared/data/summit-data. Each saves a
screenshot in its tmp_path.
"""

from __future__ import annotations

import json
import random
import re
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import jsonschema
import pytest

from summit_fast.export import SCHEMA_VERSION, schema
from summit_fast.viewer.index import (READABLE_VERSIONS, build_index, default_class_names, graph_files, index_files,
                                      read_class_names)
from summit_fast.viewer.server import make_server
from summit_fast.viewer.standalone import write_standalone

from cli_command import run_cli, start_cli

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
SUMMIT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "summit-data"
HOSTILE = "<img src=x onerror=alert(1)>"

HAS_BROWSER = sync_playwright is not None and CHROMIUM.exists()
NO_BROWSER = ("browser tests need Playwright for Python (pip install playwright; never `playwright install`) "
              "and Debian's chromium at /usr/bin/chromium (.ci/install_browser.sh)")
needs_browser = pytest.mark.skipif(not HAS_BROWSER, reason=NO_BROWSER)


# ---------------------------------------------------------------------------------------------
# A small exported folder, in the format the export writes (summit_fast.json, classes.json, ag/).

LAYERS = {"conv1": 8, "conv2": 12, "conv3": 16}  # first to last
NAMES = ["tabby cat", "golden retriever", HOSTILE, "fire truck", "banana"]


def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A solid-colour PNG, so that the fixture needs no imaging library."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _graph(rng: random.Random) -> dict:
    layers = list(LAYERS)
    kept = {layer: sorted(rng.sample(range(LAYERS[layer]), rng.randint(3, 6))) for layer in layers}
    graph = {}
    for depth, layer in reversed(list(enumerate(layers))):
        below = kept[layers[depth - 1]] if depth else []
        graph[layer] = [{
            "channel": ch,
            "count": rng.randint(1, 400),
            "layer": layer,
            "pagerank": rng.random() / 100,
            "prev_channels": [{"prev_channel": p, "inf": rng.randint(1, 300)}
                              for p in rng.sample(below, min(len(below), rng.randint(1, 3)))],
            "attr_channels": [{"prev_channel": str(p), "inf": rng.randint(1, 300)} for p in rng.sample(range(20), 3)],
        } for ch in kept[layer]]
    return graph


def write_export(out: Path, version: int = 2) -> Path:
    """A 5-class, 3-layer exported folder with feature visualisations for conv2 and conv3 (none for
    conv1, which the page must tolerate) and three dataset examples per conv3 channel. Class c has
    target_class c, so its graph is ag-{c}.json in either version."""
    rng = random.Random(5)
    (out / "ag").mkdir(parents=True)
    for c in range(len(NAMES)):
        (out / "ag" / f"ag-{c}.json").write_text(json.dumps(_graph(rng)))
    classes = []
    for c, name in enumerate(NAMES):
        counts = {layer: {ch: rng.randint(0, 50) for ch in range(size)} for layer, size in LAYERS.items()}
        classes.append({
            "name": name,
            "target_class": c,
            "topChannels": {layer: [{"c": ch, "i": n} for ch, n in sorted(row.items(), key=lambda t: (-t[1], t[0])) if n]
                            for layer, row in counts.items()},
            "embed": {layer: {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)} for layer in LAYERS},
            "numOfInstances": 100 + 10 * c,
            "topOneAcc": 0.5 + 0.1 * c,
            "topOneAccCount": 50 + 10 * c,
        })
    (out / "classes.json").write_text(json.dumps(classes))
    (out / "summit_fast.json").write_text(json.dumps({
        "schema": "summit_fast.export", "version": version, "num_classes": len(NAMES), "layers": list(LAYERS),
        "channels": LAYERS, "class_names": NAMES, "embedding": {"method": "umap"},
        "images": {"feature_vis": "feature-vis/channel/{layer}-{channel}-channel.png",
                   "dataset_examples": "dataset-examples/{layer}/{layer}-{channel}-{i}.png"},
        "graphs": "ag/ag-{c}.json", "classes": "classes.json"}))
    (out / "feature-vis" / "channel").mkdir(parents=True)
    (out / "dataset-examples" / "conv3").mkdir(parents=True)
    for layer in ("conv2", "conv3"):
        for ch in range(LAYERS[layer]):
            (out / "feature-vis" / "channel" / f"{layer}-{ch}-channel.png").write_bytes(_png((40 * ch % 256, 120, 200)))
    for ch in range(LAYERS["conv3"]):
        for i in range(3):
            (out / "dataset-examples" / "conv3" / f"conv3-{ch}-{i}.png").write_bytes(_png((200, 60 * i, 90)))
    return out


def write_graphs_only(out: Path) -> Path:
    """A Summit-like folder: the fixture's graphs and one feature visualisation, no index files."""
    export = write_export(out.parent / (out.name + "-export"))
    (out / "feature-vis" / "channel").mkdir(parents=True)
    (out / "feature-vis" / "channel" / "conv3-1-channel.jpg").write_bytes(b"not read by the index")
    (out / "ag").mkdir()
    for path in (export / "ag").iterdir():
        (out / "ag" / path.name).write_bytes(path.read_bytes())
    return out


IDS = [10 * c + 7 for c in range(len(NAMES))]  # the model's class indices of a run of some classes


def of_some_classes(export: Path, version: int) -> list[dict]:
    """Makes the fixture's export one of classes IDS (target_class IDS[c] for row c), its graph files
    named as the version names them: by target_class in version 2, by row in version 1. Returns the
    graphs by row."""
    index = json.loads((export / "summit_fast.json").read_text())
    (export / "summit_fast.json").write_text(json.dumps({**index, "version": version}))
    classes = json.loads((export / "classes.json").read_text())
    for c, cls in enumerate(classes):
        cls["target_class"] = IDS[c]
        if version >= 2:
            (export / "ag" / f"ag-{c}.json").rename(export / "ag" / f"ag-{IDS[c]}.json")
    (export / "classes.json").write_text(json.dumps(classes))
    names = [f"ag-{IDS[c] if version >= 2 else c}.json" for c in range(len(classes))]
    assert sorted(p.name for p in (export / "ag").iterdir()) == sorted(names)
    return [json.loads((export / "ag" / name).read_text()) for name in names]


def counts_in(graph: dict) -> tuple[int, int]:
    """(nodes, edges) of an ag-{c}.json graph: an edge is one prev_channels entry."""
    nodes = [n for layer_nodes in graph.values() for n in layer_nodes]
    return len(nodes), sum(len(n["prev_channels"]) for n in nodes)


@pytest.fixture
def export_dir(tmp_path):
    return write_export(tmp_path / "export")


@pytest.fixture
def serve():
    """serve(folder, class_names=None) -> base URL of a viewer server on a free port."""
    servers = []

    def start(folder: Path, class_names=None) -> str:
        server = make_server(folder, 0, class_names)
        server.start_in_thread()
        servers.append(server)
        return server.url
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url: str, host: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# ---------------------------------------------------------------------------------------------
# Index, server and command line (no browser).

def test_index_built_from_graphs_alone(tmp_path):
    folder = write_graphs_only(tmp_path / "summit")
    sparse = json.loads((folder / "ag" / "ag-4.json").read_text())
    sparse["conv1"] = []
    (folder / "ag" / "ag-4.json").write_text(json.dumps(sparse))
    index, classes = build_index(folder)
    assert index["num_classes"] == len(NAMES)
    assert index["schema"] == "summit_fast.export" and index["version"] == SCHEMA_VERSION == 3
    jsonschema.Draft202012Validator(schema()).validate(index)   # the export's own schema
    assert [cls["target_class"] for cls in classes] == list(range(len(NAMES)))  # graph ag-{c}: class c
    assert graph_files(index, classes) == [f"ag/ag-{c}.json" for c in range(len(NAMES))]
    assert index["layers"] == list(LAYERS)                      # graphs list last to first
    assert index["class_names"] == [f"class {c}" for c in range(len(NAMES))]
    assert index["images"]["feature_vis"] == "feature-vis/channel/{layer}-{channel}-channel.jpg"
    assert {layer: files["feature_vis"] for layer, files in index["images"]["files"].items()} == {
        "conv1": [], "conv2": [], "conv3": [1]}                 # the one file there
    assert index["embedding"]["method"] == "pca"  # umap-learn is not a test dependency
    graph = json.loads((folder / "ag" / "ag-2.json").read_text())
    top = classes[2]["topChannels"]["conv2"]
    assert sorted((e["i"], -e["c"]) for e in top)[::-1] == [(e["i"], -e["c"]) for e in top]   # by count, descending
    assert {e["c"]: e["i"] for e in top} == {n["channel"]: n["count"] for n in graph["conv2"]}
    assert all(set(cls["embed"]) == set(LAYERS) for cls in classes)
    assert classes[4]["embed"]["conv1"] is None and classes[4]["topChannels"]["conv1"] == []
    assert all(cls["embed"][layer] is not None for cls in classes[:4] for layer in LAYERS)
    assert all(cls["numOfInstances"] is None for cls in classes)

    named, _ = build_index(folder, ["a", "b", "c", "d", "e"])
    assert named["class_names"] == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="3 class names given for 5 graphs"):
        build_index(folder, ["a", "b", "c"])


def test_index_errors_and_class_name_files(tmp_path, export_dir):
    assert index_files(export_dir) == {}                        # an export is served as it is
    with pytest.raises(ValueError, match="--class-names applies only"):
        index_files(export_dir, ["x"] * len(NAMES))
    with pytest.raises(ValueError, match="graphs found"):
        build_index(tmp_path)
    gap = write_graphs_only(tmp_path / "gap")
    (gap / "ag" / "ag-1.json").unlink()
    with pytest.raises(ValueError, match=r"missing e\.g\. \[1\]"):
        build_index(gap)

    (tmp_path / "names.txt").write_text("tench\ngoldfish\n")
    (tmp_path / "names.json").write_text('["tench", "goldfish"]')
    assert read_class_names(tmp_path / "names.txt") == read_class_names(tmp_path / "names.json") == ["tench", "goldfish"]
    assert default_class_names(1000)[207].startswith("golden retriever")    # Summit's classes: ImageNet's order
    assert default_class_names(2) == ["class 0", "class 1"]


def test_graph_files_by_version(tmp_path):
    """Versions 2 and 3 name a class's graph file by its target_class, version 1 by its row; other
    versions are refused, by the page (data-source.js) as by write_standalone."""
    from summit_fast.viewer import STATIC_DIR

    index = {"schema": "summit_fast.export", "graphs": "ag/ag-{c}.json"}
    classes = [{"target_class": 7}, {"target_class": 2}, {"target_class": 9}]
    assert graph_files({**index, "version": 2}, classes) == ["ag/ag-7.json", "ag/ag-2.json", "ag/ag-9.json"]
    assert graph_files({**index, "version": 3}, classes) == ["ag/ag-7.json", "ag/ag-2.json", "ag/ag-9.json"]
    assert graph_files({**index, "version": 1}, classes) == ["ag/ag-0.json", "ag/ag-1.json", "ag/ag-2.json"]
    for bad in ({**index, "version": 4}, {**index, "version": "2"}, {**index, "schema": "x", "version": 2}):
        with pytest.raises(ValueError, match="expected schema summit_fast.export version 1 or 2 or 3"):
            graph_files(bad, classes)
    assert READABLE_VERSIONS == (1, 2, 3) and SCHEMA_VERSION in READABLE_VERSIONS
    script = (STATIC_DIR / "js" / "data-source.js").read_text()
    assert re.search(r"const SCHEMA_VERSIONS = \[1, 2, 3\];", script)

    export = write_export(tmp_path / "export", version=4)
    with pytest.raises(ValueError, match="found summit_fast.export version 4"):
        write_standalone(export, tmp_path / "copy")


@pytest.mark.parametrize("version", [1, 2])
def test_disk_copy_of_an_export_of_some_classes(tmp_path, version):
    """write_standalone bundles each class's graph file as its version names it."""
    export = write_export(tmp_path / "export", version=version)
    graphs = of_some_classes(export, version)
    write_standalone(export, tmp_path / "copy")
    script = (tmp_path / "copy" / "data.js").read_text()
    files = json.loads(script[script.index("{"):script.rindex(";")])["files"]
    names = [f"ag/ag-{IDS[c] if version == 2 else c}.json" for c in range(len(NAMES))]
    assert set(files) == {"summit_fast.json", "classes.json", *names}
    assert [files[name] for name in names] == graphs


def test_page_references_only_shipped_files():
    """Every script and stylesheet the page loads ships in the package (data.js is generated)."""
    from summit_fast.viewer import STATIC_DIR
    html = (STATIC_DIR / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="([^":]+)"', html)) - {"data.js"}
    assert {"vendor/d3.min.js", "viewer.css", "js/main.js"} <= referenced
    assert all((STATIC_DIR / path).is_file() for path in referenced), referenced
    assert (STATIC_DIR / "vendor" / "LICENSE.d3").is_file()


def test_server_routes_and_refusals(tmp_path, export_dir, serve):
    url = serve(export_dir)
    assert url.startswith("http://127.0.0.1:")
    status, headers, body = get(url)
    assert status == 200 and b"<title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert get(url + "data.js")[2] == b'window.SUMMIT_FAST_DATA = {"base": "data/", "files": null};\n'
    assert get(url + "data/summit_fast.json")[2] == (export_dir / "summit_fast.json").read_bytes()
    assert get(url + "data/ag/ag-2.json")[2] == (export_dir / "ag" / "ag-2.json").read_bytes()
    assert get(url + "data/ag/")[0] == 404                            # no directory listings
    assert get(url + "data/%2e%2e/%2e%2e/etc/passwd")[0] == 404       # '..' segments are dropped
    assert get(url, host="attacker.example:80")[0] == 421             # DNS rebinding

    summit_url = serve(write_graphs_only(tmp_path / "summit"), [f"n{c}" for c in range(len(NAMES))])
    index = json.loads(get(summit_url + "data/summit_fast.json")[2])
    assert index["class_names"] == [f"n{c}" for c in range(len(NAMES))]
    assert len(json.loads(get(summit_url + "data/classes.json")[2])) == len(NAMES)


def test_cli_view_prints_url_and_serves(export_dir):
    process = start_cli("view", str(export_dir), "--port", "0", "--no-browser")
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, (line, process.stderr.read() if process.poll() is not None else "")
        assert json.loads(get(url.group(0) + "data/summit_fast.json")[2])["num_classes"] == len(NAMES)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_view_static_writes_a_disk_copy(tmp_path, export_dir):
    result = run_cli("view", str(export_dir), "--static", str(tmp_path / "copy"), timeout=120, check=True)
    assert result.stdout.strip() == (tmp_path / "copy" / "index.html").as_uri()
    script = (tmp_path / "copy" / "data.js").read_text()
    bundle = json.loads(script[script.index("{"):script.rindex(";")])
    assert bundle["base"] == "../export/"
    assert set(bundle["files"]) == {"summit_fast.json", "classes.json"} | {f"ag/ag-{c}.json" for c in range(len(NAMES))}


# ---------------------------------------------------------------------------------------------
# The page in Chromium.

@pytest.fixture(scope="module")
def browser():
    if not HAS_BROWSER:
        pytest.skip(NO_BROWSER)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A page that records dialogs, script errors and Content-Security-Policy violations; the test
    fails on any of them. (Other console errors are expected: pictures absent for some layers.)"""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    # Playwright's waits fail after 30 s by default; they only guard against hangs, and a loaded
    # machine can take longer to load and draw Summit's 1000 classes.
    context.set_default_timeout(300_000)
    opened = context.new_page()
    opened.dialogs, opened.errors = [], []
    opened.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.on("console", lambda message: "Content Security Policy" in message.text and opened.errors.append(message.text))
    yield opened
    context.close()
    assert opened.dialogs == [] and opened.errors == []


def graph_elements(page) -> tuple[int, int]:
    return page.locator("#graph-svg g.node").count(), page.locator("#graph-svg path.edge").count()


def open_viewer(page, url: str, expected_graph: dict) -> None:
    """Opens the page and waits until the graph shown is the expected one."""
    page.goto(url)
    wait_for_graph(page, expected_graph)


def wait_for_graph(page, graph: dict) -> None:
    nodes, edges = counts_in(graph)
    page.wait_for_function("([n, e]) => document.querySelectorAll('#graph-svg g.node').length === n"
                           " && document.querySelectorAll('#graph-svg path.edge').length === e", arg=[nodes, edges])


def point_positions(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#embedding-canvas circle.point", "ps => ps.map(p => [p.getAttribute('cx'), p.getAttribute('cy')])")


def switch_layer_and_check_points_move(page, layer: str) -> None:
    before = point_positions(page)
    page.select_option("#layer-select", layer)
    page.wait_for_selector(f"#embedding-canvas svg[data-layer='{layer}']")
    after = point_positions(page)
    assert len(after) == len(before)
    assert sum(a != b for a, b in zip(after, before)) > len(before) // 2


def sidebar_order(page) -> list[int]:
    return [int(c) for c in page.eval_on_selector_all("#class-list li", "rows => rows.map(r => r.dataset.class)")]


def by_similarity(classes: list[dict], layer: str, target: int) -> list[int]:
    """Class indices by cosine similarity of their topChannels rows to the target's, as the sidebar sorts."""
    rows = [{e["c"]: e["i"] for e in cls["topChannels"][layer]} for cls in classes]

    def cosine(a: dict, b: dict) -> float:
        norm = (sum(v * v for v in a.values()) * sum(v * v for v in b.values())) ** 0.5
        return sum(v * b.get(c, 0) for c, v in a.items()) / norm if norm else 0.0
    return sorted(range(len(rows)), key=lambda c: (-round(cosine(rows[c], rows[target]), 12), c))


def search_and_select(page, text: str, name: str) -> None:
    page.fill("#class-search", text)
    rows = page.locator("#class-list li:not([hidden])")
    assert rows.count() >= 1
    rows.filter(has_text=name).first.click()
    page.wait_for_function("name => document.getElementById('graph-title').textContent === name", arg=name)


@needs_browser
def test_page_on_an_export(page, export_dir, serve, tmp_path):
    graphs = [json.loads((export_dir / "ag" / f"ag-{c}.json").read_text()) for c in range(len(NAMES))]
    open_viewer(page, serve(export_dir), graphs[0])
    assert page.locator("#class-list li").count() == len(NAMES)
    assert not page.locator("#graph-empty").is_visible()

    search_and_select(page, "fire", "fire truck")
    assert page.locator("#class-list li:not([hidden])").count() == 1
    wait_for_graph(page, graphs[3])
    page.fill("#class-search", "#1")                  # by index; Enter takes the first match
    page.press("#class-search", "Enter")
    wait_for_graph(page, graphs[1])
    assert page.text_content("#graph-title") == "golden retriever"
    search_and_select(page, "TRUCK", "fire truck")    # case-insensitive
    wait_for_graph(page, graphs[3])
    page.fill("#class-search", "")

    switch_layer_and_check_points_move(page, "conv1")
    assert page.locator(".layer-band.current .layer-label").text_content() == "conv1"
    assert sidebar_order(page) == by_similarity(json.loads((export_dir / "classes.json").read_text()), "conv1", 3)
    page.select_option("#class-sort", "instances")
    assert sidebar_order(page) == [4, 3, 2, 1, 0]
    page.select_option("#class-sort", "accuracy")
    assert sidebar_order(page) == [4, 3, 2, 1, 0]
    assert page.text_content("#class-list li[data-class='4'] .value") == "90.0%"
    page.select_option("#class-sort", "similarity")

    node = graphs[3]["conv3"][0]
    page.hover(f"#graph-svg g.node[data-layer='conv3'][data-channel='{node['channel']}']")
    details = page.locator("#details")
    assert details.locator("h3").text_content() == f"conv3 · channel {node['channel']}"
    assert f"{node['count']:,}" in details.text_content()
    assert details.locator("ol.sources li").count() == len(node["attr_channels"])
    page.wait_for_function("() => { const img = document.querySelector('#details img.feature-vis');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    page.wait_for_function("() => document.querySelectorAll('#details .examples img:not([hidden])').length === 3")
    assert page.locator("#graph-svg.focused g.node.lit").count() >= 1 + len(node["prev_channels"])
    page.mouse.move(5, 5)
    assert page.locator("#graph-svg.focused").count() == 0
    page.focus(f"#graph-svg g.node[data-layer='conv2'][data-channel='{graphs[3]['conv2'][0]['channel']}']")
    assert details.locator("h3").text_content() == f"conv2 · channel {graphs[3]['conv2'][0]['channel']}"

    page.fill("#count-filter", str(node["count"]))  # the node itself stays; lower counts are hidden
    hidden = sum(n["count"] < node["count"] for layer_nodes in graphs[3].values() for n in layer_nodes)
    assert page.locator("#graph-svg g.node.filtered").count() == hidden
    page.screenshot(path=tmp_path / "export.png")

    # The class named like an HTML injection: shown as text everywhere, no element made of it.
    page.click("#class-list li[data-class='2'] button")
    wait_for_graph(page, graphs[2])
    assert page.text_content("#graph-title") == HOSTILE
    assert page.text_content("#details h3") == HOSTILE
    assert page.text_content("#class-list li[data-class='2'] .name") == HOSTILE
    assert page.text_content("#embedding-canvas .selected-label") == HOSTILE
    page.hover("#embedding-canvas circle.point[data-class='2']", force=True)
    assert page.text_content("#tooltip") == HOSTILE
    assert page.evaluate("document.querySelectorAll('[onerror], img[src=\"x\"]').length") == 0
    page.screenshot(path=tmp_path / "hostile-name.png")


@needs_browser
@pytest.mark.parametrize("version", [1, 2])
def test_page_on_an_export_of_some_classes(page, export_dir, serve, version):
    """A run that counted only some classes: the page numbers classes by the model's class index
    (target_class), which since version 2 also names their graph files, as Summit's viewer reads
    them; a version 1 export, whose graph files are numbered by row, still opens."""
    graphs = of_some_classes(export_dir, version)   # the files by target_class (2) or by row (1) only
    url = serve(export_dir)
    open_viewer(page, url + "#class=3&layer=conv2", graphs[0])  # 3 is a row, not a class here: ignored
    assert page.text_content("#graph-title") == "tabby cat" and page.input_value("#layer-select") == "conv2"
    page.fill("#class-search", f"#{IDS[3]}")
    page.press("#class-search", "Enter")
    wait_for_graph(page, graphs[3])
    assert page.text_content("#graph-title") == "fire truck"
    assert f"class #{IDS[3]}" in page.text_content("#details")
    assert page.url.endswith(f"#class={IDS[3]}&layer=conv2")  # the address names the class, not the row
    page.fill("#class-search", "")
    page.click("#class-list li[data-class='1'] button")
    wait_for_graph(page, graphs[1])
    assert page.text_content("#graph-title") == "golden retriever"
    assert page.url.endswith(f"#class={IDS[1]}&layer=conv2")
    page.select_option("#class-sort", "index")
    assert page.text_content("#class-list li[data-class='4'] .value") == f"#{IDS[4]}"

    page.goto(url + f"#class={IDS[4]}&layer=conv1")
    page.reload()                                     # a new hash alone does not reload the page
    wait_for_graph(page, graphs[4])
    assert page.text_content("#graph-title") == "banana" and page.input_value("#layer-select") == "conv1"
    assert page.url.endswith(f"#class={IDS[4]}&layer=conv1")


@needs_browser
def test_page_refuses_an_unknown_version(page, tmp_path, serve):
    page.goto(serve(write_export(tmp_path / "export", version=4)))
    status = page.locator("#status.error")
    status.wait_for()
    assert "expected schema summit_fast.export version 1 or 2 or 3, found summit_fast.export version 4" in status.text_content()


@needs_browser
def test_page_opened_from_disk(page, export_dir, tmp_path):
    index_page = write_standalone(export_dir, tmp_path / "copy")
    graph = json.loads((export_dir / "ag" / "ag-1.json").read_text())
    open_viewer(page, index_page.as_uri() + "#class=1&layer=conv2", graph)
    assert page.text_content("#graph-title") == "golden retriever"
    assert page.input_value("#layer-select") == "conv2"
    node = graph["conv3"][0]
    page.hover(f"#graph-svg g.node[data-layer='conv3'][data-channel='{node['channel']}']")
    page.wait_for_function("() => { const img = document.querySelector('#details img.feature-vis');"
                           " return img && img.complete && img.naturalWidth > 0; }")


@needs_browser
def test_page_without_data_js_explains_itself(page, tmp_path):
    index_page = write_standalone(write_export(tmp_path / "export"), tmp_path / "copy")
    (tmp_path / "copy" / "data.js").unlink()
    page.goto(index_page.as_uri())
    status = page.locator("#status.error")
    status.wait_for()
    assert "summit-fast view" in status.text_content()


@needs_browser
def test_page_on_a_real_export(page, serve, tmp_path):
    """aggregate() -> export() -> the page, including a class without images (an empty graph, no
    embedding position)."""
    import torch

    import summit_fast
    from summit_fast.export import export
    from summit_fast.models import digits_cnn

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 8, 8, generator=generator), torch.randint(0, 9, (16,), generator=generator))
               for _ in range(4)]  # class 9 gets no images
    torch.manual_seed(0)
    result = summit_fast.aggregate(digits_cnn().eval(), batches, selection=summit_fast.topk(4), backend="torch", progress=False)
    folder = export(result, tmp_path / "export", embedding="pca")
    graphs = [json.loads((folder / "ag" / f"ag-{c}.json").read_text()) for c in range(10)]

    open_viewer(page, serve(folder), graphs[0])
    assert graph_elements(page) == counts_in(graphs[0]) and counts_in(graphs[0])[1] > 0
    page.click("#class-list li[data-class='9'] button")
    wait_for_graph(page, graphs[9])
    assert page.locator("#embedding-canvas circle.point.missing").count() == 1
    assert page.locator("#graph-empty").is_visible()
    page.screenshot(path=tmp_path / "real-export.png")


@needs_browser
@pytest.mark.skipif(not (SUMMIT_DATA / "ag").is_dir(), reason=f"Summit's released data not found at {SUMMIT_DATA}")
def test_page_on_summit_data(page, serve, tmp_path):
    url = serve(SUMMIT_DATA)
    names = json.loads(get(url + "data/summit_fast.json")[2])["class_names"]

    def graph(c: int) -> dict:
        return json.loads((SUMMIT_DATA / "ag" / f"ag-{c}.json").read_text())
    open_viewer(page, url, graph(0))
    assert page.locator("#class-list li").count() == 1000
    assert page.locator("#class-sort option:disabled").all_text_contents() == [
        "accuracy (not in this data)", "instances (not in this data)"]

    search_and_select(page, names[207], names[207])
    wait_for_graph(page, graph(207))
    assert graph_elements(page) == counts_in(graph(207))

    switch_layer_and_check_points_move(page, "mixed4d")
    channel = graph(207)["mixed4d"][0]["channel"]
    page.hover(f"#graph-svg g.node[data-layer='mixed4d'][data-channel='{channel}']")
    assert page.text_content("#details h3") == f"mixed4d · channel {channel}"
    page.wait_for_function("() => { const img = document.querySelector('#details img.feature-vis');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    page.screenshot(path=tmp_path / "summit.png")
