"""The viewer's two index files, ``summit_fast.json`` and ``classes.json``, for a data folder.

An export writes both. Summit's released data has only ``ag/ag-{c}.json`` (and feature
visualisations), so for such a folder they are built here from the graphs alone:

- the graph files are named ``ag-0.json`` .. ``ag-{K-1}.json``; each is checked
  (:func:`check_graph`), and one the viewer cannot use is skipped with a warning naming the file
  and field (the others still load); the layers and their order come from the graphs (which list
  them last to first);
- a layer's channel count is the largest channel index seen plus one (a lower bound: graphs hold
  only the kept channels);
- a class's ``topChannels`` are its graph's node counts (the kept channels only, so the sidebar's
  similarity compares graphs, not full activation rows);
- the embedding is the export's (:func:`summit_fast.export.embed_rows`) applied to those count
  rows: UMAP when umap-learn is installed and there are enough classes, else PCA of the rows scaled
  to unit length; a class without nodes in a layer has no position there;
- the images are those of Summit's layout (:data:`summit_fast.featvis.LAYOUT`) that the folder
  holds for the graphs' channels (:func:`summit_fast.export.image_index`; Summit's data has
  feature visualisations of mixed4d only), so that the page asks for no other;
- instance counts and accuracies are unknown (``numOfInstances`` is null; the viewer disables those
  sorts);
- the index has the export's current version: a class's ``target_class`` is its graph's number, so
  the version's rule for naming graph files (by target_class; version 1: by row) holds either way.

The viewer reads exports of every version in :data:`READABLE_VERSIONS` (:func:`graph_files`).
"""

from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..export import CLASSES_FILE, GRAPHS_PATTERN, INDEX_FILE, SCHEMA_NAME, SCHEMA_VERSION, embed_rows, image_index
from .._text import shown
from ..featvis import LAYOUT
from ..imagenet import NUM_IMAGENET_CLASSES, imagenet_class_names

_GRAPH_NAME = re.compile(r"^ag-(\d+)\.json$")
# 1: graph files numbered by row of classes.json; 2: by target_class; 3: images lists the files, {layer} its file-name form
READABLE_VERSIONS = (1, 2, 3)
# Channel ids size the (classes x channels) count rows the map is computed from, so they are bounded
# before anything is allocated: at most 128 KiB a class and layer. The widest layers of common CNNs
# have 4096 channels (Summit's InceptionV1: 1024).
MAX_CHANNELS = 1 << 14
_MAX_COUNT = 2**53 - 1  # the integers the page reads exactly (a JavaScript number's)
_MISSING = object()


def check_index(index: dict) -> None:
    """Refuses an index that is not a summit_fast export of a version the viewer reads."""
    if index.get("schema") != SCHEMA_NAME or index.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{INDEX_FILE}: expected schema {SCHEMA_NAME} version "
                         f"{' or '.join(map(str, READABLE_VERSIONS))}, found {index.get('schema')} version {index.get('version')}")


def graph_files(index: dict, classes: list[dict]) -> list[str]:
    """The graph file of each class (entry of classes.json), relative to the folder: named by the
    class's ``target_class`` since version 2, by its row in version 1."""
    check_index(index)
    if index["version"] == 1:
        return [index["graphs"].format(c=c) for c in range(len(classes))]
    return [index["graphs"].format(c=int(cls["target_class"])) for cls in classes]


def has_export_index(data_dir: Path) -> bool:
    return (Path(data_dir) / INDEX_FILE).is_file()


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: a JSON list of strings, or plain text with one name a line."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: expected a JSON list of strings")
        return names
    return text.splitlines()


def default_class_names(num_classes: int) -> list[str]:
    """ImageNet's names for 1000 classes (Summit's graphs are indexed in the standard ImageNet class
    order, as are the project's ImageNet models); else "class k"."""
    if num_classes == NUM_IMAGENET_CLASSES:
        return imagenet_class_names()
    return [f"class {k}" for k in range(num_classes)]


def _graph_paths(data_dir: Path) -> list[Path]:
    ag_dir = Path(data_dir) / "ag"
    by_class = {}
    if ag_dir.is_dir():
        for path in ag_dir.iterdir():
            match = _GRAPH_NAME.match(path.name)
            if match:
                by_class[int(match.group(1))] = path
    if not by_class:
        raise ValueError(f"{data_dir}: neither {INDEX_FILE} nor ag/ag-{{c}}.json graphs found")
    if sorted(by_class) != list(range(len(by_class))):
        missing = sorted(set(range(max(by_class) + 1)) - set(by_class))[:5]
        raise ValueError(f"{ag_dir}: graph files must be ag-0.json .. ag-{len(by_class) - 1}.json; missing e.g. {missing}")
    return [by_class[c] for c in range(len(by_class))]


def check_graph(graph) -> None:
    """Raises ValueError naming the first field of a Summit graph (``ag-{c}.json``: {layer: [node]},
    a node {channel, count, pagerank, prev_channels: [{prev_channel, inf}], attr_channels: [...]})
    that the index or the page cannot use: channel ids must be integers below
    :data:`MAX_CHANNELS`, unique in their layer; counts and influences non-negative integers;
    PageRank a non-negative number. (The export's JSON Schema, ``$defs/graph``, is stricter.)"""
    if not isinstance(graph, dict):
        raise ValueError(f"expected an object of layers, got {_got(graph)}")
    for layer, nodes in graph.items():
        if not isinstance(nodes, list):
            raise ValueError(f"{layer}: expected a list of nodes, got {_got(nodes)}")
        seen = set()
        for i, node in enumerate(nodes):
            where = f"{layer}[{i}]"
            if not isinstance(node, dict):
                raise ValueError(f"{where}: expected a node object, got {_got(node)}")
            channel = _checked_int(node, "channel", where, MAX_CHANNELS - 1)
            if channel in seen:
                raise ValueError(f"{where}.channel: channel {channel} appears twice in {layer}")
            seen.add(channel)
            _checked_int(node, "count", where, _MAX_COUNT)
            pagerank = node.get("pagerank", _MISSING)
            if type(pagerank) not in (int, float) or not math.isfinite(pagerank) or pagerank < 0:
                raise ValueError(f"{where}.pagerank: expected a non-negative number, got {_got(pagerank)}")
            for key in ("prev_channels", "attr_channels"):  # optional: the page reads them as []
                links = node.get(key, [])
                if not isinstance(links, list):
                    raise ValueError(f"{where}.{key}: expected a list, got {_got(links)}")
                for j, link in enumerate(links):
                    if not isinstance(link, dict):
                        raise ValueError(f"{where}.{key}[{j}]: expected an object, got {_got(link)}")
                    if key == "attr_channels" and re.fullmatch(r"[0-9]+", str(link.get("prev_channel"))):
                        link = {**link, "prev_channel": int(link["prev_channel"])}  # Summit writes it as text
                    _checked_int(link, "prev_channel", f"{where}.{key}[{j}]", MAX_CHANNELS - 1)
                    _checked_int(link, "inf", f"{where}.{key}[{j}]", _MAX_COUNT)


def _checked_int(obj: dict, key: str, where: str, limit: int) -> int:
    value = obj.get(key, _MISSING)
    if type(value) is not int or not 0 <= value <= limit:  # bool is not a count
        raise ValueError(f"{where}.{key}: expected an integer 0..{limit}, got {_got(value)}")
    return value


def _got(value) -> str:
    if value is _MISSING:
        return "nothing (missing)"
    return shown(value) or f"a long {type(value).__name__}"


def _read_graphs(paths: list[Path], progress: bool) -> dict[int, dict]:
    """The usable graphs by class (a file's number); each unusable file is skipped with a one-line
    warning naming it and its first bad field, after the progress bar."""
    graphs, skipped = {}, []
    for c, path in enumerate(tqdm(paths, desc=f"reading {len(paths)} graphs", unit="graph", disable=not progress)):
        try:
            graph = json.loads(path.read_bytes())
            check_graph(graph)
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: also bad JSON or UTF-8
            skipped.append(f"{path}: {exc}; skipped (the other graphs load)")
            continue
        graphs[c] = graph
    for message in skipped:
        warnings.warn(message)
    if not graphs:
        raise ValueError(f"{paths[0].parent}: none of the {len(paths)} graph files is usable (see the warnings)")
    return graphs


def _top_channels(graph: dict) -> dict[str, list[dict]]:
    top = {}
    for layer, nodes in graph.items():
        counted = sorted(((n["count"], n["channel"]) for n in nodes if n["count"] > 0), key=lambda t: (-t[0], t[1]))
        top[layer] = [{"c": channel, "i": count} for count, channel in counted]
    return top


def _count_rows(top_channels: list[dict], layers: list[str], channels: dict[str, int]) -> dict[str, np.ndarray]:
    """Per layer, the (K, C) rows of the graphs' node counts."""
    rows = {}
    for layer in layers:
        rows[layer] = np.zeros((len(top_channels), channels[layer]))
        for k, top in enumerate(top_channels):
            for entry in top.get(layer, []):
                rows[layer][k, entry["c"]] = entry["i"]
    return rows


def build_index(data_dir: Path, class_names: list[str] | None = None,
                progress: bool = False) -> tuple[dict, list[dict]]:
    """(summit_fast.json, classes.json) contents for a folder holding only ``ag/ag-{c}.json`` graphs.
    ``class_names``: one per graph file (by its number); graphs that fail :func:`check_graph` are
    left out with a warning. ``progress``: a progress bar and what is being done, on stderr."""
    data_dir = Path(data_dir)
    paths = _graph_paths(data_dir)
    if class_names is None:
        class_names = default_class_names(len(paths))
    elif len(class_names) != len(paths):
        raise ValueError(f"{len(class_names)} class names given for {len(paths)} graphs")
    by_class = _read_graphs(paths, progress)
    graphs, class_names = list(by_class.values()), [class_names[c] for c in by_class]
    num_classes = len(graphs)

    layers_last_first = list(dict.fromkeys(layer for g in graphs for layer in g))
    layers = layers_last_first[::-1]
    channels = {layer: 1 + max((n["channel"] for g in graphs for n in g.get(layer, [])), default=-1) for layer in layers}
    top_channels = [_top_channels(g) for g in graphs]
    if progress:  # the slow part where UMAP is installed
        print(f"placing {num_classes} classes on the map ({len(layers)} layers) ...", file=sys.stderr, flush=True)
    embeds, embedding = embed_rows(_count_rows(top_channels, layers, channels))
    nodes = {layer: {n["channel"] for g in graphs for n in g.get(layer, [])} for layer in layers}
    images = image_index(LAYOUT, nodes, lambda path: (data_dir / path).is_file())

    index = {
        "schema": SCHEMA_NAME,
        "version": SCHEMA_VERSION,
        "generator": "summit_fast.viewer: built from the ag/ graphs alone (not an export)",
        "num_classes": num_classes,
        "layers": layers,
        "channels": channels,
        "class_names": class_names,
        "embedding": embedding,
        "images": images,
        "graphs": GRAPHS_PATTERN,
        "classes": CLASSES_FILE,
    }
    classes = [
        {"name": name, "target_class": c, "topChannels": top, "embed": embed, "numOfInstances": None}
        for c, name, top, embed in zip(by_class, class_names, top_channels, embeds)
    ]
    return index, classes


def index_files(data_dir: Path, class_names: list[str] | None = None, progress: bool = False) -> dict[str, bytes]:
    """The index files to serve in place of missing ones: nothing for an exported folder, both for a
    Summit-only folder (see :func:`build_index`)."""
    if has_export_index(data_dir):
        if class_names is not None:
            raise ValueError(f"{data_dir} is an export ({INDEX_FILE} holds the class names); --class-names applies "
                             "only to folders of graphs alone")
        return {}
    index, classes = build_index(data_dir, class_names, progress)
    return {INDEX_FILE: _json_bytes(index), CLASSES_FILE: _json_bytes(classes)}


def _json_bytes(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
