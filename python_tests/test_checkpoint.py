"""Checkpoint and resume: killed runs resume to identical counts; mismatched or damaged
checkpoints are refused; a failing loader keeps its last checkpoint."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import summit_fast
from summit_fast import CheckpointMismatch, ResultFormatError, SummitResult

from tiny_models import TinyInception

HERE = Path(__file__).resolve().parent
N_BATCHES = 40  # 320 images


def run_child(checkpoint_dir, out_dir, kill_at=-1, backend="torch"):
    return subprocess.run([sys.executable, str(HERE / "aggregate_child.py"), str(checkpoint_dir), str(out_dir),
                           str(N_BATCHES), str(kill_at), backend], cwd=HERE, capture_output=True, text=True,
                          timeout=900)  # only stops a hung child; a loaded machine is slow


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "result"
    proc = run_child("-", out)
    assert proc.returncode == 0, proc.stderr
    return SummitResult.load(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_batch_then_resume_gives_identical_counts(tmp_path, uninterrupted, seed):
    kill_at = random.Random(seed).randrange(1, N_BATCHES)
    killed = run_child(tmp_path / "ckpt", tmp_path / "never", kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never").exists()
    resumed = run_child(tmp_path / "ckpt", tmp_path / "result")
    assert resumed.returncode == 0, resumed.stderr
    assert SummitResult.load(tmp_path / "result") == uninterrupted


@pytest.mark.parametrize("seed", [4, 5])
def test_sigkill_at_a_random_moment_then_resume_gives_identical_counts(tmp_path, uninterrupted, seed):
    """Killed from outside after a random delay: possibly in the middle of writing a checkpoint."""
    child = subprocess.Popen([sys.executable, str(HERE / "aggregate_child.py"), str(tmp_path / "ckpt"),
                              str(tmp_path / "never"), str(N_BATCHES), "-1", "torch"], cwd=HERE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # generous: on a loaded machine the first checkpoint comes late
    while not (tmp_path / "ckpt" / "LATEST").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.3))
    child.send_signal(signal.SIGKILL)
    child.wait()
    resumed = run_child(tmp_path / "ckpt", tmp_path / "result")
    assert resumed.returncode == 0, resumed.stderr
    assert SummitResult.load(tmp_path / "result") == uninterrupted


def batches(n=6, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 9, 9, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(n)]


def net(seed=0):
    torch.manual_seed(seed)
    return TinyInception().eval()


def test_resume_refuses_a_different_configuration(tmp_path):
    summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="different model weights"):
        summit_fast.aggregate(net(seed=1), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="different parameters"):
        summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                              selection=summit_fast.topk(2))
    with pytest.raises(CheckpointMismatch, match="different layers"):
        summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                              layers=["mix1"])
    with pytest.raises(CheckpointMismatch, match="different parameters"):  # counts of another precision
        summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                              amp_dtype=torch.bfloat16)


def test_mismatch_message_names_what_differs(tmp_path):
    summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch) as info:
        summit_fast.aggregate(net(seed=1), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                              selection=summit_fast.topk(2), examples=1)
    assert str(info.value) == (
        f"the checkpoint in {tmp_path} was made by a run with different model weights and parameters "
        '(examples: 0 in the checkpoint, 1 now; selection: {"rule": "mass", "tau": 0.01} in the checkpoint, '
        '{"rule": "topk", "k": 2} now); use another checkpoint_dir, or delete it to start over')
    assert info.value.directory == tmp_path and len(info.value.differences) == 2
    assert str(info.value.with_remedy("pass --fresh")).endswith("now); pass --fresh")


def test_resume_is_logged(tmp_path, caplog):
    summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                          checkpoint_every=2)
    with caplog.at_level("INFO", logger="summit_fast.checkpoint"):
        summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    (record,) = caplog.records
    assert (record.directory, record.batches_done) == (tmp_path, 6)
    assert record.getMessage() == f"resuming from the checkpoint in {tmp_path} after 6 batches"


def test_resume_refuses_a_different_dataset_length(tmp_path):
    dataset = torch.utils.data.TensorDataset(torch.randn(12, 3, 9, 9), torch.randint(0, 5, (12,)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    summit_fast.aggregate(net(), loader, backend="torch", progress=False, checkpoint_dir=tmp_path)
    shorter = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(8)), batch_size=4)
    with pytest.raises(CheckpointMismatch, match=r"different dataset length \(12 in the checkpoint, 8 now\)"):
        summit_fast.aggregate(net(), shorter, backend="torch", progress=False, checkpoint_dir=tmp_path)


def test_completed_run_resumes_to_the_same_result(tmp_path):
    first = summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    again = summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    assert again == first


def test_loader_that_raises_keeps_the_last_checkpoint(tmp_path):
    def failing():
        yield from batches()[:3]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        summit_fast.aggregate(net(), failing(), backend="torch", progress=False, checkpoint_dir=tmp_path,
                              checkpoint_every=2)
    assert (tmp_path / "LATEST").read_text() == "ckpt-000000003"
    resumed = summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    assert resumed == summit_fast.aggregate(net(), batches(), backend="torch", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000000006"]


def test_bad_batch_mid_run_keeps_counts_of_the_good_ones(tmp_path):
    data = batches()
    bad = data[:2] + [(data[2][0], torch.tensor([0, 1, 9, 2]))] + data[3:]
    with pytest.raises(ValueError, match="batch 2: labels: class index 9"):
        summit_fast.aggregate(net(), bad, backend="torch", progress=False, checkpoint_dir=tmp_path)
    assert (tmp_path / "LATEST").read_text() == "ckpt-000000002"
    saved = SummitResult.load(tmp_path / "ckpt-000000002")
    assert saved == summit_fast.aggregate(net(), data[:2], backend="torch", progress=False)


@pytest.mark.parametrize("damage", ["truncate", "state", "latest"])
def test_damaged_checkpoint_is_refused_with_a_clear_error(tmp_path, damage):
    summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)
    folder = tmp_path / (tmp_path / "LATEST").read_text()
    if damage == "truncate":
        counts = folder / "counts.safetensors"
        counts.write_bytes(counts.read_bytes()[:50])
    elif damage == "state":
        (folder / "state.json").write_text("{")
    else:
        (tmp_path / "LATEST").write_text("ckpt-does-not-exist")
    with pytest.raises(ResultFormatError, match="corrupted|damaged"):
        summit_fast.aggregate(net(), batches(), backend="torch", progress=False, checkpoint_dir=tmp_path)


def test_interrupted_update_poisons_the_aggregator():
    agg = summit_fast.Aggregator(net(), backend="torch")
    images, labels = batches(1)[0]
    agg.update(images, labels)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    agg.engine._influence_update = boom
    with pytest.raises(KeyboardInterrupt):
        agg.update(images, labels)
    with pytest.raises(RuntimeError, match="interrupted while adding its counts"):
        agg.update(images, labels)


def test_resume_refuses_other_weights_or_another_model_graph():
    first = summit_fast.aggregate(net(), batches()[:2], backend="torch", progress=False)
    other_weights = net()
    with torch.no_grad():
        next(other_weights.parameters()).mul_(2.0)
    with pytest.raises(ValueError, match="different model weights"):
        summit_fast.Aggregator(other_weights, backend="torch").resume(first)
    other_padding = net()
    other_padding.mix1_3x3.padding_mode = "reflect"  # the same weights, another graph
    with pytest.raises(ValueError, match="different model graph"):
        summit_fast.Aggregator(other_padding, backend="torch", input_shape=(3, 9, 9)).resume(first)
    again = summit_fast.Aggregator(net(), backend="torch", input_shape=(3, 9, 9))
    again.resume(first)
    assert again.result == first


def test_mismatch_survives_pickling():
    import pickle

    error = CheckpointMismatch("/ckpt", ["parameters (x: 1 in the checkpoint, 2 now)"], "start over")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.differences == error.differences


def test_model_digest_covers_state_that_is_not_a_tensor():
    from summit_fast.checkpoint import model_digest

    class WithExtraState(torch.nn.Module):
        def __init__(self, note):
            super().__init__()
            self.conv, self.note = torch.nn.Conv2d(1, 1, 1), note

        def get_extra_state(self):
            return {"note": self.note}

        def set_extra_state(self, state):
            self.note = state["note"]

    a, b = WithExtraState("a"), WithExtraState("b")
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "_extra_state"}, strict=False)
    assert model_digest(a) != model_digest(b)
    b.note = "a"
    assert model_digest(a) == model_digest(b)


# -- resuming another stream of batches ------------------------------------------------------
OPTIONS = dict(backend="torch", progress=False)


def dataset(n=36, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 3, 9, 9, generator=g), torch.randint(0, 5, (n,), generator=g))


def shuffled(data, seed, batch_size=4):
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


class StopsAfter:
    """The first ``n`` batches of ``loader``, then an error (a run killed there); the same
    dataset, so the same checkpoint fingerprint."""

    def __init__(self, loader, n):
        self.loader, self.n, self.dataset = loader, n, getattr(loader, "dataset", None)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.n:
                raise OSError("killed")
            yield batch


def checkpoint_after(tmp_path, loader, n):
    """A checkpoint of the first ``n`` batches of ``loader`` in ``tmp_path``."""
    with pytest.raises(OSError, match="killed"):
        summit_fast.aggregate(net(), StopsAfter(loader, n), checkpoint_dir=tmp_path, checkpoint_every=n, **OPTIONS)
    assert (tmp_path / "LATEST").read_text() == f"ckpt-{n:09d}"


def test_resume_with_another_batch_size_is_refused(tmp_path):
    data = dataset()
    batches_of = lambda size: torch.utils.data.DataLoader(data, batch_size=size)  # noqa: E731
    checkpoint_after(tmp_path, batches_of(4), 5)
    with pytest.raises(CheckpointMismatch, match=r"different batch size \(4 in the checkpoint, 6 now\); use another"):
        summit_fast.aggregate(net(), batches_of(6), checkpoint_dir=tmp_path, **OPTIONS)
    assert (tmp_path / "LATEST").read_text() == "ckpt-000000005"  # nothing new was counted or saved
    resumed = summit_fast.aggregate(net(), batches_of(4), checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed == summit_fast.aggregate(net(), batches_of(4), **OPTIONS) and resumed.num_images == 36


def test_a_later_batch_of_another_size_is_refused_before_anything_new_is_counted(tmp_path):
    data = batches(8)
    checkpoint_after(tmp_path, data, 5)
    regrouped = data[:3] + [(data[3][0][:2], data[3][1][:2]), (data[3][0][2:], data[3][1][2:])] + data[4:]
    read = []

    def reading():
        for batch in regrouped:
            read.append(len(read))
            yield batch

    with pytest.raises(CheckpointMismatch, match=r"different batch size \(.* in batches 0 to 4\)"):
        summit_fast.aggregate(net(), reading(), checkpoint_dir=tmp_path, **OPTIONS)
    assert read == [0, 1, 2, 3, 4]  # refused at the end of the re-read batches, before reading a new one


def test_resume_with_a_reshuffled_loader_is_refused(tmp_path):
    data = dataset()
    checkpoint_after(tmp_path, shuffled(data, seed=1), 5)
    with pytest.raises(CheckpointMismatch, match=r"different order \(the labels .* differ in batch 0\)"):
        summit_fast.aggregate(net(), shuffled(data, seed=2), checkpoint_dir=tmp_path, **OPTIONS)
    resumed = summit_fast.aggregate(net(), shuffled(data, seed=1), checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed == summit_fast.aggregate(net(), shuffled(data, seed=1), **OPTIONS)


def test_resume_with_other_images_or_fewer_batches_is_refused(tmp_path):
    data = batches(8)
    checkpoint_after(tmp_path, data, 5)
    other_pixels = data[:4] + [(data[4][0] + 1, data[4][1])] + data[5:]  # the same labels
    with pytest.raises(CheckpointMismatch, match=r"different data \(the images' values differ in batches 0 to 4\)"):
        summit_fast.aggregate(net(), other_pixels, checkpoint_dir=tmp_path, **OPTIONS)
    with pytest.raises(CheckpointMismatch, match=r"different number of batches \(the checkpoint counted 5, "
                                                 r"the loader yields 3\)"):
        summit_fast.aggregate(net(), data[:3], checkpoint_dir=tmp_path, **OPTIONS)


class SkippingList:
    """A list of batches that resumes without reading the counted ones (as ImageLoader does)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def batches_from(self, start):
        return iter(self.batches[start:])


def test_a_skipping_loader_whose_next_batch_is_unlike_the_counted_ones_is_refused(tmp_path):
    data = batches(6)
    summit_fast.aggregate(net(), SkippingList(data[:3]), checkpoint_dir=tmp_path, **OPTIONS)
    smaller = [(images[:, :, :8, :8], labels) for images, labels in data[3:]]
    with pytest.raises(CheckpointMismatch, match=r"different data \(images of float32 \(3, 9, 9\) in the "
                                                 r"checkpoint, of float32 \(3, 8, 8\) now\)"):
        summit_fast.aggregate(net(), SkippingList(data[:3] + smaller), checkpoint_dir=tmp_path, **OPTIONS)
    resumed = summit_fast.aggregate(net(), SkippingList(data), checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed == summit_fast.aggregate(net(), data, **OPTIONS)


def image_loader(tmp_path, batch_size=2, sampler=None, stop_after=None):
    """An ImageLoader over 6 tiny PNGs for TinyInception, failing after ``stop_after`` batches."""
    from image_folders import write_images
    from summit_fast.images import ImageFolderDataset, ImageLoader, Preprocess

    class Stopping(ImageLoader):
        def batches_from(self, start):
            for n, batch in enumerate(super().batches_from(start)):
                if n == stop_after:
                    raise OSError("killed")
                yield batch

    if not (tmp_path / "images").exists():
        write_images(tmp_path / "images")
    tiny = Preprocess(9, 1.0, True, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    return Stopping(ImageFolderDataset(tmp_path / "images", tiny), batch_size=batch_size, sampler=sampler)


@pytest.mark.parametrize("change", ["batch size", "order"])
def test_image_loader_resumed_with_another_batching_is_refused(tmp_path, change):
    def loader(**kwargs):
        seed = kwargs.pop("seed", 1)
        sampler = torch.utils.data.RandomSampler(range(6), generator=torch.Generator().manual_seed(seed))
        return image_loader(tmp_path, sampler=sampler, **kwargs)

    options = dict(OPTIONS, num_classes=5, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(OSError, match="killed"):
        summit_fast.aggregate(net(), loader(stop_after=1), checkpoint_every=1, **options)
    other = loader(batch_size=3) if change == "batch size" else loader(seed=2)
    expected = ("batch size: 2 in the checkpoint, 3 now" if change == "batch size"
                else "order: one value in the checkpoint, another now")
    with pytest.raises(CheckpointMismatch, match=rf"different loader \({expected}\)"):
        summit_fast.aggregate(net(), other, **options)
    resumed = summit_fast.aggregate(net(), loader(), **options)
    assert resumed == summit_fast.aggregate(net(), loader(), **dict(options, checkpoint_dir=None))
    assert resumed.num_images == 6


# -- damaged state ---------------------------------------------------------------------------
def edit_state(folder, **changes):
    path = folder / "state.json"
    saved = json.loads(path.read_text())
    saved.get("state", saved).update(changes)
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize("batches_done", [10, 3, -3, 10**6])
def test_edited_batches_done_is_refused(tmp_path, batches_done):
    data = torch.utils.data.DataLoader(dataset(), batch_size=4)
    checkpoint_after(tmp_path, data, 5)
    edit_state(tmp_path / "ckpt-000000005", batches_done=batches_done)
    with pytest.raises(ResultFormatError, match=r"^the checkpoint in .* is damaged: state.json does not match its "
                                                r"checksum \(edited or corrupted\); delete .* to start over$"):
        summit_fast.aggregate(net(), data, checkpoint_dir=tmp_path, **OPTIONS)


def test_consistently_forged_state_is_refused_by_the_cross_checks(tmp_path):
    data = batches(8)
    checkpoint_after(tmp_path, data, 5)
    path = tmp_path / "ckpt-000000005" / "state.json"
    saved = json.loads(path.read_text())
    saved["state"]["batches_done"] = 3
    saved["sha256"] = hashlib.sha256(json.dumps(saved["state"], sort_keys=True, separators=(",", ":"))
                                     .encode()).hexdigest()
    path.write_text(json.dumps(saved))
    with pytest.raises(ResultFormatError, match="damaged: batches_done 3 disagrees with"):
        summit_fast.aggregate(net(), data, checkpoint_dir=tmp_path, **OPTIONS)


@pytest.mark.parametrize("latest", ["outside", "absolute", "symlinked folder", "symlinked LATEST"])
def test_latest_is_followed_only_to_a_checkpoint_folder_inside(tmp_path, latest):
    other = tmp_path / "other"
    summit_fast.aggregate(net(), batches(6), checkpoint_dir=other, **OPTIONS)
    mine = tmp_path / "mine"
    summit_fast.aggregate(net(), batches(3), checkpoint_dir=mine, **OPTIONS)
    if latest == "outside":
        (mine / "LATEST").write_text("../other/ckpt-000000006")
    elif latest == "absolute":
        (mine / "LATEST").write_text(str(other / "ckpt-000000006"))
    elif latest == "symlinked folder":
        (mine / "ckpt-000000009").symlink_to(other / "ckpt-000000006", target_is_directory=True)
        (mine / "LATEST").write_text("ckpt-000000009")
    else:
        (mine / "LATEST").unlink()
        (mine / "LATEST").symlink_to(other / "LATEST")
    with pytest.raises(ResultFormatError, match=r"^the checkpoint in .* is damaged: .*; delete .* to start over$"):
        summit_fast.aggregate(net(), batches(6), checkpoint_dir=mine, **OPTIONS)


# -- checkpoints by time ---------------------------------------------------------------------
class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def saved_positions(monkeypatch):
    """The batches_done of every checkpoint saved from now on."""
    from summit_fast.checkpoint import Checkpointer

    positions, save = [], Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, result, done, *rest: (positions.append(done),
                                                                                   save(self, result, done, *rest))[1])
    return positions


@pytest.mark.parametrize("seconds, expected", [(60.0, [3, 6, 7]), (None, [7]), (0, [7])])
def test_checkpoints_are_saved_by_time_too(tmp_path, monkeypatch, seconds, expected):
    from summit_fast import checkpoint

    clock = FakeClock()
    monkeypatch.setattr(checkpoint, "monotonic", clock)
    positions = saved_positions(monkeypatch)

    def slow():  # each batch takes 25 s
        for batch in batches(7):
            clock.now += 25.0
            yield batch

    summit_fast.aggregate(net(), slow(), checkpoint_dir=tmp_path, checkpoint_every=100, checkpoint_seconds=seconds,
                          **OPTIONS)
    assert positions == expected  # at 75 s and 150 s, then the end of the run


def test_checkpoints_by_batches_restart_the_clock_and_the_other_way_round(tmp_path, monkeypatch):
    from summit_fast import checkpoint

    clock = FakeClock()
    monkeypatch.setattr(checkpoint, "monotonic", clock)
    positions = saved_positions(monkeypatch)

    def timed():
        for i, batch in enumerate(batches(9)):
            clock.now += 50.0 if i == 4 else 1.0
            yield batch

    summit_fast.aggregate(net(), timed(), checkpoint_dir=tmp_path, checkpoint_every=3, checkpoint_seconds=50.0,
                          **OPTIONS)
    assert positions == [3, 5, 8, 9]


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), "60", True])
def test_bad_checkpoint_seconds_is_one_line(seconds):
    with pytest.raises(ValueError, match=r"^checkpoint_seconds must be a number of seconds >= 0 \(None or 0: by "
                                         r"batches alone\), got .*$"):
        summit_fast.aggregate(net(), batches(1), checkpoint_seconds=seconds, **OPTIONS)


def test_run_passes_checkpoint_seconds_to_aggregate(tmp_path, monkeypatch, capsys):
    import importlib

    from image_folders import write_images
    from summit_fast.cli import main

    given = {}

    def fake_aggregate(model, loader, **options):
        given.update(options)
        raise ValueError("stop here")

    monkeypatch.setattr(importlib.import_module("summit_fast.aggregate"), "aggregate", fake_aggregate)
    args = ["run", "--model", "resnet18", "--images", str(write_images(tmp_path / "images")), "--out",
            str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    assert main([*args, "--checkpoint-seconds", "2.5"]) == 1 and given["checkpoint_seconds"] == 2.5
    assert main(args) == 1 and given["checkpoint_seconds"] == 60.0
    with pytest.raises(SystemExit):
        main([*args, "--checkpoint-seconds", "-1"])
    assert "--checkpoint-seconds: expected a number of seconds >= 0, got '-1'" in capsys.readouterr().err


# -- interrupts and disk use -----------------------------------------------------------------
def test_ctrl_c_while_saving_leaves_no_temporary_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    save = SummitResult.save

    def interrupted_save(self, directory):
        save(self, directory)
        if "ckpt-000000004" in str(directory):
            raise KeyboardInterrupt

    monkeypatch.setattr(SummitResult, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, checkpoint_every=2, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000000002"]
    monkeypatch.undo()
    resumed = summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed == summit_fast.aggregate(net(), batches(), **OPTIONS)


def test_ctrl_c_between_batches_saves_what_was_counted(tmp_path):
    def interrupted():
        yield from batches()[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        summit_fast.aggregate(net(), interrupted(), checkpoint_dir=tmp_path, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000000003"]


def test_temporaries_of_dead_processes_are_removed_by_the_next_run(tmp_path):
    summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, **OPTIONS)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".ckpt-000000009.tmp-{dead.pid}", tmp_path / f".LATEST.tmp-{dead.pid}"]
    live = tmp_path / f".ckpt-000000009.tmp-{os.getppid()}"  # another run writing now
    for folder in (stale[0], live):
        folder.mkdir()
        (folder / "counts.safetensors").write_bytes(b"half written")
    stale[1].write_text("ckpt-0")
    summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, **OPTIONS)  # resumes a finished run
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["LATEST", "ckpt-000000006", live.name])


def test_at_most_the_latest_checkpoint_is_kept(tmp_path, monkeypatch):
    from summit_fast.checkpoint import Checkpointer

    listings, save = [], Checkpointer.save

    def listing_save(self, *args):
        final = save(self, *args)
        listings.append(sorted(p.name for p in tmp_path.iterdir()))
        return final

    monkeypatch.setattr(Checkpointer, "save", listing_save)
    (tmp_path / "ckpt-000000001").mkdir()  # left by a run killed before it removed it
    summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, checkpoint_every=2, **OPTIONS)
    assert listings == [["LATEST", f"ckpt-{n:09d}"] for n in (2, 4, 6)]


def test_ctrl_c_right_after_a_batch_was_counted_does_not_save_it_as_uncounted(tmp_path, monkeypatch):
    update = summit_fast.Aggregator.update

    def interrupted_update(self, images, labels=None, batch_index=None, image_ids=None):
        update(self, images, labels, batch_index, image_ids)
        if batch_index == 3:  # counted, but the loop has not recorded it yet
            raise KeyboardInterrupt

    monkeypatch.setattr(summit_fast.Aggregator, "update", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, checkpoint_every=2, **OPTIONS)
    monkeypatch.undo()
    resumed = summit_fast.aggregate(net(), batches(), checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed == summit_fast.aggregate(net(), batches(), **OPTIONS)  # batch 3 counted once
