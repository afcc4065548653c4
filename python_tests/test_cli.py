"""The summit-fast command line: info and the built-in demo, run as a user would."""

import json
import os

import summit_fast

from cli_command import run_cli


def test_info_lists_backends_and_reasons():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert f"summit_fast {summit_fast.__version__}" in out.stdout
    assert "torch   available on cpu" in out.stdout


def test_demo_runs_end_to_end(tmp_path):
    # No assertion on its duration (a loaded machine is many times slower); the timeout only
    # stops a hung demo.
    out = run_cli("demo", "--out", str(tmp_path / "demo"), "--no-progress", timeout=900)
    assert out.returncode == 0, out.stderr
    result = summit_fast.SummitResult.load(tmp_path / "demo" / "result")
    assert result.num_images == 1797 and result.num_classes == 10
    assert result.class_names == [str(d) for d in range(10)]
    assert all(int(result.activation[l].sum()) > 0 for l in result.layers)
    manifest = json.loads((tmp_path / "demo" / "result" / "manifest.json").read_text())
    assert manifest["format"] == "summit_fast.result"
    graphs = sorted((tmp_path / "demo" / "viewer" / "ag").glob("ag-*.json"))
    assert len(graphs) == 10
    graph = json.loads(graphs[0].read_text())
    assert list(graph) == ["block3", "block2", "block1"] and all(graph[l] for l in graph)
    assert f"summit-fast view {tmp_path / 'demo' / 'viewer'}" in out.stdout


def test_errors_are_reported_without_traceback_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    cases = [  # (arguments, exit status, message)
        (("demo", "--backend", "nope"), 2, "argument --backend: invalid choice: 'nope'"),
        (("demo", "--backend", "cuda"), 1, "error: backend 'cuda' cannot run on cpu: the cuda backend runs on CUDA"),
        (("demo", "--backend", "triton"), 1, "error: backend 'triton' cannot run on cpu"),
        (("demo", "--out", str(tmp_path / "a_file")), 1, f"error: --out {tmp_path / 'a_file'} is a file"),
        (("demo", "--epochs", "0"), 1, "error: --epochs must be at least 1, got 0"),
        (("view", str(tmp_path), "--port", "99999"), 2, "argument --port: a port is 0..65535, got 99999"),
        (("info", "--classes", "5"), 1, "error: --classes and --count-dtype size a model's count state: give --model"),
    ]
    # Without the interpreter (which conftest turns on where there is no GPU) triton cannot run on the CPU.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    for args, status, message in cases:
        out = run_cli(*args, "--no-progress", env=env) if args[0] == "demo" else run_cli(*args)
        assert (out.returncode, "Traceback" in out.stderr) == (status, False), (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "training" not in out.stdout, args  # refused before the demo trains
    assert run_cli("--version").stdout.strip() == f"summit-fast {summit_fast.__version__}"


def test_info_reports_the_count_state_of_a_model():
    import re

    import torch

    from summit_fast.discovery import discover
    from summit_fast.models import inception_v1

    out = run_cli("info", "--model", "inception_v1", "--classes", "1000")
    assert out.returncode == 0, out.stderr
    reported = float(re.search(r"with 1000 classes and int32 counts: ([0-9.]+) GiB", out.stdout).group(1))
    model = inception_v1()
    graph = discover(model, torch.zeros(1, 3, 224, 224), model.SUMMARY_LAYERS)
    per_class = summit_fast.SummitResult.zeros(graph, 2).nbytes - summit_fast.SummitResult.zeros(graph, 1).nbytes
    assert abs(reported - 1000 * per_class / 2**30) < 0.05  # confusion grows as K^2: negligible here
    narrow = run_cli("info", "--model", "inception_v1", "--classes", "1000", "--count-dtype", "int16")
    influence = [float(re.search(r"influence ([0-9.]+)", o.stdout).group(1)) for o in (out, narrow)]
    assert abs(influence[1] - influence[0] / 2) < 0.01 and influence[1] > 1
    residual = run_cli("info", "--model", "resnet18", "--classes", "10")  # a model with skip connections
    assert residual.returncode == 0, residual.stderr
    assert re.search(r"influence [0-9.]+, skip [0-9.]+, per-class totals", residual.stdout)


def test_run_with_autocast_and_channels_last(tmp_path):
    """``run --amp bf16 --channels-last`` (the GPU throughput settings) on a small image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "images" / cls / f"{i}.png")
    out = run_cli("run", "--model", "mobilenet_v2", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                  "--amp", "bf16", "--channels-last", "--examples", "0", "--workers", "0", "--embedding", "pca",
                  "--no-progress")
    assert out.returncode == 0, out.stderr
    result = summit_fast.SummitResult.load(tmp_path / "out" / "result")
    assert result.params["amp_dtype"] == "bfloat16"
    assert result.num_images == 4 and result.class_names == ["cat", "dog"]
    assert all(int(result.activation[l].sum()) > 0 for l in result.layers)
    bad = run_cli("run", "--model", "mobilenet_v2", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "x"),
                  "--amp", "fp8")
    assert bad.returncode == 2 and "invalid choice: 'fp8'" in bad.stderr


def test_the_command_keeps_freed_memory_for_reuse_unless_the_user_chose(monkeypatch, capsys):
    import platform
    import sys

    from summit_fast import _allocator, cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1))
    assert cli.main(["info"]) == 0 and calls == [1]  # every subcommand's process
    capsys.readouterr()
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert _allocator.keep_freed_memory() is False  # the user's own setting wins
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert _allocator.keep_freed_memory() is glibc  # mallopt accepted it where there is one
