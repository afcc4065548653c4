"""Bundled models: InceptionV1's Lucent layout and discovered edges; the digits CNN."""

import pytest
import torch

import summit_fast
from summit_fast.models.loading import MODELS, load_model
from summit_fast.discovery import discover
from summit_fast.images import Preprocess
from summit_fast.models import digits_cnn, inception_v1

from result_compare import assert_same_counts

INCEPTION_CHANNELS = {"mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512, "mixed4c": 512,
                      "mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024}


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return inception_v1()


def test_inception_v1_layout_and_output(inception):
    assert inception.SUMMARY_LAYERS == list(INCEPTION_CHANNELS)
    keys = inception.state_dict().keys()
    assert "conv2d0_pre_relu_conv.weight" in keys and "softmax2_pre_activation_matmul.bias" in keys
    assert "mixed4d_5x5_bottleneck_pre_relu_conv.weight" in keys
    with torch.no_grad():
        out = inception(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1008)
    torch.testing.assert_close(out.sum(), torch.tensor(1.0))  # softmax probabilities, as in Lucent


def test_inception_v1_discovery_matches_summit_table(inception):
    graph = discover(inception, torch.zeros(1, 3, 224, 224), inception.SUMMARY_LAYERS)
    assert {l: graph.channels[l] for l in graph.layers} == INCEPTION_CHANNELS
    assert graph.input_node == "conv2d2_pre_relu_conv" and graph.channels["conv2d2_pre_relu_conv"] == 192
    assert len(graph.edges) == 9 * 6
    by_conv = {e.conv: e for e in graph.edges}
    e = by_conv["mixed4d_3x3_pre_relu_conv"]
    assert (e.source, e.target, e.target_offset, e.in_channels, e.out_channels) == (
        "mixed4d_3x3_bottleneck_pre_relu_conv", "mixed4d", 112, 144, 288)
    e = by_conv["mixed4d_pool_reduce_pre_relu_conv"]
    assert (e.source, e.target, e.target_offset) == ("mixed4c", "mixed4d", 112 + 288 + 64)
    e = by_conv["mixed4a_1x1_pre_relu_conv"]  # reads mixed3b through the stride-2 max pool
    assert (e.source, e.target, e.target_offset) == ("mixed3b", "mixed4a", 0)


def test_inception_v1_loads_a_state_dict_file(tmp_path, inception):
    path = tmp_path / "weights.pt"
    torch.save(inception.state_dict(), path)
    loaded = inception_v1(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), inception.state_dict().values()))
    assert not loaded.training


@pytest.mark.parametrize("name", MODELS)
def test_every_model_of_run_has_its_preprocessing(name):
    model = load_model(name, None)
    assert isinstance(model.PREPROCESS, Preprocess)
    assert model.PREPROCESS.size == model.INPUT_SHAPE[1] == model.INPUT_SHAPE[2]


def test_inception_v1_input_is_lucents_value_range(inception):
    from PIL import Image

    x = inception.PREPROCESS(Image.new("RGB", (300, 200), (117, 127, 255)))
    assert x.shape == (3, 224, 224)
    assert torch.equal(x, torch.tensor([0.0, 10.0, 138.0]).view(3, 1, 1).expand(3, 224, 224))


def test_digits_cnn_aggregates_without_layers_argument():
    torch.manual_seed(0)
    batches = [(torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,)))]
    result = summit_fast.aggregate(digits_cnn().eval(), batches, progress=False, backend="torch")
    assert result.layers == ["block1", "block2", "block3"] and result.num_classes == 10
    assert [e.source for e in result.edges] == ["input", "block1", "block2"]


def test_channels_last_and_autocast_run():
    torch.manual_seed(0)
    batches = [(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))]
    model = digits_cnn().eval()
    plain = summit_fast.aggregate(model, batches, progress=False, backend="torch")
    cl = summit_fast.aggregate(model, batches, progress=False, backend="torch", channels_last=True)
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    # channels_last runs other conv kernels, whose outputs may differ in the last bit.
    assert cl.params == plain.params
    assert_same_counts(cl, plain)
    bf16 = summit_fast.aggregate(model, batches, progress=False, backend="torch", amp_dtype=torch.bfloat16)
    assert bf16.num_images == 4 and int(bf16.activation["block3"].sum()) > 0
    # The result says its forward ran in bf16; runs without autocast keep their parameters.
    assert bf16.params["amp_dtype"] == "bfloat16" and "amp_dtype" not in plain.params
    with pytest.raises(ValueError, match="different parameters"):
        bf16 + plain
    with pytest.raises(ValueError, match="amp_dtype must be None, torch.bfloat16 or torch.float16, got torch.int8"):
        summit_fast.aggregate(model, batches, progress=False, backend="torch", amp_dtype=torch.int8)
