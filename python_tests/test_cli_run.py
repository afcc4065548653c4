"""``summit-fast run`` on tiny synthetic image folders (a few PNGs, ResNet-18 with seeded random
weights): sharding under torchrun, labels, checkpoints (resume, image changes, removal),
unreadable images, wrong weights, argument errors and what the command prints; and what it
writes (tests of that run TinyInception instead): patches of the graphs' channels, one run per
--out at a time, a full disk, Ctrl-C, the temporaries of killed runs."""

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import summit_fast
from summit_fast import SummitResult
from summit_fast.cli import main
from summit_fast._lock import exclusive
from summit_fast.aggregate import Aggregator
from summit_fast.cli_run import plan_labels
from summit_fast.models.loading import state_dict_mismatch
from summit_fast.images import ImageFolderDataset, ImageLoader, Preprocess
from summit_fast.models import resnet18

from cli_command import run_cli
from image_folders import write_images
from patch_files import example_patches, patches
from result_compare import assert_same_counts
from tiny_models import TinyInception

BASE = ("--model", "resnet18", "--workers", "0", "--no-progress", "--embedding", "pca", "--batch-size", "1")


def cli(capsys, *args) -> tuple[int, str, str]:
    """``summit-fast run ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        code = main(["run", *BASE, *map(str, args)])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its contents."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def dead_pid() -> int:
    """The PID of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def ckpt_result(rank_dir: Path) -> SummitResult:
    """The latest checkpoint in ``rank_dir``."""
    return SummitResult.load(rank_dir / (rank_dir / "LATEST").read_text())


def resnet18_seeded():
    """The network run aggregates without --weights."""
    torch.manual_seed(0)
    return resnet18()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def tiny(monkeypatch):
    """``run``'s model replaced by a seeded TinyInception (9x9 input, 5 outputs): for tests of what
    the command writes, which need no real network. Returns the replacement of ``load_model``."""
    def load(name, weights, tf_padding=False):
        torch.manual_seed(0)
        model = TinyInception()
        model.PREPROCESS = Preprocess(9, 1.0, True, (127.5,) * 3, (127.5,) * 3)
        return model.eval()

    monkeypatch.setattr("summit_fast.cli_run.load_model", load)
    return load


@pytest.fixture
def earlier(tiny, images, tmp_path, capsys):
    """The --out of a completed run (one example per channel), and its files."""
    out = tmp_path / "out"
    code, _, err = cli(capsys, "--images", images, "--out", out, "--examples", "1")
    assert code == 0, err
    return out, files(out)


@pytest.fixture(scope="module")
def single(images, tmp_path_factory):
    """One process, one example per channel: (out folder, stdout, stderr)."""
    out = tmp_path_factory.mktemp("single") / "out"
    proc = run_cli("run", *BASE, "--images", str(images), "--out", str(out), "--examples", "1")
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, proc.stderr


# -- torchrun -------------------------------------------------------------------------------
def test_torchrun_shards_and_equals_one_process(images, single, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "summit_fast.cli", "run", *BASE, "--images", str(images), "--out", str(out),
                           "--examples", "1", "--checkpoint-every", "1", "--keep-checkpoints"],
                          capture_output=True, text=True, timeout=900, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("aggregated 6 images") == 1 and "on 2 processes" in proc.stdout  # rank 0 speaks
    result = SummitResult.load(out / "result")
    # torchrun runs each rank on one thread (unless OMP_NUM_THREADS is set), the single process on
    # several: forward outputs may differ in the last bit, which assert_same_counts allows for
    # float values only.
    one_process = SummitResult.load(single[0] / "result")
    assert result.params == one_process.params
    assert_same_counts(result, one_process)
    # Each rank counted its shard only (dataset items r, r + 2, ...), in its own checkpoint folder.
    ranks = sorted(out.glob("checkpoints/images-*/rank-*"))
    assert [r.name for r in ranks] == ["rank-0-of-2", "rank-1-of-2"]
    shards = [ckpt_result(r) for r in ranks]
    for rank, shard in enumerate(shards):
        assert shard.num_images == 3
        ids = torch.cat([s["image"].flatten() for s in shard.examples.values()])
        assert bool((ids % 2 == rank).all())
    assert SummitResult.merge(shards) == result
    assert patches(out / "viewer") == example_patches(result, out / "viewer")


# -- labels ---------------------------------------------------------------------------------
def test_wordnet_id_folders_are_labelled_with_imagenet_indices(tmp_path, capsys):
    write_images(tmp_path / "images", classes=("n01440764", "n01530575"))  # tench, brambling: indices 0 and 10
    code, out, err = cli(capsys, "--images", tmp_path / "images", "--out", tmp_path / "out", "--examples", "0")
    assert code == 0, err
    result = SummitResult.load(tmp_path / "out" / "result")
    assert result.class_ids == [0, 10]
    assert result.class_names == ["tench, Tinca tinca", "brambling, Fringilla montifringilla"]
    assert result.params["predictions"] is True
    assert f"top-1 accuracy: {result.top1_accuracy_overall:.4f}\n" in out  # over all images, one number
    assert "topOneAcc" in json.loads((tmp_path / "out" / "viewer" / "classes.json").read_text())[0]
    assert "not the model's classes" not in err


def test_folder_labels_warn_and_record_no_accuracy(single):
    out, stdout, stderr = single
    assert "warning: the class folders (cat, dog) are not the model's classes" in stderr
    assert "accuracy" not in stdout
    result = SummitResult.load(out / "result")
    assert result.class_ids == [0, 1] and result.class_names == ["cat", "dog"]
    assert result.params["predictions"] is False and int(result.confusion.sum()) == 0
    assert "topOneAcc" not in json.loads((out / "viewer" / "classes.json").read_text())[0]


def test_label_plans():
    class Folder:
        def __init__(self, mode, classes, targets):
            self.label_mode, self.classes, self.targets = mode, classes, targets

    names = summit_fast.imagenet.imagenet_class_names()
    imagenet = Folder("imagenet", names, [990, 0, 990])
    plan = plan_labels(imagenet, 1000)
    assert (plan.classes, plan.label_source, plan.accuracy, plan.warning) == ([0, 990], "target", True, None)
    assert plan.names == [names[0], names[990]]
    plan = plan_labels(imagenet, 1008)  # InceptionV1's classifier: another order
    assert not plan.accuracy and "model has 1008 outputs" in plan.warning and plan.num_classes == 1000
    plan = plan_labels(Folder("folders", ["a", "b", "c"], [2, 0]), 1000)
    assert (plan.classes, plan.names, plan.num_classes, plan.accuracy) == ([0, 2], ["a", "c"], 3, False)
    plan = plan_labels(Folder("none", [], [-1, -1]), 1000)
    assert (plan.classes, plan.label_source, plan.accuracy, plan.names) == (None, "prediction", False, names)
    assert "all 1000 of the model's classes" in plan.warning


# -- checkpoints ----------------------------------------------------------------------------
def test_a_rerun_with_other_padding_and_preprocessing_does_not_resume(tmp_path, capsys):
    """--tf-padding keeps mobilenet_v2's weights but changes its convs' padding and its input."""
    images, out = write_images(tmp_path / "images"), tmp_path / "out"
    args = ("--images", images, "--out", out, "--examples", "0", "--model", "mobilenet_v2", "--keep-checkpoints")
    code, stdout, err = cli(capsys, *args)
    assert code == 0, err
    code, stdout, err = cli(capsys, *args, "--tf-padding")
    assert code == 0, err
    assert "resumed" not in stdout
    assert "holds checkpoints of other image files, labels, batching or preprocessing" in stdout


def test_rerun_resumes_changed_images_start_afresh_and_success_removes_checkpoints(tmp_path, capsys):
    images, out = write_images(tmp_path / "images"), tmp_path / "out"
    args = ("--images", images, "--out", out, "--examples", "0")
    code, stdout, err = cli(capsys, *args, "--keep-checkpoints")
    assert code == 0, err
    kept = sum(f.stat().st_size for f in (out / "checkpoints").rglob("*") if f.is_file())
    assert "resumed" not in stdout
    assert f"checkpoints kept in {out / 'checkpoints'} ({mib(kept)}; --keep-checkpoints)" in stdout
    first = SummitResult.load(out / "result")
    (folder,) = (out / "checkpoints").iterdir()

    code, stdout, err = cli(capsys, *args, "--keep-checkpoints")
    assert code == 0, err
    assert f"resumed from {folder}: 6 of 6 batches done" in stdout
    assert SummitResult.load(out / "result") == first

    write_images(images, classes=("dog",), seed=1)  # same names and count, other pixels
    code, stdout, err = cli(capsys, *args, "--keep-checkpoints")
    assert code == 0, err
    assert "resumed" not in stdout and "holds checkpoints of other image files" in stdout
    changed = SummitResult.load(out / "result")
    assert changed != first
    assert changed == summit_fast.aggregate(
        resnet18_seeded(), ImageLoader(ImageFolderDataset(images, resnet18().PREPROCESS), batch_size=1),
        classes=[0, 1], num_classes=2, class_names=["cat", "dog"], progress=False)

    code, stdout, err = cli(capsys, *args, "--batch-size", "2")  # another batching: not resumable either
    assert code == 0, err
    assert "resumed" not in stdout
    assert f"removed the checkpoints in {out / 'checkpoints'} (--keep-checkpoints keeps them)" in stdout
    assert not (out / "checkpoints").exists()
    assert SummitResult.load(out / "result") == changed


def test_checkpoint_of_other_weights_is_refused_naming_the_folder_and_fresh(tmp_path, capsys, images):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "--images", images, "--out", out, "--examples", "0", "--keep-checkpoints")
    assert code == 0, err
    torch.manual_seed(1)
    torch.save(resnet18().state_dict(), tmp_path / "other.pt")
    code, _, err = cli(capsys, "--images", images, "--out", out, "--examples", "0", "--weights", tmp_path / "other.pt")
    assert code == 1
    assert (f"error: the checkpoint in {out / 'checkpoints'}/images-" in err
            and f"was made by a run with different model weights; pass --fresh to discard {out / 'checkpoints'} "
                "and start over, or choose another --out" in err)
    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "0", "--weights",
                            tmp_path / "other.pt", "--fresh")
    assert code == 0, err
    assert f"removed the checkpoints in {out / 'checkpoints'} (--fresh)" in stdout and "resumed" not in stdout


# -- unreadable images ----------------------------------------------------------------------
@pytest.fixture
def with_bad_file(images, tmp_path):
    """A copy of ``images`` with cat/1.png replaced by text; returns (folder, bad file)."""
    import shutil

    shutil.copytree(images, tmp_path / "images")
    bad = tmp_path / "images" / "cat" / "1.png"
    bad.write_text("not an image")
    return tmp_path / "images", bad


def test_unreadable_image_is_one_line_naming_the_file_also_from_a_worker(with_bad_file, tmp_path):
    folder, bad = with_bad_file
    proc = run_cli("run", *BASE, "--images", str(folder), "--out", str(tmp_path / "out"), "--examples", "0",
                   "--workers", "1")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "warning:" not in line]
    assert errors == [f"summit-fast run: error: cannot read image file {bad}: cannot identify image file "
                      f"'{bad}' (--skip-unreadable leaves such files out)"]


def test_skip_unreadable_counts_the_others_with_the_right_example_files(with_bad_file, single, tmp_path, capsys):
    folder, bad = with_bad_file
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--images", folder, "--out", out, "--examples", "1", "--skip-unreadable")
    assert code == 0, err
    assert f"warning: skipped 1 unreadable image file (not counted): {bad}" in err
    skipped = SummitResult.load(out / "result")
    assert skipped.images_per_class.tolist() == [2, 3]
    # Batches of one image: the counts are those of the readable images alone, and the dataset
    # examples name files by their index in the same listing as the run over all six (the bad
    # file keeps its index; cat/1.png, index 1, may be an example there, so compare the others).
    bad_index = ImageFolderDataset(folder, None).paths.index(bad)
    assert bad_index == 1
    full = SummitResult.load(single[0] / "result")
    for layer, state in skipped.examples.items():
        mine, theirs = state["image"][:, 0], full.examples[layer]["image"][:, 0]
        assert bad_index not in mine.tolist()
        assert torch.equal(mine[theirs != bad_index], theirs[theirs != bad_index]), layer


def test_skip_unreadable_with_nothing_readable_is_an_error(tmp_path, capsys):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "0.png").write_text("not an image")
    code, _, err = cli(capsys, "--images", tmp_path / "images", "--out", tmp_path / "out", "--examples", "0",
                       "--skip-unreadable")
    assert code == 1 and "error: none of the 1 images under" in err and "could be read" in err
    assert not (tmp_path / "out" / "result").exists()


# -- weights and arguments ------------------------------------------------------------------
def test_weights_of_another_model_give_a_short_message(tmp_path, capsys, images):
    torch.save(summit_fast.models.mobilenet_v2().state_dict(), tmp_path / "mnv2.pt")
    code, _, err = cli(capsys, "--images", images, "--out", tmp_path / "out", "--weights", tmp_path / "mnv2.pt")
    assert code == 1
    assert err.count("\n") == 1 and len(err) < 500 and "Traceback" not in err
    assert err.startswith(f"summit-fast run: error: --weights {tmp_path / 'mnv2.pt'} does not fit resnet18: none of "
                          "resnet18's 122 keys is in the file; none of the file's 314 keys is resnet18's (they look "
                          "like features.0.0.weight ... ")
    assert "resnet18's keys look like conv1.weight ... " in err


def test_state_dict_mismatch_names_counts_shapes_and_hints():
    expected = resnet18().state_dict()
    assert state_dict_mismatch(expected, expected, "resnet18") is None
    other = resnet18(num_classes=10).state_dict()
    del other["layer1.0.conv1.weight"]
    message = state_dict_mismatch(expected, other, "resnet18")
    assert message.startswith("does not fit resnet18: 1 of resnet18's 122 keys are missing (e.g. "
                              "layer1.0.conv1.weight); 2 tensors have another shape (e.g. fc.weight: (10, 512) in the "
                              "file, (1000, 512) in resnet18)")
    wrapped = {"epoch": 3, "state_dict": expected}
    assert "the file's entry 'state_dict' is itself a mapping" in state_dict_mismatch(expected, wrapped, "resnet18")
    prefixed = {f"module.{k}": v for k, v in expected.items()}
    assert "keys start with 'module.'" in state_dict_mismatch(expected, prefixed, "resnet18")


def test_weights_file_that_is_not_a_state_dict(tmp_path, capsys, images):
    (tmp_path / "junk.pt").write_text("hello")
    code, _, err = cli(capsys, "--images", images, "--out", tmp_path / "out", "--weights", tmp_path / "junk.pt")
    assert code == 1
    assert f"error: --weights {tmp_path / 'junk.pt'}: torch.load cannot read it as a state-dict file (" in err


def test_out_that_is_a_file_fails_before_loading_anything(tmp_path, capsys, images):
    (tmp_path / "out").write_text("")
    code, out, err = cli(capsys, "--images", images, "--out", tmp_path / "out")
    assert code == 1 and out == ""
    assert err == f"summit-fast run: error: --out {tmp_path / 'out'} is a file; give a folder (it is created if missing)\n"


@pytest.mark.parametrize("option", ["--batch-size", "--checkpoint-every"])
def test_counts_must_be_positive(option, tmp_path, capsys, images):
    code, _, err = cli(capsys, "--images", images, "--out", tmp_path / "out", option, "0")
    assert code == 2 and f"argument {option}: expected an integer >= 1, got '0'" in err


def test_help_gives_defaults():
    proc = run_cli("run", "--help")
    text = " ".join(proc.stdout.split())
    assert "images per batch (default 32)" in text
    assert "else PCA (default auto)" in text and "--keep-checkpoints" in text and "--skip-unreadable" in text


def test_summary_says_where_everything_went_how_big_and_warns_once_about_random_weights(single):
    out, stdout, stderr = single
    viewer, examples = out / "viewer", out / "viewer" / "feature-vis" / "dataset-p"
    patch_bytes = sum(p.stat().st_size for p in examples.rglob("*.jpg"))
    viewer_bytes = sum(p.stat().st_size for p in viewer.rglob("*") if p.is_file()) - patch_bytes
    result_bytes = sum(p.stat().st_size for p in (out / "result").iterdir())
    assert f"result: {out / 'result'} ({mib(result_bytes)}: the counts of 6 images in 2 classes)" in stdout
    assert f"viewer: {viewer} ({mib(viewer_bytes)} without the patches; attribution graphs of 2 classes in " \
           f"{viewer / 'ag'})" in stdout
    assert f"dataset-example patches: {len(patches(viewer))} ({mib(patch_bytes)}) in {examples}, of the channels in " \
           "the graphs (--all-patches: of every channel)" in stdout
    assert f"summit-fast view {viewer}" in stdout
    assert stderr.count("no --weights given: resnet18 has random weights (seed 0)") == 1
    assert not (out / "checkpoints").exists() and "removed the checkpoints" in stdout
    assert sorted(os.listdir(out)) == ["result", "viewer"]  # no lock file, no temporaries


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_a_cuda_device_without_cuda_is_one_line(tmp_path, capsys, images):
    code, out, err = cli(capsys, "--images", images, "--out", tmp_path / "out", "--device", "cuda")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("summit-fast run: error: device 'cuda': CUDA is not available here: ")
    assert not (tmp_path / "out").exists()


# -- what it writes -------------------------------------------------------------------------
def test_patches_are_those_of_the_graphs_channels_unless_all_patches(tiny, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "2")
    assert code == 0, err
    result, viewer = SummitResult.load(out / "result"), out / "viewer"
    written = patches(viewer)
    assert written == example_patches(result, viewer) and written < example_patches(result)
    assert f"dataset-example patches: {len(written)} (" in stdout and "of the channels in the graphs" in stdout

    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "2", "--all-patches")
    assert code == 0, err
    assert patches(viewer) == example_patches(SummitResult.load(out / "result"))
    assert "of every channel (--all-patches)" in stdout


def test_a_second_run_on_the_same_out_stops_at_once_naming_the_first(tiny, images, tmp_path, capsys):
    out = tmp_path / "out"
    theirs = out / "checkpoints" / "images-0123456789abcdef" / "rank-0-of-1"
    theirs.mkdir(parents=True)
    with exclusive(out / ".lock", f"--out {out}", "summit-fast run", "wait"):
        code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "0")
        assert code == 1 and stdout == ""
        assert err == (f"summit-fast run: error: --out {out} is in use by another summit-fast run (PID {os.getpid()}); "
                       "wait for it to finish, or choose another --out\n")
        assert theirs.is_dir() and sorted(os.listdir(out)) == [".lock", "checkpoints"]
    code, _, err = cli(capsys, "--images", images, "--out", out, "--examples", "0")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["result", "viewer"]


# What safetensors (0.8) raises when the disk fills up while it writes a file.
SAFETENSORS_ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.mark.parametrize("stage", ["checkpoint", "result", "viewer"])
def test_a_full_disk_is_one_line_and_leaves_the_earlier_outputs(stage, earlier, images, monkeypatch, capsys):
    import PIL.Image
    import safetensors.torch
    from safetensors import SafetensorError

    out, before = earlier
    save_file = safetensors.torch.save_file

    def save_until_full(tensors, path, *args, **kwargs):
        inside = Path(path).relative_to(out).parts[0]  # checkpoints, or result or a temporary of it
        if stage == "checkpoint" and inside == "checkpoints" or stage == "result" and "result" in inside:
            raise SafetensorError(SAFETENSORS_ENOSPC)
        return save_file(tensors, path, *args, **kwargs)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", save_until_full)
    if stage == "viewer":
        monkeypatch.setattr(PIL.Image.Image, "save", no_space)
    code, stdout, err = cli(capsys, "--images", images, "--out", out, "--examples", "1")
    counts = mib(SummitResult.load(out / "result").nbytes)
    errors = [line for line in err.splitlines() if "warning:" not in line]
    assert code == 1 and len(errors) == 1, err
    where = {"checkpoint": f"{out / 'checkpoints'}{os.sep}images-",
             "result": f"{out / 'result'} for the result (up to {counts}): ",
             "viewer": f"{out / 'viewer'} for the viewer folder: "}[stage]
    assert errors[0].startswith(f"summit-fast run: error: no space left on the disk of {where}")
    if stage == "checkpoint":
        assert f" for a checkpoint of the counts (up to {counts}): " in errors[0]
    assert errors[0].endswith(" MiB free; free some space or choose another --out (earlier outputs were left as "
                              "they were)")
    after = files(out)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoints/")} == before
    assert sorted(os.listdir(out)) == ["checkpoints", "result", "viewer"]  # none of its temporaries


def test_ctrl_c_says_how_far_it_got_and_leaves_no_temporaries(tiny, images, tmp_path, monkeypatch, capsys):
    out, update = tmp_path / "out", Aggregator.update
    calls = 0

    def interrupted_at_the_third(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return update(self, *args, **kwargs)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def interrupted_cli(*args):
        try:
            return cli(capsys, *args)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped summit-fast run")

    args = ("--images", images, "--out", out, "--examples", "1")
    monkeypatch.setattr(Aggregator, "update", interrupted_at_the_third)
    code, _, err = interrupted_cli(*args)
    assert code == 130
    assert err.splitlines()[-1] == ("summit-fast run: interrupted after 2 of 6 images; re-running the same command "
                                    "resumes from the last checkpoint")
    assert os.listdir(out) == ["checkpoints"]

    monkeypatch.setattr(Aggregator, "update", update)
    code, stdout, err = cli(capsys, *args)
    assert code == 0, err
    assert "2 of 6 batches done" in stdout
    before = files(out)

    monkeypatch.setattr("summit_fast.patches.receptive_fields", ctrl_c)  # while writing the viewer folder
    code, _, err = interrupted_cli(*args)
    assert code == 130 and err.splitlines()[-1].startswith("summit-fast run: interrupted after 6 of 6 images; ")
    assert {k: v for k, v in files(out).items() if not k.startswith("checkpoints/")} == before
    assert sorted(os.listdir(out)) == ["checkpoints", "result", "viewer"]


def test_a_run_puts_back_and_removes_what_killed_runs_left(tiny, earlier, images, monkeypatch, capsys):
    out, before = earlier
    dead, alive = dead_pid(), os.getppid()
    os.rename(out / "result", out / f".result.old-{dead}")  # killed between the two renames of the result
    stale = [out / f".result.new-{dead}", out / f".patches-{dead}", out / f".checkpoints.discard-{dead}",
             out / f".viewer.new-{dead}", out / f".viewer.export-{dead}", out / f".viewer.old-{dead}"]
    running = out / f".patches-{alive}"  # another process's, at work
    for folder in (*stale, running):
        folder.mkdir()

    def fails(*args):
        raise ValueError("no model")

    monkeypatch.setattr("summit_fast.cli_run.load_model", fails)  # the run stops after its clean-up
    code, _, err = cli(capsys, "--images", images, "--out", out)
    assert code == 1 and err.endswith("error: no model\n")
    assert files(out) == before and sorted(os.listdir(out)) == [running.name, "result", "viewer"]

    (out / "viewer" / f".ag.old-{dead}").mkdir()  # what earlier versions of export left in the viewer folder
    monkeypatch.setattr("summit_fast.cli_run.load_model", tiny)
    code, _, err = cli(capsys, "--images", images, "--out", out, "--examples", "1")
    assert code == 0, err
    assert sorted(os.listdir(out)) == [running.name, "result", "viewer"]
    assert sorted(os.listdir(out / "viewer")) == ["ag", "classes.json", "feature-vis", "summit_fast.json"]
