"""The export loads in Summit's own viewer (github.com/fredhohman/summit), unchanged.

Summit's viewer reads ``data/imagenet.json``, then ``data/ag/ag-{target_class}.json`` of the class
it starts on (the one named ``white_wolf``), then the images of each graph node. It hard-codes
InceptionV1's nine layers mixed3a..mixed5b and their channel counts. These tests check every
field and file it reads on an InceptionV1 export (random weights, a few tiny images), as it
reads them (class-sidebar.js and attribution-graph.js of its last commit, c74bbe3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import summit_fast
from summit_fast import featvis, patches
from summit_fast.export import export, summit_name
from summit_fast.imagenet import imagenet_class_names, imagenet_wnids
from summit_fast.models import inception_v1

# Summit's class-sidebar.js: layerChannelCounts (its layers, in order, and their channels)
SUMMIT_LAYERS = {"mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512, "mixed4c": 512, "mixed4d": 528,
                 "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024}
# What attribution-graph.js requests for a node (dataURL + 'data/' + ...), fv_type '.jpg'
SUMMIT_CHANNEL = "feature-vis/channel/{layer}-{channel}-channel.jpg"
SUMMIT_DIVERSITY = "feature-vis/diversity-{d}/{layer}-{channel}-diversity-{d}.jpg"  # d = 0..3, on hover
SUMMIT_DATASET_P = "feature-vis/dataset-p/{layer}-{channel}-dataset-p-{i}.jpg"  # i = 0..9, loaded at once
CLASSES = [0, 1, 270, 980]  # tench, goldfish (no images), white wolf (Summit starts there), volcano
COUNTED = {0: 2, 270: 3, 980: 2}  # images per class
EXAMPLES = 3  # dataset examples per channel: fewer than the ten Summit's viewer requests


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Speed only, on a loaded 2-core machine (as in test_featvis): the counts and images do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return inception_v1().eval()


@pytest.fixture(scope="module")
def images():
    """Tiny inputs in Lucent's range, each class with its own colour cast (so classes differ)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([c for c, n in COUNTED.items() for _ in range(n)])
    cast = {0: (60.0, -40.0, -40.0), 270: (-40.0, 60.0, -40.0), 980: (-40.0, -40.0, 60.0)}
    x = torch.rand(len(labels), 3, 32, 32, generator=gen) * 120 - 60
    x += torch.tensor([cast[int(c)] for c in labels]).view(-1, 3, 1, 1)
    return x, labels


@pytest.fixture(scope="module")
def result(model, images):
    names = [imagenet_class_names()[c] for c in CLASSES]
    return summit_fast.aggregate(model, [images], classes=CLASSES, class_names=names, predictions=True,
                                 examples=EXAMPLES, progress=False)


@pytest.fixture(scope="module")
def exported(result, tmp_path_factory):
    seen = {}
    out = export(result, tmp_path_factory.mktemp("summit") / "data", embedding="pca",
                 write_images=lambda folder, channels: seen.update(channels))
    return out, seen


def graph_nodes(folder: Path) -> set[tuple[str, int]]:
    return {(layer, node["channel"]) for path in (folder / "ag").glob("ag-*.json")
            for layer, nodes in read(path).items() for node in nodes}


def test_the_model_has_summits_nine_layers(result):
    assert result.layers == list(SUMMIT_LAYERS)
    assert {layer: result.channels[layer] for layer in result.layers} == SUMMIT_LAYERS


def test_imagenet_json_holds_every_field_summits_viewer_reads(exported, result, model, images):
    folder, _ = exported
    classes = read(folder / "imagenet.json")
    assert (folder / "classes.json").is_file() and (folder / "summit_fast.json").is_file()  # ours stay
    assert [c["target_class"] for c in classes] == CLASSES
    with torch.no_grad():
        probabilities = model(images[0])  # InceptionV1's output is softmax probabilities
    for k, entry in enumerate(classes):
        c = CLASSES[k]
        assert entry["name"] == summit_name(imagenet_class_names()[c]) and entry["synset"] == imagenet_wnids()[c]
        n = COUNTED.get(c, 0)
        assert entry["numOfInstances"] == n
        mine = images[1] == c
        right = int((probabilities[mine].argmax(1) == c).sum())
        assert entry["topOneAccCount"] == right and type(entry["topOneAccCount"]) is int
        assert entry["topOneAcc"] == (right / n if n else 0.0) and isinstance(entry["topOneAcc"], float)
        # one value per image, its top-1 probability x 100 (whole percent), as strings like Summit's
        want = sorted(round(100 * float(p)) for p in probabilities[mine].max(1).values)
        assert entry["accs"] == [str(v) for v in want] and len(entry["accs"]) == n
        assert set(entry["topChannels"]) == set(entry["embed"]) == set(SUMMIT_LAYERS)
        for layer, top in entry["topChannels"].items():
            row = result.activation[layer][k]
            assert [(t["c"], t["i"]) for t in top] == sorted(((ch, int(v)) for ch, v in enumerate(row.tolist()) if v),
                                                             key=lambda t: (-t[1], t[0]))
            assert all(type(t["c"]) is int and type(t["i"]) is int and t["c"] < SUMMIT_LAYERS[layer] for t in top)
        for xy in entry["embed"].values():  # never null: Summit reads embed[layer].x of every class
            assert set(xy) == {"x", "y"} and all(isinstance(v, float) and math.isfinite(v) for v in xy.values())
    assert any(c["name"] == "white_wolf" for c in classes)  # where Summit's viewer starts


def test_a_class_without_counts_sits_at_the_centre_of_the_others(exported):
    folder, _ = exported
    ours, summits = read(folder / "classes.json"), read(folder / "imagenet.json")
    empty = CLASSES.index(1)  # goldfish: no images
    for layer in SUMMIT_LAYERS:
        assert ours[empty]["embed"][layer] is None  # our viewer shows no point for it
        others = [c["embed"][layer] for c in ours if c["embed"][layer] is not None]
        assert len(others) == 3
        for axis in ("x", "y"):
            assert summits[empty]["embed"][layer][axis] == pytest.approx(sum(o[axis] for o in others) / 3, abs=1e-5)
        assert [c["embed"][layer] for i, c in enumerate(summits) if i != empty] == others


def test_each_class_graph_is_what_summits_viewer_draws(exported):
    folder, _ = exported
    bottom = list(SUMMIT_LAYERS)[0]
    for entry in read(folder / "imagenet.json"):
        ag = read(folder / "ag" / f"ag-{entry['target_class']}.json")
        assert list(ag) == list(reversed(SUMMIT_LAYERS))
        for layer, nodes in ag.items():
            below = list(SUMMIT_LAYERS)[list(SUMMIT_LAYERS).index(layer) - 1] if layer != bottom else None
            for node in nodes:
                assert node["layer"] == layer and type(node["channel"]) is int and type(node["count"]) is int
                assert isinstance(node["pagerank"], float) and isinstance(node["attr_channels"], list)
                assert isinstance(node["prev_channels"], list)
                if below is not None:  # Summit finds each edge's end among the nodes below, or crashes
                    assert {p["prev_channel"] for p in node["prev_channels"]} <= {n["channel"] for n in ag[below]}
        assert any(ag[layer] for layer in SUMMIT_LAYERS) == (entry["numOfInstances"] > 0)


def test_image_names_are_those_summit_requests(exported):
    """The channels whose images an export asks for (``write_images``) are its graphs' nodes, and
    the feature visualisations are named as Summit's viewer requests them."""
    folder, seen = exported
    nodes = graph_nodes(folder)
    assert {(layer, c) for layer, channels in seen.items() for c in channels} == nodes
    assert {layer for layer, _ in nodes} == set(SUMMIT_LAYERS)
    for layer, c in nodes:
        assert f"{featvis.FOLDER}/{featvis.channel_file(layer, c)}" == SUMMIT_CHANNEL.format(layer=layer, channel=c)
        for d in range(4):
            assert (f"{featvis.FOLDER}/{featvis.diversity_file(layer, c, d)}"
                    == SUMMIT_DIVERSITY.format(layer=layer, channel=c, d=d))


def test_dataset_example_names_are_those_summit_requests(exported):
    folder, _ = exported
    for layer, c in graph_nodes(folder):
        for i in range(10):
            assert patches.PATTERN.format(layer=layer, channel=c, i=i) == SUMMIT_DATASET_P.format(layer=layer,
                                                                                              channel=c, i=i)


def test_rendered_feature_vis_are_where_summit_looks(result, model, tmp_path):
    """Feature visualisations written by the export's ``write_images`` (one channel, tiny and
    crude) are found at the paths Summit's viewer requests."""
    layer = "mixed3a"  # the cheapest to render
    rendered = []

    def write_images(folder, channels):
        rendered.extend((layer, c) for c in channels[layer][:1])
        featvis.write_feature_vis(folder / featvis.FOLDER, model, rendered,
                                  featvis.FeatureVisSettings(size=20, steps=1, diversity=4))

    folder = export(result, tmp_path / "data", embedding="pca", write_images=write_images)
    assert rendered
    for layer, c in rendered:
        assert (folder / SUMMIT_CHANNEL.format(layer=layer, channel=c)).is_file()
        assert all((folder / SUMMIT_DIVERSITY.format(layer=layer, channel=c, d=d)).is_file() for d in range(4))


def test_every_image_summits_viewer_requests_for_the_nodes_exists(result, model, images, tmp_path):
    """Summit's viewer requests, for each node of a graph, its feature visualisation, 4 diversity
    images and 10 dataset examples, whether they exist or not: with only 3 examples a channel, the
    export fills the other slots with a placeholder image, which the index (our viewer) does not list."""
    from PIL import Image

    from summit_fast.export import refresh_image_index
    from summit_fast.images import Preprocess

    paths = []
    for k, x in enumerate(images[0]):  # the images as files, for the patches to be cut from
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray((x + 117).clamp(0, 255).byte().permute(1, 2, 0).numpy()).save(paths[-1])
    fields = patches.receptive_fields(model, result.layers, (3, 32, 32))
    as_input = Preprocess(32, 1.0, True, model.PREPROCESS.mean, model.PREPROCESS.std)  # the files are the inputs

    def write_images(folder, channels):
        patches.export_patches(result, fields, paths, as_input, folder, progress=False, channels=channels)
        featvis.write_feature_vis(folder / featvis.FOLDER, model, [(l, c) for l, cs in channels.items() for c in cs],
                                  featvis.FeatureVisSettings(size=20, steps=1, diversity=4), batch=64)

    folder = export(result, tmp_path / "data", embedding="pca", **featvis.LAYOUT, write_images=write_images)
    nodes = graph_nodes(folder)
    requested = {pattern.format(layer=layer, channel=c, d=n, i=n) for layer, c in nodes
                 for pattern, count in ((SUMMIT_CHANNEL, 1), (SUMMIT_DIVERSITY, 4), (SUMMIT_DATASET_P, 10))
                 for n in range(count)}
    assert [path for path in sorted(requested) if not (folder / path).is_file()] == []
    files = read(folder / "summit_fast.json")["images"]["files"]
    for layer, c in nodes:
        real = int((result.examples[layer]["image"][c] >= 0).sum())
        assert 1 <= real <= EXAMPLES and files[layer]["dataset_examples"][str(c)] == real
        slots = [folder / SUMMIT_DATASET_P.format(layer=layer, channel=c, i=i) for i in range(10)]
        assert [patches.is_placeholder(path) for path in slots] == [False] * real + [True] * (10 - real)
    with Image.open(slots[-1]) as placeholder:  # an image a browser shows
        assert placeholder.format == "JPEG" and placeholder.convert("RGB").getpixel((0, 0)) == (232, 232, 232)
    assert refresh_image_index(folder, {layer: {c for l, c in nodes if l == layer} for layer, _ in nodes})
    assert read(folder / "summit_fast.json")["images"]["files"] == files  # placeholders stay unlisted


def test_summit_names():
    assert summit_name("white wolf, Arctic wolf, Canis lupus tundrarum") == "white_wolf"
    assert summit_name("tench, Tinca tinca") == "tench"
    assert summit_name("German short-haired pointer") == "german_short-haired_pointer"
    assert summit_name(imagenet_class_names()[278]) == "kit_fox"  # as in Summit's imagenet.json


def test_results_without_per_image_probabilities_give_empty_accs(result, tmp_path):
    """A result saved before the histogram was counted (or without predictions) has no per-image
    top-1 probabilities: accs is [] (Summit's viewer then draws an empty histogram)."""
    old = result.to("cpu")
    old.top1_probability_histogram.zero_()
    classes = read(export(old, tmp_path / "data", embedding="pca") / "imagenet.json")
    assert [c["accs"] for c in classes] == [[]] * len(CLASSES)
    assert [c["numOfInstances"] for c in classes] == [COUNTED.get(c, 0) for c in CLASSES]


def test_imagenet_json_only_for_imagenet_classes(result, tmp_path):
    folder = export(result, tmp_path / "data", embedding="pca")
    assert (folder / "imagenet.json").is_file()
    export(result, folder, embedding="pca", class_names=["a", "b", "c", "d"])  # not ImageNet's names
    assert not (folder / "imagenet.json").exists() and (folder / "classes.json").is_file()


def test_a_folder_of_summits_own_data_is_not_overwritten(result, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "imagenet.json").write_text("[]")  # Summit's data, not an export of ours
    with pytest.raises(ValueError, match=r"holds imagenet\.json but is not a summit_fast export"):
        export(result, tmp_path / "data", embedding="pca")
    assert (tmp_path / "data" / "imagenet.json").read_text() == "[]"
