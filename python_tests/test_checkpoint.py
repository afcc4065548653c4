"""Checkpoint and resume: killed runs resume to identical counts; mismatched or damaged
checkpoints are refused; a failing loader keeps its last checkpoint."""

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
