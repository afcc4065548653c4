"""Feature visualisation (summit_fast.featvis, summit-fast featvis) on tiny models whose best
input is known: the rendered image beats random and natural images, batching does not change
the images, the cache and resuming render only what is missing, the diversity term spreads the
images, bad input is one clear error, and the files are in Summit's layout."""

import contextlib
import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from summit_fast import featvis
from summit_fast.cli import main
from summit_fast.featvis import (FeatureVisSettings, RenderError, render_channels, render_diversity,
                                 safe_layer_name, safe_layer_names, write_feature_vis)
from summit_fast.images import TORCHVISION_IMAGENET, Preprocess

CORAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "google-coral-test_data"
FAST = FeatureVisSettings(size=32, steps=30, diversity=2)


class EdgeNet(nn.Module):
    """``edges``: ReLU of two fixed 5x5 filters of the red channel (0: vertical edges, 1:
    horizontal edges), then ``mix``: a 1x1 conv of them. The best input of ``edges`` channel 0
    is red stripes of period about 5 px across the image."""

    SUMMARY_LAYERS = ["edges", "mix"]
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 5, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, :, :2], self.conv.weight[0, 0, :, 3:] = -1.0, 1.0
            self.conv.weight[1, 0, :2, :], self.conv.weight[1, 0, 3:, :] = -1.0, 1.0
        self.edges = nn.ReLU()
        self.mix = nn.Conv2d(2, 3, 1)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.mix(self.edges(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny images and many small steps: on a loaded 2-core machine threads waiting for each other
    made these tests up to 9x slower (measured). Speed only; the images do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def objective(model, images, layer="edges", channel=0):
    """The channel's mean activation for pixel images (N, 3, S, S) in 0..1, as the model sees them."""
    mean = torch.tensor(model.PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.PREPROCESS.std).view(1, 3, 1, 1)
    out = featvis._capture(model, {layer: dict(model.named_modules())[layer]}, (images * 255 - mean) / std, grad=False)
    return out[layer][:, channel].mean(dim=(1, 2))


def natural_images(size):
    """Plain colours, gradients, smooth noise, a checkerboard and discs, and the photos of the
    shared test data when it is there (a square crop each)."""
    from PIL import Image

    photos = []
    for path in sorted(CORAL.glob("*.jpg")) + sorted(CORAL.glob("*.bmp")):
        with Image.open(path) as image:
            square = min(image.size)
            image = image.convert("RGB").crop((0, 0, square, square)).resize((size, size), Image.Resampling.BILINEAR)
            photos.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
    ramp = torch.linspace(0, 1, size)
    synthetic = [torch.full((3, size, size), v) for v in (0.0, 0.5, 1.0)]
    synthetic += [ramp.view(1, 1, -1).expand(3, size, size), ramp.view(1, -1, 1).expand(3, size, size)]
    g = torch.Generator().manual_seed(1)
    synthetic += list(F.interpolate(torch.rand(4, 3, 4, 4, generator=g), size=size, mode="bilinear"))
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    synthetic.append(((y // 8 + x // 8) % 2).float().expand(3, size, size))
    for radius in (size / 6, size / 3):
        synthetic.append(((y - size / 2) ** 2 + (x - size / 2) ** 2 < radius ** 2).float().expand(3, size, size))
    return torch.stack(photos + synthetic)


def test_rendered_image_beats_random_and_natural_images():
    model = EdgeNet()
    image = render_channels(model, [("edges", 0)], FeatureVisSettings(size=48, steps=60))
    assert image.shape == (1, 3, 48, 48) and 0 <= image.min() and image.max() <= 1
    g = torch.Generator().manual_seed(0)
    random = torch.rand(100, 3, 48, 48, generator=g)
    natural = natural_images(48)
    best = objective(model, image)[0]
    assert best > objective(model, random).max()
    assert best > objective(model, natural).max()


class DeadStartNet(nn.Module):
    """``dead``: a ReLU (or ReLU6) of the pixels' sum minus 4 (in preprocessed units), which is
    0 on every image near grey, such as the start image, so its ordinary gradient is 0; bright
    images make it fire."""

    SUMMARY_LAYERS = ["dead"]
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self, activation):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-4.0)
        self.dead = activation

    def forward(self, x):
        return self.dead(self.conv(x)).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("activation", [nn.ReLU(inplace=True), nn.ReLU6()], ids=["relu", "relu6"])
def test_a_channel_that_is_zero_on_the_start_image_still_renders(activation):
    model = DeadStartNet(activation)
    start = render_channels(model, [("dead", 0)], FeatureVisSettings(size=16, steps=1, lr=1e-9))
    assert objective(model, start, layer="dead")[0] == 0  # the start image: no ordinary gradient
    image = render_channels(model, [("dead", 0)], FeatureVisSettings(size=16, steps=100))
    assert objective(model, image, layer="dead")[0] > 0.1  # 0.62 measured; 0 without the redirection
    assert "forward" not in vars(model.dead)  # the module's own forward is back


def test_batched_rendering_equals_one_target_at_a_time():
    model = EdgeNet()
    targets = [("mix", 2), ("edges", 1), ("edges", 0), ("mix", 0)]
    together = render_channels(model, targets, FAST, batch=3)
    alone = torch.cat([render_channels(model, [t], FAST, batch=1) for t in targets])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    twice = render_channels(model, [targets[1], targets[1]], FAST)
    assert torch.equal(twice[0], twice[1])
    diverse = render_diversity(model, targets[:3], FAST, batch=4)
    assert diverse.shape == (3, 2, 3, 32, 32)
    torch.testing.assert_close(diverse[1], render_diversity(model, [targets[1]], FAST, batch=1)[0], atol=1e-4, rtol=0)


def test_diversity_term_makes_the_images_of_a_channel_differ_more():
    """Diversity as Lucid measures it: the cosine similarity of the images' Gram matrices of
    the layer's activations, lower with the diversity term than without."""
    model = EdgeNet()

    def similarity(weight):
        images = render_diversity(model, [("edges", 0)], FeatureVisSettings(size=32, steps=40, diversity=3,
                                                                             diversity_weight=weight))[0]
        mean = torch.tensor(model.PREPROCESS.mean).view(1, 3, 1, 1)
        std = torch.tensor(model.PREPROCESS.std).view(1, 3, 1, 1)
        act = featvis._capture(model, {"edges": model.edges}, (images * 255 - mean) / std, grad=False)["edges"]
        grams = F.normalize(torch.einsum("nchw,ndhw->ncd", act, act).flatten(1), dim=1)
        cosine = grams @ grams.T
        return (cosine.sum() - cosine.diagonal().sum()) / 6

    assert similarity(100.0) < similarity(0.0) - 0.05
    other_layer = FeatureVisSettings(size=32, steps=5, diversity=2, diversity_layer="edges")
    assert render_diversity(model, [("mix", 0)], other_layer).shape == (1, 2, 3, 32, 32)


def test_the_cache_renders_nothing_the_second_time(tmp_path):
    model = EdgeNet()
    targets = [("edges", 0), ("mix", 1)]
    first = write_feature_vis(tmp_path / "fv", model, targets, FAST, batch=2)
    assert first.rendered == {"channel": targets, "diversity": targets} and first.cached == {"channel": [], "diversity": []}
    files = sorted(p.relative_to(tmp_path / "fv").as_posix() for p in (tmp_path / "fv").rglob("*.jpg"))
    assert files == ["channel/edges-0-channel.jpg", "channel/mix-1-channel.jpg",
                     "diversity-0/edges-0-diversity-0.jpg", "diversity-0/mix-1-diversity-0.jpg",
                     "diversity-1/edges-0-diversity-1.jpg", "diversity-1/mix-1-diversity-1.jpg"]
    model.forwards = 0
    (tmp_path / "fv" / "channel" / "mix-1-channel.jpg").unlink()  # written again from the cache
    again = write_feature_vis(tmp_path / "fv", model, targets, FAST, batch=2)
    assert again.rendered == {"channel": [], "diversity": []} and again.cached == first.rendered
    assert model.forwards == 0
    assert (tmp_path / "fv" / "channel" / "mix-1-channel.jpg").is_file()
    # Other settings are another cache entry; channel images do not depend on the diversity settings.
    more = write_feature_vis(tmp_path / "fv", model, targets, FeatureVisSettings(size=32, steps=30, diversity=3))
    assert more.rendered == {"channel": [], "diversity": targets}
    other = write_feature_vis(tmp_path / "fv", model, targets[:1], FeatureVisSettings(size=32, steps=31, diversity=0))
    assert other.rendered == {"channel": targets[:1], "diversity": []}


def test_the_cache_is_keyed_by_the_weights_and_the_preprocessing(tmp_path):
    """Other weights or another preprocessing are other images: rendered afresh, not taken from the cache."""
    settings = FeatureVisSettings(size=16, steps=2, diversity=0)
    model, target = EdgeNet(), [("mix", 1)]
    assert write_feature_vis(tmp_path, model, target, settings).rendered["channel"] == target
    assert write_feature_vis(tmp_path, model, target, settings).cached["channel"] == target
    with torch.no_grad():
        model.mix.bias[1] += 1.0
    assert write_feature_vis(tmp_path, model, target, settings).rendered["channel"] == target
    scaled = Preprocess(32, 1.0, True, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    assert write_feature_vis(tmp_path, model, target, settings, preprocess=scaled).rendered["channel"] == target
    assert write_feature_vis(tmp_path, model, target, settings, preprocess=scaled).cached["channel"] == target


def test_a_killed_run_resumes_rendering_only_the_rest(tmp_path, monkeypatch):
    model = EdgeNet()
    targets = [("edges", 0), ("edges", 1), ("mix", 0), ("mix", 2)]
    settings = replace_diversity(FAST, 0)
    optimise, calls = featvis._optimise, []

    def killed_after_one_batch(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return optimise(*args, **kwargs)

    monkeypatch.setattr(featvis, "_optimise", killed_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        write_feature_vis(tmp_path / "fv", model, targets, settings, batch=2)
    monkeypatch.setattr(featvis, "_optimise", optimise)
    resumed = write_feature_vis(tmp_path / "fv", model, targets, settings, batch=2)
    assert resumed.cached["channel"] == targets[:2] and resumed.rendered["channel"] == targets[2:]
    fresh = write_feature_vis(tmp_path / "fresh", model, targets, settings, batch=4)
    for layer, ch in targets:
        name = featvis.channel_file(layer, ch)
        assert (tmp_path / "fv" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    assert fresh.rendered["channel"] == targets


def replace_diversity(settings, d):
    from dataclasses import replace

    return replace(settings, diversity=d)


def test_a_nan_names_the_channel_and_keeps_the_cache(tmp_path):
    class NanChannel(EdgeNet):
        def __init__(self):
            super().__init__()
            self.edges.register_forward_hook(self.nan_in_channel_1)

        @staticmethod
        def nan_in_channel_1(module, inputs, output):
            output = output.clone()
            output[:, 1] = float("nan")
            return output

    model = NanChannel()
    settings = replace_diversity(FAST, 0)
    with pytest.raises(RenderError, match="layer 'edges' channel 1 became NaN"):
        write_feature_vis(tmp_path / "fv", model, [("edges", 0), ("edges", 1)], settings, batch=1)
    assert write_feature_vis(tmp_path / "fv", model, [("edges", 0)], settings).rendered["channel"] == []


def test_disk_full_leaves_no_file_half_written(tmp_path, monkeypatch):
    from PIL import Image

    model = EdgeNet()
    save = Image.Image.save

    def full(self, fp, format=None, **options):
        if format == "JPEG":
            save(self, fp, format=format, **options)  # part of the file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, format=format, **options)

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OSError, match="No space left"):
        write_feature_vis(tmp_path / "fv", model, [("edges", 0)], replace_diversity(FAST, 0))
    left = [p.name for p in (tmp_path / "fv").rglob("*") if p.is_file()]
    assert left == ["edges-0-channel.png"]  # the cached image, complete; no JPEG, no temporary file
    monkeypatch.setattr(Image.Image, "save", save)
    again = write_feature_vis(tmp_path / "fv", model, [("edges", 0)], replace_diversity(FAST, 0))
    assert again.rendered["channel"] == [] and (tmp_path / "fv" / "channel" / "edges-0-channel.jpg").is_file()


@pytest.mark.parametrize("call, message", [
    (lambda m: render_channels(m, [("nope", 0)], FAST), r"unknown layer 'nope': EdgeNet's layers are edges, mix"),
    (lambda m: render_channels(m, [("mix", 3)], FAST), r"layer 'mix' has 3 channels \(0..2\); channel 3 does not exist"),
    (lambda m: render_channels(m, [("mix", 0)], FeatureVisSettings(steps=0)), r"steps must be at least 1, got 0"),
    (lambda m: render_channels(m, [("mix", 0)], FAST, batch=0), r"batch must be at least 1"),
    (lambda m: render_diversity(m, [("mix", 0)], replace_diversity(FAST, 0)), r"needs settings.diversity >= 1"),
    (lambda m: render_diversity(m, [("mix", 0)], FeatureVisSettings(diversity_layer="edge")), r"unknown layer 'edge'"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call(EdgeNet())
    assert "\n" not in str(info.value)


class ShrinkingNet(nn.Module):
    """``shallow``: an unpadded 11x11 conv; ``deep``: an unpadded 7x7 conv after a 2x2 max pool,
    which needs inputs of at least 24 px (feature-vis size 12: rendered images are size + 12)."""

    SUMMARY_LAYERS = ["shallow", "deep"]
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self):
        super().__init__()
        self.shallow = nn.Conv2d(3, 2, 11)
        self.deep = nn.Conv2d(2, 2, 7)

    def forward(self, x):
        return self.deep(F.max_pool2d(self.shallow(x), 2)).mean(dim=(2, 3))


def test_a_size_below_the_models_minimum_names_the_smallest_that_works(tmp_path, monkeypatch):
    from dataclasses import replace

    model = ShrinkingNet()
    monkeypatch.setattr(featvis, "_optimise", lambda *a, **k: pytest.fail("rendered before the size was checked"))
    with pytest.raises(featvis.SizeTooSmall) as info:
        write_feature_vis(tmp_path / "fv", model, [("shallow", 0), ("deep", 1)], replace(FAST, size=8))
    assert str(info.value) == "size 8 is too small for ShrinkingNet up to layer 'deep': the smallest size that works is 12"
    assert isinstance(info.value, ValueError) and info.value.minimum == 12
    assert info.value.for_option("--size").startswith("--size 8 is too small") and not (tmp_path / "fv").exists()
    with pytest.raises(featvis.SizeTooSmall, match="smallest size that works is 12"):
        featvis.check_size(model, ["deep"], 11)
    featvis.check_size(model, ["deep"], 12)
    featvis.check_size(model, ["shallow"], 8)  # the shallow layer alone takes 20 px
    monkeypatch.undo()
    assert render_channels(model, [("deep", 1)], replace(FAST, size=12, steps=1)).shape == (1, 3, 12, 12)


def test_an_error_that_no_size_cures_is_left_as_it_is():
    class Broken(EdgeNet):
        def forward(self, x):
            raise RuntimeError("broken model")

    with pytest.raises(RuntimeError, match="^broken model$"):
        render_channels(Broken(), [("edges", 0)], FAST)


def test_a_model_without_preprocess_says_what_to_pass():
    class Bare(EdgeNet):
        PREPROCESS = None

    with pytest.raises(ValueError, match=r"Bare has no PREPROCESS: pass preprocess=summit_fast.images.Preprocess"):
        render_channels(Bare(), [("edges", 0)], FAST)
    scaled = Preprocess(32, 1.0, True, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))  # pixels as 0..1
    assert render_channels(Bare(), [("edges", 0)], FAST, preprocess=scaled).shape == (1, 3, 32, 32)


def test_safe_layer_names_and_file_names():
    assert safe_layer_name("features.14") == "features_14"
    assert safe_layer_name("mixed4a") == "mixed4a" and safe_layer_name("a/b c-d") == "a_b_c-d"
    assert featvis.channel_file("features.14", 7) == "channel/features_14-7-channel.jpg"
    assert featvis.diversity_file("features.14", 7, 3) == "diversity-3/features_14-7-diversity-3.jpg"
    assert safe_layer_names(["a.b", "c"]) == {"a.b": "a_b", "c": "c"}
    with pytest.raises(ValueError, match=r"layers 'a.b' and 'a_b' have the same file-name form 'a_b'"):
        safe_layer_names(["a.b", "a_b"])


# -- the command ----------------------------------------------------------------------------
@pytest.fixture
def viewer(tmp_path):
    """A viewer folder as run writes it, for resnet18's random weights: graphs of two classes."""
    ag = tmp_path / "run" / "viewer" / "ag"
    ag.mkdir(parents=True)
    node = lambda layer, ch: {"channel": ch, "count": 1, "layer": layer, "pagerank": 0.1,  # noqa: E731
                              "prev_channels": [], "attr_channels": []}
    (ag / "ag-0.json").write_text(json.dumps({"layer2.0": [node("layer2.0", 5)], "layer1.0": [node("layer1.0", 3)]}))
    (ag / "ag-1.json").write_text(json.dumps({"layer2.0": [node("layer2.0", 5)], "layer1.0": [node("layer1.0", 1)]}))
    return tmp_path / "run"


def cli(capsys, *args):
    try:
        code = main(["featvis", *map(str, args)])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


SMALL = ("--model", "resnet18", "--size", "16", "--steps", "2", "--no-progress", "--device", "cpu")


def test_cli_renders_the_graph_channels_into_the_viewer_folder(viewer, capsys):
    code, out, err = cli(capsys, viewer, *SMALL, "--diversity", "2", "--layers", "layer1.0")
    assert code == 0, err
    fv = viewer / "viewer" / "feature-vis"
    assert sorted(p.relative_to(fv).as_posix() for p in fv.rglob("*.jpg")) == [
        "channel/layer1_0-1-channel.jpg", "channel/layer1_0-3-channel.jpg",
        "diversity-0/layer1_0-1-diversity-0.jpg", "diversity-0/layer1_0-3-diversity-0.jpg",
        "diversity-1/layer1_0-1-diversity-1.jpg", "diversity-1/layer1_0-3-diversity-1.jpg"]
    assert "feature visualisations of 2 channels" in out and "rendered 2 channel images" in out
    code, out, err = cli(capsys, viewer, *SMALL, "--diversity", "2", "--layers", "layer1.0")
    assert code == 0 and "rendered 0 channel images" in out


def test_cli_defaults_are_run_feature_vis_defaults_for_the_device(viewer, capsys, monkeypatch):
    from summit_fast.cli_run import FEATURE_VIS_BATCH, FEATURE_VIS_DEFAULTS

    seen = {}

    def write(out, model, targets, settings, *, batch, **options):
        seen.update(settings=settings, batch=batch)
        return featvis.FeatureVisReport()

    monkeypatch.setattr(featvis, "write_feature_vis", write)
    code, _, err = cli(capsys, viewer, "--model", "resnet18", "--no-progress", "--device", "cpu")
    cpu = FEATURE_VIS_DEFAULTS["cpu"]
    assert code == 0, err
    assert (seen["settings"].size, seen["settings"].steps, seen["batch"]) == (cpu.size, cpu.steps, FEATURE_VIS_BATCH["cpu"])
    assert (cpu.size, cpu.steps) != (FEATURE_VIS_DEFAULTS["gpu"].size, FEATURE_VIS_DEFAULTS["gpu"].steps)
    code, _, err = cli(capsys, viewer, *SMALL, "--batch", "3")  # what is given wins
    assert code == 0 and (seen["settings"].size, seen["settings"].steps, seen["batch"]) == (16, 2, 3)


def test_cli_errors_are_one_line(viewer, tmp_path, capsys):
    code, _, err = cli(capsys, viewer, *SMALL, "--layers", "layer9")
    assert code == 1 and "--layers layer9: the graphs have no nodes in layer 'layer9'; their layers are layer2.0, layer1.0" in err
    (viewer / "viewer" / "summit_fast.json").write_text(json.dumps({"params": {"model_digest": "0" * 64}}))
    code, _, err = cli(capsys, viewer, *SMALL)
    assert code == 1 and "is not the network" in err and "--model, --weights and --tf-padding" in err
    code, _, err = cli(capsys, tmp_path, *SMALL)
    assert code == 1 and "holds neither viewer/ag/" in err
    code, _, err = cli(capsys, viewer, *SMALL[:2], "--steps", "0")
    assert code == 2 and "--steps: expected an integer >= 1, got '0'" in err


def test_cli_size_below_the_models_minimum_is_one_line(viewer, capsys, monkeypatch):
    ag = viewer / "viewer" / "ag" / "ag-0.json"
    ag.write_text(json.dumps({"deep": [{"channel": 1, "count": 1, "layer": "deep", "pagerank": 0.1,
                                        "prev_channels": [], "attr_channels": []}]}))
    (viewer / "viewer" / "ag" / "ag-1.json").unlink()
    monkeypatch.setattr("summit_fast.cli_featvis.load_model", lambda *args: ShrinkingNet())
    code, out, err = cli(capsys, viewer, *SMALL[:2], "--size", "8", "--steps", "1", "--no-progress", "--device", "cpu")
    assert code == 1 and err == ("summit-fast featvis: error: --size 8 is too small for ShrinkingNet up to layer "
                                 "'deep': the smallest --size that works is 12\n")
    assert not (viewer / "viewer" / "feature-vis").exists()


def test_cli_renders_a_saved_result_with_out_and_checks_its_weights(tmp_path, capsys):
    import summit_fast
    from summit_fast.models.loading import load_model

    model = load_model("resnet18", None)  # what run aggregates without --weights
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(2, 3, 32, 32, generator=gen), torch.tensor([0, 1]))]
    result = summit_fast.aggregate(model, batches, classes=[0, 1], selection=summit_fast.topk(2), backend="torch",
                                   progress=False)
    result.save(tmp_path / "result")
    code, _, err = cli(capsys, tmp_path / "result", *SMALL, "--diversity", "0", "--layers", "layer1.0")
    assert code == 1 and "is a saved result, not a run or viewer folder: pass --out DIR" in err
    code, out, err = cli(capsys, tmp_path / "result", *SMALL, "--diversity", "0", "--layers", "layer1.0",
                         "--out", tmp_path / "fv")
    assert code == 0, err
    rendered = sorted(p.name for p in (tmp_path / "fv" / "channel").glob("*.jpg"))
    assert rendered and all(name.startswith("layer1_0-") for name in rendered)
    code, _, err = cli(capsys, tmp_path / "result", *SMALL[:-2], "--weights", tmp_path / "result" / "counts.safetensors",
                       "--out", tmp_path / "fv")
    assert code == 1 and "--weights" in err


def test_bf16_autocast_is_part_of_the_cache_key(tmp_path):
    model = EdgeNet()
    settings = replace_diversity(FAST, 0)
    write_feature_vis(tmp_path, model, [("edges", 0)], settings)
    from dataclasses import replace

    half = write_feature_vis(tmp_path, model, [("edges", 0)], replace(settings, amp="bf16"))
    assert half.rendered["channel"] == [("edges", 0)]
    with pytest.raises(ValueError, match=r"amp must be None or one of \('bf16',\), got 'fp8'"):
        render_channels(model, [("edges", 0)], replace(settings, amp="fp8"))


def test_a_device_other_than_the_models_is_one_line():
    with pytest.raises(ValueError, match=r"device 'meta': the model is on cpu; move it there first"):
        render_channels(EdgeNet(), [("edges", 0)], FAST, device="meta")


def test_the_model_is_left_as_it_was_and_nothing_is_an_empty_batch():
    class Normed(EdgeNet):
        def __init__(self):
            super().__init__()
            self.edges = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU())

    model = Normed().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    render_channels(model, [("edges", 1)], FAST)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert render_channels(model, [], FAST).shape == (0, 3, 32, 32)


class ConvBN(nn.Sequential):
    """conv -> BatchNorm -> ReLU, the BatchNorm with non-trivial running statistics and affine."""

    def __init__(self, c_in, c_out, groups=1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, groups=groups, bias=groups > 1),
                         nn.BatchNorm2d(c_out), nn.ReLU())
        with torch.no_grad():
            self[1].running_mean.uniform_(-1, 1)
            self[1].running_var.uniform_(0.5, 2)
            self[1].weight.uniform_(0.5, 1.5)
            self[1].bias.uniform_(-0.5, 0.5)


class NormedNet(nn.Module):
    SUMMARY_LAYERS = ["a", "b"]
    PREPROCESS = TORCHVISION_IMAGENET

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = ConvBN(3, 8)
        self.b = ConvBN(8, 8, groups=8)

    def forward(self, x):
        return self.b(self.a(x)).mean(dim=(2, 3))


def test_folded_batch_norms_compute_the_same_outputs_and_restore_the_model():
    from summit_fast.featvis_model import FoldedBatchNorms

    model = NormedNet().eval()
    x = torch.randn(2, 3, 16, 16)
    modules = {"a": model.a, "b": model.b, "b.0": model.b[0]}
    plain = featvis._capture(model, modules, x, grad=False)
    folded = FoldedBatchNorms(model, keep={"b.0"})  # b's conv output is read: b keeps its BatchNorm
    assert [conv for conv, _ in folded.pairs] == [model.a[0]]
    with folded:
        h = torch.randn(2, 8, 4, 4)
        assert model.a[1](h) is h  # the BatchNorm passes its input through
        fused = featvis._capture(model, modules, x, grad=False)
    for name, out in plain.items():
        torch.testing.assert_close(fused[name], out, rtol=1e-5, atol=1e-5)
    assert not any("forward" in vars(m) for m in model.modules())  # the class's forward again
    assert model.a[1](h).sub(h).abs().max() > 0.1  # and normalises again after


def test_folding_is_not_used_when_a_sequential_does_not_apply_its_children_in_order():
    class Shuffled(ConvBN):
        def forward(self, x):  # the BatchNorm normalises the input, not the conv's output
            return self[2](self[0](self[1](F.pad(x, (0, 0, 0, 0, 0, 5)))))  # 3 -> 8 channels

    model = NormedNet().eval()
    model.a = Shuffled(8, 8).eval()
    modules = {"a": model.a, "b": model.b}
    assert featvis._folded_batch_norms(model, modules, 16, "cpu").__class__.__name__ == "nullcontext"
    plain = NormedNet().eval()
    assert featvis._folded_batch_norms(plain, {"a": plain.a, "b": plain.b}, 16, "cpu").pairs  # a plain one folds


def test_rendering_with_batch_norms_folded_matches_the_plain_model(monkeypatch):
    """The images with the BatchNorms folded are those of the plain model, up to float rounding
    (a few steps: rounding differences grow over a long optimisation)."""
    settings = FeatureVisSettings(size=16, steps=5, diversity=0)
    model = NormedNet().eval()
    folded = render_channels(model, [("a", 1), ("b", 3)], settings)
    monkeypatch.setattr(featvis, "_folded_batch_norms", lambda *args: contextlib.nullcontext())
    plain = render_channels(model, [("a", 1), ("b", 3)], settings)
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-4)
