"""The dataset-example patches of a viewer folder, and those it should hold, as
``layer/channel-i.jpg`` (summit_fast.patches.PATTERN inside the folder)."""

import json
from pathlib import Path


def patches(viewer: Path) -> set[str]:
    """The patch files in ``viewer``."""
    return {p.relative_to(viewer / "examples").as_posix() for p in (viewer / "examples").rglob("*.jpg")}


def example_patches(result, viewer: Path | None = None) -> set[str]:
    """A patch for every recorded dataset example of ``result``; with ``viewer``, only for the
    channels that are nodes of one of its graphs."""
    nodes = None
    if viewer is not None:
        nodes = {(layer, node["channel"]) for path in (viewer / "ag").glob("ag-*.json")
                 for layer, layer_nodes in json.loads(path.read_text()).items() for node in layer_nodes}
    return {f"{layer}/{c}-{i}.jpg" for layer, state in result.examples.items()
            for c, i in (state["image"] >= 0).nonzero().tolist() if nodes is None or (layer, c) in nodes}
