# Test dependencies: jsonschema (validates the export against summit_fast/schema/export.schema.json).
"""The viewer export (SPEC.md D): folder layout, schema, Summit's formats, atomic writes, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

import summit_fast
from summit_fast._lock import exclusive
from summit_fast.cli import main as cli_main
from summit_fast.export import class_embedding, export, schema
from summit_fast.graph import build_graphs, class_graph
from summit_fast.models import digits_cnn

K = 10


@pytest.fixture(scope="module")
def digits_result():
    """A small real aggregate: the digits CNN (random weights) on a few synthetic batches."""
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, K - 1, (16,), generator=gen))
               for _ in range(4)]  # class 9 gets no images
    torch.manual_seed(0)
    model = digits_cnn().eval()
    return summit_fast.aggregate(model, batches, selection=summit_fast.topk(4), backend="torch", progress=False)


@pytest.fixture(scope="module")
def exported(digits_result, tmp_path_factory):
    return export(digits_result, tmp_path_factory.mktemp("export") / "out", embedding="pca")


def validator(definition: str | None = None):
    s = schema()
    target = s if definition is None else {"$ref": f"#/$defs/{definition}", "$defs": s["$defs"]}
    return jsonschema.Draft202012Validator(target)


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_layout_and_schema(exported, digits_result):
    assert sorted(p.name for p in exported.iterdir()) == ["ag", "classes.json", "summit_fast.json"]
    assert sorted(p.name for p in (exported / "ag").iterdir()) == sorted(f"ag-{c}.json" for c in range(K))
    index = read(exported / "summit_fast.json")
    validator().validate(index)
    assert index["schema"] == "summit_fast.export" and index["version"] == 3  # 3: the image files listed
    with pytest.raises(jsonschema.ValidationError):
        validator().validate({**index, "version": 2})  # the schema describes version 3 only
    validator("classes").validate(read(exported / "classes.json"))
    for c in range(K):
        validator("graph").validate(read(exported / "ag" / f"ag-{c}.json"))
    assert index["layers"] == ["block1", "block2", "block3"]
    assert index["channels"] == {"block1": 16, "block2": 32, "block3": 48}
    assert index["num_classes"] == K and index["num_images"] == 64
    assert index["class_names"] == [f"class {k}" for k in range(K)]
    assert index["embedding"]["method"] == "pca"
    assert index["params"] == digits_result.params
    assert index["graphs"] == "ag/ag-{c}.json" and index["classes"] == "classes.json"
    empty = {"feature_vis": [], "diversity": {}, "dataset_examples": {}}
    assert index["images"] == {"feature_vis": None, "diversity": None, "dataset_examples": None,
                               "files": {layer: {"name": layer, **empty} for layer in index["layers"]}}


SUMMIT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "summit-data"


@pytest.mark.skipif(not (SUMMIT_DATA / "ag").is_dir(), reason=f"Summit's released graphs not found at {SUMMIT_DATA}")
def test_summit_released_graphs_and_viewer_index_fit_the_schema(tmp_path):
    """Summit's own ag-{c}.json files are valid graphs, and the index the viewer synthesises for a
    folder of them is a valid index: one schema for both sources of data."""
    from summit_fast.viewer.index import build_index

    (tmp_path / "ag").mkdir()
    for new, c in enumerate(range(0, 1000, 50)):  # 20 of Summit's 1000 graphs, renumbered
        graph = read(SUMMIT_DATA / "ag" / f"ag-{c}.json")
        validator("graph").validate(graph)
        (tmp_path / "ag" / f"ag-{new}.json").write_text(json.dumps(graph))
    index, classes = build_index(tmp_path)
    validator().validate(index)
    validator("classes").validate(classes)
    assert index["version"] == 3 and [c["target_class"] for c in classes] == list(range(20))


def test_schema_rejects_wrong_summit_types():
    node = {"channel": 3, "count": 5, "layer": "b", "pagerank": 0.1,
            "prev_channels": [{"prev_channel": 1, "inf": 2}], "attr_channels": [{"prev_channel": "7", "inf": 4}]}
    validator("graph").validate({"b": [node]})
    for bad in ({**node, "attr_channels": [{"prev_channel": 7, "inf": 4}]},
                {**node, "prev_channels": [{"prev_channel": "1", "inf": 2}]},
                {**node, "pagerank": "0.1"}):
        with pytest.raises(jsonschema.ValidationError):
            validator("graph").validate({"b": [bad]})


def test_graph_files_are_summit_format(exported, digits_result):
    graphs = build_graphs(digits_result)
    for c in range(K):
        ag = read(exported / "ag" / f"ag-{c}.json")
        assert list(ag) == ["block3", "block2", "block1"]  # last layer first, as Summit
        assert ag == json.loads(json.dumps(graphs[c].to_summit()))
        for layer, nodes in ag.items():
            ranks = [n["pagerank"] for n in nodes]
            assert ranks == sorted(ranks, reverse=True)
            for n in nodes:
                assert n["layer"] == layer and type(n["channel"]) is int and type(n["count"]) is int
                assert n["count"] == int(digits_result.activation[layer][c, n["channel"]])
                assert all(type(p["prev_channel"]) is int and type(p["inf"]) is int for p in n["prev_channels"])
                assert all(type(p["prev_channel"]) is str and type(p["inf"]) is int for p in n["attr_channels"])
    assert read(exported / "ag" / "ag-9.json") == {"block3": [], "block2": [], "block1": []}  # no images
    assert any(read(exported / "ag" / f"ag-{c}.json")["block3"] for c in range(K - 1))


def test_class_list(exported, digits_result):
    classes = read(exported / "classes.json")
    assert [c["target_class"] for c in classes] == list(range(K))
    correct = digits_result.confusion.diagonal()
    for k, entry in enumerate(classes):
        assert entry["numOfInstances"] == int(digits_result.images_per_class[k])
        for layer, top in entry["topChannels"].items():
            row = digits_result.activation[layer][k]
            assert [t["i"] for t in top] == sorted((int(v) for v in row if v > 0), reverse=True)
            assert all(int(row[t["c"]]) == t["i"] for t in top)
            assert len({t["c"] for t in top}) == len(top)
        assert set(entry["embed"]) == {"block1", "block2", "block3"}
        if digits_result.params.get("predictions"):
            assert entry["topOneAccCount"] == int(correct[k])
            if entry["numOfInstances"]:
                assert entry["topOneAcc"] == pytest.approx(int(correct[k]) / entry["numOfInstances"])
                assert len(entry["accs"]) == 1 and 0 < entry["accs"][0] <= 1
    assert classes[9]["embed"] == {"block1": None, "block2": None, "block3": None}
    assert classes[9]["topChannels"] == {"block1": [], "block2": [], "block3": []}
    assert read(exported / "summit_fast.json")["predictions"] is bool(digits_result.params.get("predictions"))


def test_pca_embedding_is_deterministic_and_aligned(digits_result):
    first, info = class_embedding(digits_result, "pca")
    again, _ = class_embedding(digits_result, "pca")
    assert first == again and info["method"] == "pca"
    xs = np.array([[e["block2"]["x"], e["block2"]["y"]] for e in first if e["block2"]])
    assert np.abs(xs).max() > 0


def many_classes_result(graph, params, k=20):
    result = summit_fast.SummitResult.zeros(graph, k, params)
    gen = torch.Generator().manual_seed(1)
    for a in result.activation.values():
        a.copy_(torch.randint(0, 30, a.shape, generator=gen))
    result.activation["block2"][3].zero_()  # no position in block2
    return result


def test_umap_parameters_and_init_chain(digits_result, monkeypatch):
    calls = []

    class FakeUMAP:  # records how summit_fast drives UMAP; returns the init (or a fixed layout)
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, x):
            init = calls[-1]["init"]
            return init + 1.0 if isinstance(init, np.ndarray) else np.arange(2 * len(x), dtype=float).reshape(-1, 2)

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    monkeypatch.setattr("summit_fast.export._umap_installed", lambda: True)
    embeds, info = class_embedding(many_classes_result(digits_result.graph, digits_result.params), "auto")
    assert info == {"method": "umap", "metric": "cosine", "n_neighbors": 15, "min_dist": 0.1, "random_state": 0,
                    "init": "previous layer"}
    assert [c["init"] if isinstance(c["init"], str) else c["init"].shape for c in calls] == ["spectral", (19, 2), (20, 2)]
    assert all(c["metric"] == "cosine" and c["n_neighbors"] == 15 and c["min_dist"] == 0.1 and c["random_state"] == 0
               for c in calls)
    assert embeds[0]["block1"] == {"x": 0.0, "y": 1.0} and embeds[0]["block2"] == {"x": 1.0, "y": 2.0}
    assert embeds[3]["block2"] is None and embeds[3]["block3"] is not None  # restarts from block1's centre


@pytest.mark.skipif(not os.environ.get("SUMMIT_FAST_UMAP_TEST"),
                    reason="real UMAP: numba compiles for 1-2 minutes; set SUMMIT_FAST_UMAP_TEST=1")
def test_real_umap_embedding(digits_result):
    pytest.importorskip("umap")
    embeds, info = class_embedding(many_classes_result(digits_result.graph, digits_result.params), "umap")
    assert info["method"] == "umap"
    assert all(np.isfinite([e[l]["x"], e[l]["y"]]).all() for e in embeds for l in e if e[l])


def test_embedding_errors(digits_result, monkeypatch):
    with pytest.raises(ValueError, match="embedding"):
        export(digits_result, "/nonexistent/never", embedding="tsne")
    monkeypatch.setattr("summit_fast.export._umap_installed", lambda: False)
    with pytest.raises(ValueError, match="umap-learn"):
        class_embedding(digits_result, "umap")
    assert class_embedding(digits_result, "auto")[1]["method"] == "pca"


def test_result_of_some_classes_keeps_their_class_ids(digits_result, tmp_path):
    params = dict(digits_result.params, classes=[7, 2, 9])
    result = summit_fast.SummitResult.zeros(digits_result.graph, 3, params)
    for name, t in digits_result.influence.items():
        result.influence[name].copy_(t[:3])
    for name, t in digits_result.activation.items():
        result.activation[name].copy_(t[:3])
    out = export(result, tmp_path / "some", embedding="pca")
    assert [c["target_class"] for c in read(out / "classes.json")] == [7, 2, 9]
    # Default names are by class, not by row.
    assert [c["name"] for c in read(out / "classes.json")] == ["class 7", "class 2", "class 9"]
    assert read(out / "summit_fast.json")["class_names"] == ["class 7", "class 2", "class 9"]
    # Names of all the model's classes (a names file for the whole dataset): the counted ones are taken.
    named = export(result, tmp_path / "named", embedding="pca", class_names=[f"digit {d}" for d in range(10)])
    assert [c["name"] for c in read(named / "classes.json")] == ["digit 7", "digit 2", "digit 9"]
    with pytest.raises(ValueError, match=r"4 class names given for 3 classes \(or one for each of the model's 10\)"):
        export(result, tmp_path / "bad", class_names=["a", "b", "c", "d"])
    # Graph files are named by class, as Summit's viewer looks them up (ag-{target_class}.json).
    assert sorted(p.name for p in (out / "ag").iterdir()) == ["ag-2.json", "ag-7.json", "ag-9.json"]
    # Class 2 is row 1, which holds digits_result's row 1.
    assert read(out / "ag" / "ag-2.json") == class_graph(digits_result, 1).to_summit()
    graph = class_graph(result, 9)
    assert graph.target_class == 9 and graph.nodes == class_graph(digits_result, 2).nodes
    with pytest.raises(ValueError, match=r"class\(es\) \[0\] not counted in this result; its classes .* are 7, 2, 9"):
        class_graph(result, 0)
    index = read(out / "summit_fast.json")
    validator().validate(index)
    assert index["version"] == 3 and index["num_classes"] == 3  # version 1 named the graphs ag-0 .. ag-2
    validator("classes").validate(read(out / "classes.json"))
    for c in (2, 7, 9):
        validator("graph").validate(read(out / "ag" / f"ag-{c}.json"))


def test_class_names_and_image_patterns(digits_result, tmp_path):
    names = [f"<img src=x onerror=alert({k})>" for k in range(K)]
    out = export(digits_result, tmp_path / "named", class_names=names, embedding="pca",
                 feature_vis="fv/{layer}-{channel}.jpg", dataset_examples="ex/{layer}/{channel}-{i}.jpg")
    index = read(out / "summit_fast.json")
    assert index["class_names"] == names and [c["name"] for c in read(out / "classes.json")] == names
    assert {field: index["images"][field] for field in ("feature_vis", "diversity", "dataset_examples")} == {
        "feature_vis": "fv/{layer}-{channel}.jpg", "diversity": None, "dataset_examples": "ex/{layer}/{channel}-{i}.jpg"}
    with pytest.raises(ValueError, match="3 class names"):
        export(digits_result, tmp_path / "bad", class_names=names[:3])
    for pattern in ("fv/{nope}.jpg", "fv/{layer}.jpg", "fv/{layer}-{channel}-{i}.jpg", "fv/{layer"):
        with pytest.raises(ValueError, match=r"feature_vis 'fv/"):
            export(digits_result, tmp_path / "bad", feature_vis=pattern)
    with pytest.raises(ValueError, match=r"dataset_examples 'ex/\{layer\}/\{channel\}.jpg' must use the placeholders "
                                         r"\{layer\}, \{channel\}, \{i\} and no others"):
        export(digits_result, tmp_path / "bad", dataset_examples="ex/{layer}/{channel}.jpg")
    # The viewer replaces plain {name} fields only (data-source.js fillPattern): no format specs,
    # conversions or literal braces, which Python's str.format would accept.
    for pattern, why in (("fv/{layer}-{channel:04d}.jpg", r"a format spec in \{channel:04d\} is not allowed"),
                         ("fv/{layer}-{channel!s}.jpg", r"a conversion in \{channel!s\} is not allowed"),
                         ("fv/{layer!r:>3}-{channel}.jpg", r"a conversion in \{layer!r:>3\} is not allowed"),
                         ("fv/{{x}}/{layer}-{channel}.jpg", r"literal braces \(\{\{ or \}\}\) are not allowed"),
                         ("fv/{layer}-{channel}}}.jpg", r"literal braces"),
                         ("fv/{layer:}-{channel}.jpg", r"write each placeholder plainly, as \{layer\}, \{channel\}")):
        with pytest.raises(ValueError, match=r"^feature_vis '" + re.escape(pattern) + "': " + why):
            export(digits_result, tmp_path / "bad", feature_vis=pattern)
    with pytest.raises(ValueError, match=r"dataset_examples .*a format spec in \{i:02d\} is not allowed; the viewer "
                                         r"fills only the plain placeholders \{layer\}, \{channel\}, \{i\}"):
        export(digits_result, tmp_path / "bad", dataset_examples="ex/{layer}/{channel}-{i:02d}.jpg")
    assert not (tmp_path / "bad").exists()
    export(digits_result, tmp_path / "twice", embedding="pca", feature_vis="fv/{layer}/{channel}/{layer}.jpg")


def test_rewrite_keeps_other_files_and_failure_leaves_previous_export(digits_result, tmp_path, monkeypatch):
    out = export(digits_result, tmp_path / "out", embedding="pca")
    (out / "feature-vis").mkdir()
    (out / "feature-vis" / "block1-0-channel.jpg").write_bytes(b"jpg")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("summit_fast.export.class_embedding", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export(digits_result, out, class_names=[f"n{k}" for k in range(K)])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind
    monkeypatch.undo()
    export(digits_result, out, class_names=[f"n{k}" for k in range(K)], embedding="pca")
    assert read(out / "summit_fast.json")["class_names"][0] == "n0"
    assert (out / "feature-vis" / "block1-0-channel.jpg").read_bytes() == b"jpg"
    assert sorted(p.name for p in out.iterdir()) == ["ag", "classes.json", "feature-vis", "summit_fast.json"]


class Killed(BaseException):
    """What a test raises where a kill -9 would stop the process."""


def dead_pid() -> int:
    """The PID of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def die_at_step(monkeypatch, step: int) -> None:
    """Make this process "die" at its ``step``-th rename or folder removal (1-based): that one and
    every later one raises :class:`Killed` and does nothing, so the disk is left as a kill at
    that point leaves it; the temporaries it makes are named by the PID of an ended process."""
    calls = 0

    def dying(real):
        def call(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls >= step:
                raise Killed
            return real(*args, **kwargs)
        return call

    for module, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree")):
        monkeypatch.setattr(module, name, dying(getattr(module, name)))
    monkeypatch.setattr(os, "getpid", lambda pid=dead_pid(): pid)


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("step", range(1, 7))
def test_a_reexport_killed_at_any_step_leaves_one_whole_version(digits_result, tmp_path, monkeypatch, step):
    """Killed at any point, a re-export leaves the old or the new folder whole (or, between its
    two renames, no folder and the old one whole beside it), and the next export starts from a
    whole version, even one that then fails: never new graphs beside old classes.json."""
    def names(prefix):
        return [f"{prefix}{k}" for k in range(K)]

    work = tmp_path / "work"
    out = export(digits_result, work / "out", embedding="pca", class_names=names("old "))
    (out / "feature-vis").mkdir()
    (out / "feature-vis" / "block1-0-channel.jpg").write_bytes(b"jpg")
    old = files(out)
    new = {**files(export(digits_result, tmp_path / "new", embedding="pca", class_names=names("new "))),
           "feature-vis/block1-0-channel.jpg": b"jpg"}
    assert old != new

    die_at_step(monkeypatch, step)
    try:
        export(digits_result, out, embedding="pca", class_names=names("new "))
    except Killed:
        pass
    monkeypatch.undo()
    if out.exists():
        assert files(out) in (old, new)
    else:  # killed between the two renames
        (kept,) = work.glob(".out.old-*")
        assert files(kept) == old

    monkeypatch.setattr("summit_fast.export.class_embedding", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export(digits_result, out, embedding="pca")
    assert files(out) in (old, new)
    assert os.listdir(work) == ["out"] and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_stale_temporaries_of_ended_processes_are_removed(digits_result, tmp_path):
    out = export(digits_result, tmp_path / "out", embedding="pca")
    dead, alive = dead_pid(), os.getppid()
    stale = [tmp_path / f".out.export-{dead}", tmp_path / f".out.new-{dead}", tmp_path / f".out.old-{dead}",
             out / f".ag.old-{dead}"]
    running = [tmp_path / f".out.export-{alive}", out / f".ag.old-{alive}"]
    for folder in stale + running:
        (folder / "ag").mkdir(parents=True)
    export(digits_result, out, embedding="pca")
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in running)  # another process's, at work


def test_a_second_export_to_the_same_folder_stops_naming_the_first(digits_result, tmp_path, capsys):
    digits_result.save(tmp_path / "result")
    out = tmp_path / "out"
    with exclusive(tmp_path / ".out.lock", str(out), "summit_fast export", "wait"):
        code = cli_main(["export", str(tmp_path / "result"), "--out", str(out), "--embedding", "pca"])
        assert code == 1 and not out.exists()
        assert capsys.readouterr().err == (f"summit-fast export: error: {out} is in use by another summit_fast export "
                                           f"(PID {os.getpid()}); wait for it to finish, or export elsewhere\n")
    assert cli_main(["export", str(tmp_path / "result"), "--out", str(out), "--embedding", "pca"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["out", "result"]  # the lock file goes with its holder


def test_ctrl_c_during_cli_export_is_one_line_and_leaves_the_earlier_export(digits_result, tmp_path, monkeypatch,
                                                                            capsys):
    digits_result.save(tmp_path / "result")
    out = export(digits_result, tmp_path / "out", embedding="pca")
    before = files(out)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("summit_fast.export.iter_graphs", ctrl_c)
    try:
        code = cli_main(["export", str(tmp_path / "result"), "--out", str(out), "--embedding", "pca"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped summit-fast export")
    assert code == 130 and capsys.readouterr().err == (
        f"summit-fast export: interrupted; {out} holds a whole export (the earlier one, unless the new one was "
        "already in place)\n")
    assert files(out) == before and sorted(os.listdir(tmp_path)) == ["out", "result"]


def test_refuses_to_overwrite_a_foreign_folder(digits_result, tmp_path):
    (tmp_path / "summit" / "ag").mkdir(parents=True)
    (tmp_path / "summit" / "ag" / "ag-0.json").write_text("{}")
    with pytest.raises(ValueError, match="not a summit_fast export"):
        export(digits_result, tmp_path / "summit")
    assert (tmp_path / "summit" / "ag" / "ag-0.json").read_text() == "{}"


def test_cli_export(digits_result, tmp_path, capsys):
    digits_result.save(tmp_path / "result")
    (tmp_path / "names.txt").write_text("\n".join(f"digit {k}" for k in range(K)) + "\n")
    rc = cli_main(["export", str(tmp_path / "result"), "--out", str(tmp_path / "out"),
                   "--class-names", str(tmp_path / "names.txt"), "--embedding", "pca"])
    assert rc == 0 and "summit-fast view" in capsys.readouterr().out
    index = read(tmp_path / "out" / "summit_fast.json")
    validator().validate(index)
    assert index["class_names"] == [f"digit {k}" for k in range(K)]
    assert cli_main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 1
    assert "error" in capsys.readouterr().err


def test_submodules_of_the_readme_resolve_after_import_summit_fast(tmp_path):
    import subprocess

    code = ("import summit_fast; print(summit_fast.graph.class_graph.__name__, summit_fast.export.export.__name__, "
            "summit_fast.models.inception_v1.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["class_graph", "export", "inception_v1"]
