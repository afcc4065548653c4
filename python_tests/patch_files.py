"""The dataset-example patches of a viewer folder, and those it should hold, as file names in
Summit's layout (summit_fast.patches.PATTERN: feature-vis/dataset-p/{layer}-{channel}-dataset-p-{i}.jpg,
with featvis.safe_layer_name(layer))."""

import json
from pathlib import Path

from summit_fast.featvis import safe_layer_name
from summit_fast.patches import PATTERN, is_placeholder

FOLDER = Path(PATTERN).parent  # inside the viewer folder


def patches(viewer: Path) -> set[str]:
    """The patch files in ``viewer`` (not the placeholders written for Summit's viewer)."""
    return {p.relative_to(viewer / FOLDER).as_posix() for p in (viewer / FOLDER).rglob("*.jpg") if not is_placeholder(p)}


def example_patches(result, viewer: Path | None = None) -> set[str]:
    """A patch for every recorded dataset example of ``result``; with ``viewer``, only for the
    channels that are nodes of one of its graphs."""
    nodes = None
    if viewer is not None:
        nodes = {(layer, node["channel"]) for path in (viewer / "ag").glob("ag-*.json")
                 for layer, layer_nodes in json.loads(path.read_text()).items() for node in layer_nodes}
    return {f"{safe_layer_name(layer)}-{c}-dataset-p-{i}.jpg" for layer, state in result.examples.items()
            for c, i in (state["image"] >= 0).nonzero().tolist() if nodes is None or (layer, c) in nodes}
