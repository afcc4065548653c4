"""``summit-fast run`` on the 100 ImageNet sample photos with the converted MobileNetV2: the
result equals the torch reference, every graph has nodes in every layer, dataset examples
match a recomputation, and accuracy matches the recorded predictions."""

import json
from pathlib import Path

import pytest
import torch

import summit_fast
from summit_fast.images import ImageFolderDataset
from summit_fast.models import mobilenet_v2

from cli_command import run_cli
from patch_files import example_patches, patches

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = DATA / "models" / "converted" / "mobilenet_v2_1.0_224_quant.torchvision_layout.pt"
IMAGES = DATA / "images" / "imagenet-sample-images-subset"
EXPECTED = DATA / "expected_predictions.json"
pytestmark = pytest.mark.skipif(not (WEIGHTS.is_file() and IMAGES.is_dir()),
                                reason=f"real test data not found in {DATA}")
EXAMPLES = 2
BATCH = 25


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("run", "--model", "mobilenet_v2", "--tf-padding", "--weights", str(WEIGHTS),
                   "--images", str(IMAGES), "--out", str(out), "--examples", str(EXAMPLES),
                   "--batch-size", str(BATCH), "--workers", "0", "--no-progress", "--embedding", "pca", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert f"summit-fast view {out / 'viewer'}" in proc.stdout
    return out, summit_fast.SummitResult.load(out / "result")


@pytest.fixture(scope="module")
def model():
    return mobilenet_v2(WEIGHTS, tf_padding=True)


@pytest.fixture(scope="module")
def dataset(model):
    return ImageFolderDataset(IMAGES, model.PREPROCESS)


def test_counts_equal_the_torch_reference(run, model, dataset):
    _, result = run
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH)
    classes = sorted(set(dataset.targets))
    reference = summit_fast.aggregate(model, loader, backend="torch", classes=classes, examples=EXAMPLES,
                                      class_names=[dataset.classes[c] for c in classes], progress=False)
    assert result.class_ids == list(range(0, 1000, 10))
    assert result == reference


def test_every_graph_has_nodes_in_every_summary_layer(run):
    out, result = run
    graphs = sorted((out / "viewer" / "ag").glob("ag-*.json"))
    assert len(graphs) == 100
    for path in graphs:
        graph = json.loads(path.read_text())
        assert list(graph) == result.layers[::-1]
        assert all(graph[layer] for layer in result.layers), path.name


def test_accuracy_matches_the_recorded_predictions(run):
    _, result = run
    expected = json.loads(EXPECTED.read_text())["mobilenet_v2_1.0_224_quant (torchvision layout .pt)"]
    assert result.images_per_class.tolist() == [1] * 100
    assert float(result.top1_accuracy.mean()) == pytest.approx(expected["imagenet_sample_subset_top1"])


def test_dataset_examples_match_a_recomputation(run, model, dataset):
    out, result = run
    for layer in ("features.3", "features.10", "features.17"):
        state = result.examples[layer]
        assert bool((state["image"] >= 0).all())
        captured = {}
        hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("o", o))
        try:
            for channel in (0, state["image"].shape[0] // 2, state["image"].shape[0] - 1):
                image = int(state["image"][channel, 0])
                with torch.no_grad():
                    model(dataset[image][0].unsqueeze(0))
                plane = captured["o"][0, channel]
                y, x = int(state["y"][channel, 0]), int(state["x"][channel, 0])
                torch.testing.assert_close(plane[y, x], state["value"][channel, 0])
                torch.testing.assert_close(plane.max(), state["value"][channel, 0])
        finally:
            hook.remove()
    assert patches(out / "viewer") == example_patches(result, out / "viewer")  # of the channels in the graphs
    index = json.loads((out / "viewer" / "summit_fast.json").read_text())
    assert index["images"]["dataset_examples"] == "feature-vis/dataset-p/{layer}-{channel}-dataset-p-{i}.jpg"
