"""The ``ckpt`` command line: every command in-process through ``main([...])``, a few as real
``python -m ckpt_notebook.cli`` subprocesses, over a real store saved from a torch model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.storage import Store
from ckpt_notebook.storage import manifest as manifest_format
from ckpt_notebook.types import CheckpointInfo

RUN = "cli-test"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with three checkpoints (the middle one named ``good``), saved once per module."""
    root = tmp_path_factory.mktemp("template") / "store"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = Checkpointer(str(root), run=RUN, model=model, optimizer=opt, lr=0.1)
    ids = []
    for step, loss, name in ((1, 0.5, None), (2, 0.2, "good"), (3, 0.4, None)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * step)
        ids.append(ckpt.save(step=step, metrics={"val_loss": loss, "acc": 1 - loss},
                             name=name, wait=True).id)
    ckpt.close()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    return {"root": root, "ids": ids, "weights": weights}


@pytest.fixture
def store(template: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the template store (tests may corrupt it)."""
    dest = tmp_path / "store"
    shutil.copytree(template["root"], dest)
    return dest


@pytest.fixture
def ids(template: dict[str, Any]) -> list[str]:
    return list(template["ids"])


def ckpt(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``main(argv)`` in-process: (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse usage errors, --help, --version
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ckpt_proc(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckpt_notebook.cli", *argv],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ckpt: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").glob("*/*") if p.is_file())


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# -- ls ---------------------------------------------------------------------------------------
def test_ls_table_newest_first(capsys: pytest.CaptureFixture[str], store: Path,
                               ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "ls", "--store", str(store))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "RUN", "STEP", "CREATED", "METRICS", "SIZE",
                                "NEW", "STATUS"]
    rows = lines[1:4]
    assert [r.split()[0] for r in rows] == ids[::-1]
    assert "good *" in rows[1]
    assert [r.endswith(s) for r, s in zip(rows, ("kept: no policy", "named (immutable)",
                                                 "kept: no policy"), strict=True)] == [True] * 3
    assert all(RUN in r for r in rows)
    assert "val_loss=0.5 acc=0.5" in rows[2]
    cells = [r.replace(" *", "").split() for r in rows]
    assert [c[1] for c in cells] == ["state"] * 3
    assert [c[3] for c in cells] == ["3", "2", "1"]
    assert lines[-1].startswith("* named")


def test_ls_json_is_the_store_listing(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    code, out, _ = ckpt(capsys, "ls", "--json", "--store", str(store))
    assert code == 0
    data = json.loads(out)
    assert data == [{**i.to_json(), "status": "named (immutable)" if i.named
                     else "kept: no policy", "pinned": False}
                    for i in Store(str(store)).list()[::-1]]  # newest first
    assert [CheckpointInfo.from_json(d).step for d in data] == [3, 2, 1]


def test_ls_empty_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # issue 13: a path with nothing there is not an empty store (a mistyped --store)
    code, out, err = ckpt(capsys, "ls", "--store", str(tmp_path / "nothing-here"))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "no store at", "nothing is there")
    assert not (tmp_path / "nothing-here").exists()  # listing never creates a store
    Store(str(tmp_path / "empty")).ensure_writable()  # a store with no checkpoint (yet)
    code, out, err = ckpt(capsys, "ls", "--store", str(tmp_path / "empty"))
    assert (code, err) == (0, "")
    assert out.startswith("no checkpoints in ")
    code, out, _ = ckpt(capsys, "ls", "--json", "--store", str(tmp_path / "empty"))
    assert (code, json.loads(out)) == (0, [])


def test_store_option_before_after_and_from_env(capsys: pytest.CaptureFixture[str], store: Path,
                                                ids: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = ckpt(capsys, "--store", str(store), "ls", "--json")
    after = ckpt(capsys, "ls", "--json", "--store", str(store))
    # after the command wins over before it
    both = ckpt(capsys, "--store", str(tmp_path / "other"), "ls", "--json", "--store", str(store))
    assert before == after == both
    monkeypatch.setenv("CKPT_NOTEBOOK_STORE", str(store))
    from_env = ckpt(capsys, "ls", "--json")
    assert from_env == before
    assert [d["id"] for d in json.loads(before[1])] == ids[::-1]


def test_ls_ten_thousand_checkpoints(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Listing goes through the index (benchmarks time it; no timed assertion here)."""
    root = tmp_path / "big"
    (root / "manifests").mkdir(parents=True)
    Store(str(root)).ensure_writable()
    n = 10_000
    for i in range(n):
        info = CheckpointInfo(id=f"20240101-000000-{i:06x}", run="big", step=i,
                              created=f"2024-01-01T00:00:00.{i:06d}+00:00",
                              metrics={"loss": 1 / (i + 1)}, logical_bytes=1000 + i,
                              new_bytes=i)
        raw = manifest_format.encode(manifest_format.Manifest(info, {}, {}))
        (root / "manifests" / f"{info.id}.json").write_bytes(raw)
    for _ in range(2):  # the first run builds index.json, the second reads it
        code, out, err = ckpt(capsys, "ls", "--store", str(root))
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert len(lines) == n + 1
        assert lines[-1].startswith("20240101-000000-000000")
        assert lines[1].startswith(f"20240101-000000-{n - 1:06x}")
    assert (root / "index.json").exists()


# -- show -------------------------------------------------------------------------------------
def test_show_text(capsys: pytest.CaptureFixture[str], store: Path, ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "show", "best.val_loss", "--store", str(store))
    assert (code, err) == (0, "")
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["id"] == fields["name"] == "good"
    assert fields["step"] == "2"
    assert fields["run"] == RUN
    assert fields["parent"] == ids[0]
    assert "val_loss=0.2" in fields["metrics"]
    assert "torch" in fields["versions"]
    objects = {line.split()[0]: line.split() for line in out.split("\n\n")[1].splitlines()[1:]}
    assert set(objects) == {"model", "optimizer", "lr", "rng"}
    assert objects["model"][1:4] == ["module", "torch.nn.modules.container.Sequential", "4"]
    assert objects["lr"][1] == "value"


def test_show_json_and_refs(capsys: pytest.CaptureFixture[str], store: Path,
                            ids: list[str]) -> None:
    outs = {}
    for ref in ("latest", ids[2], ids[2][:-2], "best.acc", "best.val_loss:max"):
        code, out, err = ckpt(capsys, "show", ref, "--json", "--store", str(store))
        assert (code, err) == (0, ""), ref
        outs[ref] = json.loads(out)
    assert {o["checkpoint"]["id"] for o in outs.values()} == {ids[0], ids[1], ids[2]}
    assert outs["latest"] == outs[ids[2]] == outs[ids[2][:-2]]
    assert outs["best.acc"]["checkpoint"]["id"] == "good"
    assert outs["best.val_loss:max"]["checkpoint"]["id"] == ids[0]
    data = outs["latest"]
    assert data["checkpoint"] == Store(str(store)).info(ids[2]).to_json()
    model = next(o for o in data["objects"] if o["name"] == "model")
    assert model == {"name": "model", "kind": "module",
                     "type": "torch.nn.modules.container.Sequential", "tensors": 4,
                     "bytes": (4 * 8 + 8 + 8 * 3 + 3) * 4}
    assert "torch" in data["library_versions"]


def test_unknown_ref_lists_nearest_ids(capsys: pytest.CaptureFixture[str], store: Path,
                                       ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "show", ids[0][:-1] + "X", "--store", str(store))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "names no checkpoint", "nearest:", ids[0])
    code, _, err = ckpt(capsys, "show", "best.nosuchmetric", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "nosuchmetric")
    code, _, err = ckpt(capsys, "show", "best.acc:sideways", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "'min' or 'max'")


def test_show_broken_manifest_is_one_line(capsys: pytest.CaptureFixture[str], store: Path,
                                          ids: list[str]) -> None:
    (store / "manifests" / f"{ids[2]}.json").write_text("{not json")
    code, _, err = ckpt(capsys, "show", ids[2], "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "not valid JSON")


# -- verify -----------------------------------------------------------------------------------
def test_verify_ok(capsys: pytest.CaptureFixture[str], store: Path, ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "verify", "--store", str(store))
    assert (code, out, err) == (0, f"OK  {ids[2]}\n", "")
    code, out, _ = ckpt(capsys, "verify", "good", "--store", str(store))
    assert (code, out) == (0, "OK  good\n")
    code, out, _ = ckpt(capsys, "verify", "--all", "--store", str(store))
    assert (code, out.splitlines()) == (0, [f"OK  {i}" for i in ids])


def test_verify_flipped_byte_fails(capsys: pytest.CaptureFixture[str], store: Path,
                                   ids: list[str]) -> None:
    doc = Store(str(store)).manifest(ids[2])
    digest = next(iter(doc.blobs))
    path = store / "blobs" / digest[:2] / digest
    assert path in blob_files(store)
    flip_byte(path)
    code, out, err = ckpt(capsys, "verify", "--store", str(store))
    assert code == 1
    bad = out.splitlines()
    assert bad and all(line.startswith(f"BAD {ids[2]}: ") for line in bad)
    assert "corrupt" in bad[0] and digest[:16] in bad[0]
    assert_one_error_line(err, "1 of 1")
    code, out, err = ckpt(capsys, "verify", "--all", "--store", str(store))
    assert code == 1
    assert f"OK  {ids[0]}" in out.splitlines()
    assert any(line.startswith(f"BAD {ids[2]}") for line in out.splitlines())
    assert_one_error_line(err, "of 3")


def test_verify_missing_blob(capsys: pytest.CaptureFixture[str], store: Path,
                             ids: list[str]) -> None:
    for digest in Store(str(store)).manifest("good").blobs:
        (store / "blobs" / digest[:2] / digest).unlink()
    code, out, err = ckpt(capsys, "verify", "good", "--store", str(store))
    assert code == 1
    assert "is missing" in out
    assert_one_error_line(err)


def test_verify_empty_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = ckpt(capsys, "verify", "--all", "--store", str(tmp_path / "typo"))
    assert (code, out) == (1, "")  # issue 13: nothing there is no store, not an empty one
    assert_one_error_line(err, "no store at")
    Store(str(tmp_path / "empty")).ensure_writable()
    code, out, _ = ckpt(capsys, "verify", "--all", "--store", str(tmp_path / "empty"))
    assert code == 0 and out.startswith("no checkpoints")
    code, out, err = ckpt(capsys, "verify", "--store", str(tmp_path / "empty"))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "no checkpoints")


# -- gc ---------------------------------------------------------------------------------------
def test_gc_dry_run_then_gc(capsys: pytest.CaptureFixture[str], store: Path,
                            ids: list[str]) -> None:
    s = Store(str(store))
    gone = set(s.manifest(ids[0]).blobs) - set(s.manifest(ids[1]).blobs) \
        - set(s.manifest(ids[2]).blobs)
    assert gone
    s.delete(ids[0])
    (store / "tmp").mkdir(exist_ok=True)
    (store / "tmp" / "leftover").write_bytes(b"x")
    before = blob_files(store)
    code, out, err = ckpt(capsys, "gc", "--dry-run", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith(f"would remove {len(gone)} unreferenced blob")
    assert "and 1 temp file;" in out
    assert blob_files(store) == before
    code, out, err = ckpt(capsys, "gc", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith(f"removed {len(gone)} unreferenced blob")
    assert {p.name for p in blob_files(store)} == {p.name for p in before} - gone
    assert not (store / "tmp" / "leftover").exists()
    assert ckpt(capsys, "verify", "--all", "--store", str(store))[0] == 0


def test_gc_refuses_a_folder_that_is_not_a_store(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code, _, err = ckpt(capsys, "gc", "--store", str(tmp_path / "typo"))
    assert code == 1
    assert_one_error_line(err, "no store at", "nothing is there")  # issue 13
    assert not (tmp_path / "typo").exists()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    code, _, err = ckpt(capsys, "gc", "--store", str(tmp_path / "photos"))
    assert code == 1
    assert_one_error_line(err, "not a ckpt_notebook store")


# -- export -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_export_loads_in_plain_torch(capsys: pytest.CaptureFixture[str], store: Path,
                                     template: dict[str, Any], tmp_path: Path,
                                     suffix: str) -> None:
    (tmp_path / "out").mkdir()
    out_path = tmp_path / "out" / f"weights{suffix}"
    code, out, err = ckpt(capsys, "export", "latest", str(out_path), "--store", str(store))
    assert (code, err) == (0, "")
    assert out.strip() == f"exported 4 tensors of {template['ids'][2]} to {out_path}"
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded = load_file(str(out_path))
    else:
        loaded = torch.load(out_path, weights_only=True)
    expected = template["weights"]
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert [p.name for p in out_path.parent.iterdir()] == [out_path.name]  # no temp file left


def test_export_errors(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path) -> None:
    code, _, err = ckpt(capsys, "export", "latest", str(tmp_path / "w.txt"), "--store", str(store))
    assert code == 1
    assert_one_error_line(err, ".safetensors or .pt")
    code, _, err = ckpt(capsys, "export", "latest", str(tmp_path / "no" / "dir" / "w.pt"),
                        "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "No such file or directory")


# -- ls: retention status ---------------------------------------------------------------------
def ls_json(capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, dict[str, Any]]:
    code, out, err = ckpt(capsys, "ls", "--json", "--store", str(store))
    assert (code, err) == (0, "")
    return {entry["id"]: entry for entry in json.loads(out)}


def test_ls_status_follows_policy_and_pins(capsys: pytest.CaptureFixture[str], store: Path,
                                           ids: list[str]) -> None:
    assert ckpt(capsys, "policy", "--keep-last", "1", "--store", str(store))[0] == 0
    entries = ls_json(capsys, store)
    assert [(entries[i]["status"], entries[i]["pinned"]) for i in ids] == [
        ("prunable", False), ("named (immutable)", False), ("kept: latest 1/1", False)]
    for ref in (ids[0], "good"):
        assert ckpt(capsys, "pin", ref, "--store", str(store))[0] == 0
    entries = ls_json(capsys, store)
    assert [(entries[i]["status"], entries[i]["pinned"]) for i in ids] == [
        ("kept: pinned", True), ("named (immutable)", True), ("kept: latest 1/1", False)]
    code, out, _ = ckpt(capsys, "ls", "--store", str(store))
    assert code == 0
    rows = out.splitlines()[1:4]  # newest first
    assert rows[2].endswith("kept: pinned")
    assert rows[1].endswith("named (immutable)")
    assert rows[0].endswith("kept: latest 1/1")


def test_ls_with_broken_policy_still_lists(capsys: pytest.CaptureFixture[str], store: Path,
                                           ids: list[str]) -> None:
    (store / "policy.json").write_text('{"keep_last": -4}')
    code, out, err = ckpt(capsys, "ls", "--store", str(store))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ids[::-1]
    assert all(line.endswith("?") for line in out.splitlines()[1:4])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: warning: "), err
    assert "policy.json" in lines[0] and "ckpt policy" in lines[0]
    code, out, _ = ckpt(capsys, "ls", "--json", "--store", str(store))
    assert code == 0
    assert {(e["status"], e["pinned"]) for e in json.loads(out)} == {(None, None)}
    code, _, err = ckpt(capsys, "prune", "--store", str(store))  # prune must not guess
    assert code == 1
    assert_one_error_line(err, "policy.json")
    assert len(Store(str(store)).list()) == 3


# -- policy -----------------------------------------------------------------------------------
def test_policy_round_trip_with_the_checkpointer(capsys: pytest.CaptureFixture[str],
                                                 store: Path) -> None:
    from ckpt_notebook.retention import Policy

    code, out, err = ckpt(capsys, "policy", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.strip() == f"retention policy of {store}: keep everything (no policy)"
    code, out, err = ckpt(capsys, "policy", "--keep-last", "3", "--keep-best", "2",
                          "--monitor", "val_loss", "--mode", "max", "--keep-every", "1000",
                          "--keep-within", "1h30m", "--store", str(store))
    assert (code, err) == (0, "")
    expected = Policy(keep_last=3, keep_best=2, monitor="val_loss", mode="max",
                      keep_every=1000, keep_within=5400.0)
    assert Checkpointer(str(store)).policy == expected
    assert out.splitlines()[0] == f"retention policy of {store} set: {expected.describe()}"
    code, out, _ = ckpt(capsys, "policy", "--store", str(store))
    assert out.strip() == f"retention policy of {store}: {expected.describe()}"
    # the rules given replace the whole policy
    assert ckpt(capsys, "policy", "--keep-within", "2d", "--store", str(store))[0] == 0
    assert Checkpointer(str(store)).policy == Policy(keep_within=2 * 86400.0)
    # and the other way round: set in Python, shown by the CLI
    Checkpointer(str(store)).set_policy(keep_best=1, monitor="acc")
    code, out, _ = ckpt(capsys, "policy", "--store", str(store))
    assert out.strip().endswith("keep best 1 by acc (max)")
    code, out, _ = ckpt(capsys, "policy", "--clear", "--store", str(store))
    assert code == 0 and out.strip().endswith("set: keep everything (no policy)")
    assert Checkpointer(str(store)).policy == Policy()


def test_policy_says_what_becomes_prunable(capsys: pytest.CaptureFixture[str],
                                           store: Path, ids: list[str]) -> None:
    code, out, _ = ckpt(capsys, "policy", "--keep-last", "1", "--store", str(store))
    assert code == 0
    assert "1 of 3 checkpoint(s) are now prunable" in out
    assert "ckpt prune" in out
    assert len(Store(str(store)).list()) == 3  # setting a policy deletes nothing by itself
    code, out, _ = ckpt(capsys, "policy", "--keep-last", "5", "--store", str(store))
    assert "prunable" not in out


@pytest.mark.parametrize(("argv", "fragments"), [
    (["--keep-best", "2"], ["--keep-best needs --monitor"]),
    (["--keep-best", "2", "--mode", "min"], ["--keep-best needs --monitor"]),
    (["--monitor", "val_loss"], ["--keep-best N too"]),
    (["--mode", "min", "--keep-last", "2"], ["--keep-best N too"]),
    (["--clear", "--keep-last", "2"], ["--clear", "alone"]),
])
def test_policy_invalid_combinations(capsys: pytest.CaptureFixture[str], store: Path,
                                     argv: list[str], fragments: list[str]) -> None:
    before = (store / "policy.json").exists()
    code, out, err = ckpt(capsys, "policy", *argv, "--store", str(store))
    assert (code, out) == (1, "")
    assert_one_error_line(err, *fragments)
    assert (store / "policy.json").exists() == before  # nothing written


def test_policy_type_errors_are_usage_errors(capsys: pytest.CaptureFixture[str],
                                             store: Path) -> None:
    for argv, fragment in ((["--keep-last", "0"], "must be at least 1"),
                           (["--keep-every", "x"], "expected a whole number"),
                           (["--keep-within", "soon"], "bad duration 'soon'"),
                           (["--keep-within", "0s"], "longer than zero")):
        code, _, err = ckpt(capsys, "policy", *argv, "--store", str(store))
        assert code == 2, argv
        assert_one_error_line(err, "error: argument ", "`ckpt policy --help`")
        assert fragment in err, err
    assert not (store / "policy.json").exists()


def test_policy_refuses_a_folder_that_is_not_a_store(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    code, _, err = ckpt(capsys, "policy", "--keep-last", "2", "--store", str(tmp_path / "notes"))
    assert code == 1
    assert_one_error_line(err, "not a ckpt_notebook store")
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


def test_policy_shows_a_broken_policy_as_an_error(capsys: pytest.CaptureFixture[str],
                                                  store: Path) -> None:
    (store / "policy.json").write_text('{"keep_best": 2}')
    code, _, err = ckpt(capsys, "policy", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "not a valid retention policy", "ckpt policy")
    assert ckpt(capsys, "policy", "--keep-last", "2", "--store", str(store))[0] == 0  # repair


# -- prune ------------------------------------------------------------------------------------
def save_more(store: Path, steps: list[int]) -> list[str]:
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    ckpt = Checkpointer(str(store), run=RUN, model=model)
    new = []
    for step in steps:
        with torch.no_grad():
            model.weight.add_(1.0)
        new.append(ckpt.save(step=step, metrics={"val_loss": 1.0 / step}, wait=True).id)
    ckpt.close()
    return new


def test_prune_dry_run_then_prune(capsys: pytest.CaptureFixture[str], store: Path,
                                  ids: list[str]) -> None:
    assert ckpt(capsys, "policy", "--keep-last", "1", "--store", str(store))[0] == 0
    before = blob_files(store)
    code, out, err = ckpt(capsys, "prune", "--dry-run", "--store", str(store))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "policy: keep last 1"
    assert lines[1] == f"would remove 1 checkpoint(s): {ids[0]}"
    assert lines[2].split()[:3] == [ids[0], "step", "1"]
    assert [i.id for i in Store(str(store)).list()] == ids and blob_files(store) == before
    code, out, err = ckpt(capsys, "prune", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.splitlines()[1].startswith(f"removed 1 checkpoint(s): {ids[0]}; removed ")
    assert [i.id for i in Store(str(store)).list()] == ids[1:]
    assert len(blob_files(store)) < len(before)  # its blobs were freed
    assert ckpt(capsys, "verify", "--all", "--store", str(store))[0] == 0
    code, out, _ = ckpt(capsys, "prune", "--store", str(store))
    assert (code, out.splitlines()[1]) == (0, "nothing to prune")


def test_prune_never_deletes_named_pinned_or_newest(capsys: pytest.CaptureFixture[str],
                                                    store: Path, ids: list[str]) -> None:
    more = save_more(store, [10, 11, 12])  # 12 is the newest
    # a policy that keeps nothing by its rules: no step is a multiple of 1000
    assert ckpt(capsys, "policy", "--keep-every", "1000", "--store", str(store))[0] == 0
    assert ckpt(capsys, "pin", more[0], "--store", str(store))[0] == 0
    code, out, _ = ckpt(capsys, "prune", "--store", str(store))
    assert code == 0
    left = [i.id for i in Store(str(store)).list()]
    assert left == ["good", more[0], more[2]]
    assert f"removed 3 checkpoint(s): {ids[0]}, {ids[2]}, {more[1]}" in out
    assert ckpt(capsys, "verify", "--all", "--store", str(store))[0] == 0
    # even the tightest policy, run again, leaves the three alone
    assert ckpt(capsys, "policy", "--keep-last", "1", "--store", str(store))[0] == 0
    assert ckpt(capsys, "prune", "--store", str(store))[0] == 0
    assert [i.id for i in Store(str(store)).list()] == left


def test_prune_without_a_policy_keeps_everything(capsys: pytest.CaptureFixture[str],
                                                 store: Path, ids: list[str]) -> None:
    for argv in (["prune"], ["prune", "--dry-run"]):
        code, out, err = ckpt(capsys, *argv, "--store", str(store))
        assert (code, err) == (0, "")
        assert out.startswith("nothing to prune: ") and "ckpt policy" in out
    assert [i.id for i in Store(str(store)).list()] == ids


def test_prune_on_a_missing_store_creates_nothing(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    code, out, err = ckpt(capsys, "prune", "--store", str(tmp_path / "none"))
    assert (code, out) == (1, "")  # issue 13: a mistyped store says nothing is there
    assert_one_error_line(err, "no store at", "nothing is there")
    assert not (tmp_path / "none").exists()


# -- pin / unpin / delete ---------------------------------------------------------------------
def test_pin_and_unpin(capsys: pytest.CaptureFixture[str], store: Path, ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "pin", "latest", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith(f"pinned {ids[2]}")
    assert Store(str(store)).pins.ids() == {ids[2]}
    code, out, _ = ckpt(capsys, "pin", ids[2][:-1], "--store", str(store))  # idempotent
    assert code == 0 and Store(str(store)).pins.ids() == {ids[2]}
    code, out, _ = ckpt(capsys, "unpin", "latest", "--store", str(store))
    assert code == 0 and out.startswith(f"unpinned {ids[2]}")
    assert Store(str(store)).pins.ids() == set()
    code, out, _ = ckpt(capsys, "unpin", "latest", "--store", str(store))
    assert (code, out.strip()) == (0, f"{ids[2]} was not pinned")
    for command in ("pin", "unpin"):
        code, out, err = ckpt(capsys, command, "nope", "--store", str(store))
        assert (code, out) == (1, "")
        assert_one_error_line(err, "'nope'", "names no checkpoint")


def test_delete_needs_force_for_named_and_pinned(capsys: pytest.CaptureFixture[str],
                                                 store: Path, ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "delete", ids[0], "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith(f"deleted {ids[0]}") and "ckpt gc" in out
    code, out, err = ckpt(capsys, "delete", "good", "--store", str(store))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "good", "named", "--force")
    assert ckpt(capsys, "pin", ids[2], "--store", str(store))[0] == 0
    code, _, err = ckpt(capsys, "delete", ids[2], "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "pinned")
    assert [i.id for i in Store(str(store)).list()] == ids[1:]
    for ref in ("good", ids[2]):
        code, out, _ = ckpt(capsys, "delete", ref, "--force", "--store", str(store))
        assert code == 0 and out.startswith(f"deleted {ref}")
    assert Store(str(store)).list() == []
    assert Store(str(store)).pins.ids() == set()  # the pin went with it
    code, _, err = ckpt(capsys, "delete", "latest", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "no checkpoints")


# -- request-save -----------------------------------------------------------------------------
def test_request_save_is_honoured_by_the_next_step(capsys: pytest.CaptureFixture[str],
                                                   store: Path) -> None:
    code, out, err = ckpt(capsys, "request-save", "--store", str(store))
    assert (code, err) == (0, "")
    req_id = out.split("(", 1)[1].split(")", 1)[0]
    assert "next step()" in out and "note:" not in out
    assert [p.name for p in (store / "requests").iterdir()] == [f"{req_id}.json"]
    torch.manual_seed(3)
    loop = Checkpointer(str(store), run="loop", model=torch.nn.Linear(2, 2))
    info = loop.step(1, {"loss": 0.5})
    assert info is not None
    saved = loop.wait()
    loop.close()
    assert saved is not None and saved.id == info.id
    # consumed: only the mark that a loop took it is left, for whoever asked
    assert [p.name for p in (store / "requests").iterdir()] == [f"{req_id}.taken"]
    assert Store(str(store)).requests.state(req_id) == "taken"
    stored = Store(str(store)).info(info.id)
    assert (stored.step, list(stored.tags), stored.run) == (1, ["requested"], "loop")
    assert stored.metrics == {"loss": 0.5}


def test_request_save_once_per_request(capsys: pytest.CaptureFixture[str],
                                       store: Path) -> None:
    loop = Checkpointer(str(store), model=torch.nn.Linear(2, 2))
    assert loop.step(1) is None  # nothing requested, no schedule
    loop.close()
    assert ckpt(capsys, "request-save", "--store", str(store))[0] == 0
    first, second = (Checkpointer(str(store), model=torch.nn.Linear(2, 2)) for _ in range(2))
    assert first.step(2) is not None
    assert second.step(2) is None  # the request was taken by the first loop
    first.close()
    second.close()


def test_request_save_tags_reach_the_checkpoint(capsys: pytest.CaptureFixture[str],
                                                store: Path) -> None:
    code, _, _ = ckpt(capsys, "request-save", "--tag", "before-eval", "--tag", "x",
                      "--store", str(store))
    assert code == 0
    doc = json.loads(next((store / "requests").iterdir()).read_text())
    assert doc["tags"] == ["before-eval", "x"]
    loop = Checkpointer(str(store), model=torch.nn.Linear(2, 2))
    info = loop.step(1)
    loop.close()
    assert info is not None
    assert set(Store(str(store)).info(info.id).tags) == {"requested", "before-eval", "x"}


def test_request_save_on_a_new_or_foreign_folder(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    # issue 13: a path that is not a store is refused, not made into one
    code, out, err = ckpt(capsys, "request-save", "--store", str(tmp_path / "fresh"))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "no store at", "nothing is there", "--store")
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    code, _, err = ckpt(capsys, "request-save", "--store", str(tmp_path / "photos"))
    assert code == 1
    assert_one_error_line(err, "not a ckpt_notebook store")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["cat.jpg"]


# -- diff -------------------------------------------------------------------------------------
def test_diff(capsys: pytest.CaptureFixture[str], store: Path, ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "diff", ids[0], "latest", "--store", str(store))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"{ids[0]} -> {ids[2]}: ")
    assert lines[1].split() == ["OBJECT", "TENSOR", "CHANGE", "DETAIL"]
    changed = {tuple(line.split()[:3]) for line in lines[2:]}
    for key in ("0.weight", "0.bias", "2.weight", "2.bias"):  # every parameter moved
        assert ("model", key, "changed") in changed
    code, out, _ = ckpt(capsys, "diff", "good", "good", "--store", str(store))
    assert code == 0
    assert out.splitlines() == [f"good -> good: 0 tensor(s) differ, "
                                f"{out.split(', ')[1].split()[0]} unchanged"]
    assert int(out.split(", ")[1].split()[0]) >= 4
    code, out, _ = ckpt(capsys, "diff", ids[0], ids[2], "--json", "--store", str(store))
    data = json.loads(out)
    assert (data["from"], data["to"]) == (ids[0], ids[2])
    assert {"object": "model", "tensor": "0.weight", "change": "changed",
            "detail": "F32[8, 4]"} in data["changes"]
    code, out, err = ckpt(capsys, "diff", ids[0], "nope", "--store", str(store))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "'nope'")


# -- errors and usage -------------------------------------------------------------------------
def test_bad_store_url(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["ls"], ["show", "latest"], ["verify"], ["gc"], ["export", "latest", "x.pt"],
                 ["diff", "a", "b"], ["policy"], ["policy", "--keep-last", "2"], ["prune"],
                 ["pin", "latest"], ["unpin", "latest"], ["delete", "latest"],
                 ["request-save"]):
        code, out, err = ckpt(capsys, *argv, "--store", "nosuchproto://x")
        assert (code, out) == (1, ""), argv
        assert_one_error_line(err, "nosuchproto://x")


def test_store_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    code, _, err = ckpt(capsys, "ls", "--store", str(tmp_path / "f"))
    assert code == 1
    assert_one_error_line(err, "not a folder")


@pytest.mark.parametrize("argv", [
    ["frobnicate"], ["show"], ["ls", "--bogus"], ["verify", "latest", "--all"],
    ["export", "latest"], ["--store"], ["diff", "latest"], ["pin"], ["unpin"], ["delete"],
    ["prune", "latest"], ["request-save", "--tag"], ["request-save", "now"],
    ["policy", "--keep-last", "0"], ["policy", "--keep-last", "two"],
    ["policy", "--keep-every", "-3"], ["policy", "--keep-best", "1.5", "--monitor", "m"],
    ["policy", "--keep-within", "soon"], ["policy", "--keep-within", "0"],
    ["policy", "--keep-within", "3 fortnights"], ["policy", "--mode", "sideways"],
    ["policy", "--monitor", ""], ["delete", "latest", "--forse"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = ckpt(capsys, *argv)
    assert code == 2
    assert_one_error_line(err, "--help` shows the usage")


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ckpt(capsys, "--help")
    assert code == 0
    for command in ("ls", "show", "verify", "gc", "export", "diff", "policy", "prune", "pin",
                    "unpin", "delete", "request-save"):
        assert command in out
    code, out, _ = ckpt(capsys, "--version")
    assert code == 0 and out.startswith("ckpt_notebook ")


def test_unexpected_error_is_still_one_line(capsys: pytest.CaptureFixture[str], store: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Store) -> list[CheckpointInfo]:
        raise KeyError("kaput")

    monkeypatch.setattr(Store, "list", boom)
    code, _, err = ckpt(capsys, "ls", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "unexpected KeyError", "kaput")


# -- real processes ---------------------------------------------------------------------------
def test_subprocess_ls_and_show(store: Path, ids: list[str]) -> None:
    proc = ckpt_proc("ls", env={"CKPT_NOTEBOOK_STORE": str(store)})
    assert (proc.returncode, proc.stderr) == (0, "")
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:4]] == ids[::-1]
    proc = ckpt_proc("--store", str(store), "show", "good", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["checkpoint"]["name"] == "good"


def test_subprocess_errors_have_no_traceback(store: Path, tmp_path: Path) -> None:
    proc = ckpt_proc("show", "nope-nope", "--store", str(store))
    assert (proc.returncode, proc.stdout) == (1, "")
    assert_one_error_line(proc.stderr, "nope-nope")
    proc = ckpt_proc("ls", "--store", "nosuchproto://x")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "nosuchproto")
    proc = ckpt_proc("verify", "a", "--all")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_subprocess_cli_does_not_import_torch(store: Path) -> None:
    """Only export needs torch: listing, retention and requests read manifests alone."""
    code = ("import sys\nfrom ckpt_notebook.cli import main\n"
            f"s = {str(store)!r}\n"
            "for argv in (['ls'], ['ls', '--json'], ['diff', 'good', 'latest'], ['pin', 'good'],"
            " ['unpin', 'good'], ['policy', '--keep-last', '1'], ['policy'], ['prune',"
            " '--dry-run'], ['prune'], ['request-save'], ['delete', 'latest', '--yes']):\n"
            "    assert main([*argv, '--store', s]) == 0, argv\n"
            "    assert 'torch' not in sys.modules, f'ckpt {argv} imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_subprocess_verify_flipped_byte(store: Path) -> None:
    for path in blob_files(store):
        flip_byte(path, 0)
    proc = ckpt_proc("verify", "--all", "--store", str(store))
    assert proc.returncode == 1
    assert proc.stdout.count("BAD ") >= 3
    assert_one_error_line(proc.stderr, "3 of 3")


# -- copy and get -----------------------------------------------------------------------------
def make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": [4, 8]}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 400)
    run = root / "sub" / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    return root


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".ckpt_notebook.json"}


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache"


def test_copy_get_ls_show(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path,
                          cache_home: Path) -> None:
    src = make_folder(tmp_path / "models")
    code, out, err = ckpt(capsys, "copy", str(src), "--name", "resnet-v1", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith(f"copied {src} to resnet-v1 (files) in {store}")
    assert "new" in out
    code, out, err = ckpt(capsys, "get", "resnet-v1", str(tmp_path / "out"), "--store",
                          str(store))
    assert (code, err) == (0, "")
    assert out.startswith("wrote resnet-v1 to") and "3 files" in out
    assert folder_bytes(tmp_path / "out") == folder_bytes(src)
    assert os.stat(tmp_path / "out" / "sub" / "run.sh").st_mode & 0o777 == 0o555
    assert os.stat(tmp_path / "out" / "weights.bin").st_mode & 0o777 == 0o444
    code, out, _ = ckpt(capsys, "get", "resnet-v1", str(tmp_path / "out"), "--store", str(store))
    assert code == 0 and "already holds resnet-v1" in out and "nothing written" in out
    code, out, _ = ckpt(capsys, "ls", "--store", str(store))
    row = next(line for line in out.splitlines() if line.startswith("resnet-v1 *"))
    assert row.split()[2:5] == ["files", "-", "-"] and row.endswith("named (immutable)")
    code, out, _ = ckpt(capsys, "show", "resnet-v1", "--store", str(store))
    assert code == 0
    assert "kind      files" in out and f"source    {src}" in out
    assert "sub/run.sh" in out and "FILE" in out


def test_copy_a_ref_to_another_store(capsys: pytest.CaptureFixture[str], store: Path,
                                     tmp_path: Path, cache_home: Path) -> None:
    other = tmp_path / "other"
    code, out, err = ckpt(capsys, "copy", "good", "--name", "good-v1", "--to", str(other),
                          "--store", str(store))
    assert (code, err) == (0, "")
    assert "good-v1 (training state)" in out and str(other) in out
    assert Store(str(other)).verify("good-v1") == []
    code, out, _ = ckpt(capsys, "copy", "good", "--name", "good-v2", "--to", str(other),
                        "--store", str(store))
    assert code == 0 and out.rstrip().endswith("0 B new")
    code, out, _ = ckpt(capsys, "get", "good-v1", str(tmp_path / "state"), "--store",
                        str(other))
    assert code == 0
    assert {p.name for p in (tmp_path / "state").iterdir()} >= {"model.safetensors",
                                                                 "manifest.json"}


def test_copy_errors_are_one_line(capsys: pytest.CaptureFixture[str], store: Path,
                                  tmp_path: Path, cache_home: Path) -> None:
    src = make_folder(tmp_path / "models")
    assert ckpt(capsys, "copy", str(src), "--name", "m", "--store", str(store))[0] == 0
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        ([str(src), "--name", "m"], ("'m' already exists", "write-once")),
        ([str(src), "--name", "good"], ("'good' already exists",)),
        ([str(src)], ("needs --name",)),
        ([str(src), "--name", "x", "--pattern", "*.bin"], ("--pattern", "hf://")),
        ([str(src), "--name", "x", "--dry-run"], ("--dry-run",)),
        ([str(src), "--name", "x", "--to", "hf://me/repo"], ("--name is not used",)),
        ([str(tmp_path / "missing"), "--name", "x"], ("nothing to copy", "missing")),
        ([str(src), "--to", "hf://only-owner"], ("bad Hugging Face URL",)),
    ]
    for argv, fragments in cases:
        code, out, err = ckpt(capsys, "copy", *argv, "--store", str(store))
        assert (code, out) == (1, ""), (argv, err)
        assert_one_error_line(err, *fragments)
    evil = tmp_path / "evil.tar"
    import io
    import tarfile
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    code, _, err = ckpt(capsys, "copy", str(evil), "--name", "evil", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "refusing", "../escape.txt")
    assert not (tmp_path / "escape.txt").exists()
    assert not Store(str(store)).exists("evil")
    code, _, err = ckpt(capsys, "get", "m", str(src), "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "not empty")
    code, _, err = ckpt(capsys, "get", "nope-nope", str(tmp_path / "o"), "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "nope-nope")


@pytest.mark.parametrize("name", [".hidden", "a/b", "has space", "x" * 129, "é"])
def test_copy_invalid_name_is_a_usage_error_with_the_rule(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path, name: str) -> None:
    from ckpt_notebook.types import NAME_RULE

    code, _, err = ckpt(capsys, "copy", str(tmp_path), "--name", name, "--store",
                        str(tmp_path / "s"))
    assert code == 2
    assert NAME_RULE in err and "ckpt copy --help" in err
    assert not (tmp_path / "s").exists()


def test_copy_progress_option(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path,
                              cache_home: Path) -> None:
    src = make_folder(tmp_path / "models")
    code, _, err = ckpt(capsys, "copy", str(src), "--name", "a", "--store", str(store))
    assert (code, err) == (0, "")  # not a terminal: no bar
    code, _, err = ckpt(capsys, "copy", str(src), "--name", "b", "--progress", "--store",
                        str(store))
    assert code == 0
    assert "copy b" in err and "100%" in err
    code, _, err = ckpt(capsys, "get", "b", str(tmp_path / "o"), "--progress", "--store",
                        str(store))
    assert code == 0 and "get b" in err and "100%" in err
    code, _, err = ckpt(capsys, "get", "b", str(tmp_path / "o2"), "--no-progress", "--store",
                        str(store))
    assert (code, err) == (0, "")


def test_copy_to_hub_dry_run(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path,
                             cache_home: Path) -> None:
    src = make_folder(tmp_path / "models")
    code, out, err = ckpt(capsys, "copy", str(src), "--to", "hf://me/repo@dev", "--pattern",
                          "*.json", "--pattern", "sub/*", "--exclude", "*.sh", "--dry-run",
                          "--store", str(store))
    assert (code, err) == (0, "")
    assert out.strip() == "would upload 1 file(s) to hf://me/repo@dev: config.json"
    assert ckpt(capsys, "copy", str(src), "--name", "m", "--store", str(store))[0] == 0
    code, out, _ = ckpt(capsys, "copy", "m", "--to", "hf://me/repo", "--dry-run", "--store",
                        str(store))
    assert code == 0
    assert out.startswith("would upload 3 file(s)") and ".ckpt_notebook.json" not in out


def test_named_copies_survive_prune_and_need_force(capsys: pytest.CaptureFixture[str],
                                                   store: Path, tmp_path: Path,
                                                   cache_home: Path) -> None:
    src = make_folder(tmp_path / "models")
    assert ckpt(capsys, "copy", str(src), "--name", "files-v1", "--store", str(store))[0] == 0
    assert ckpt(capsys, "policy", "--keep-last", "1", "--store", str(store))[0] == 0
    code, out, _ = ckpt(capsys, "prune", "--store", str(store))
    assert code == 0
    names = {i.id for i in Store(str(store)).list() if i.named}
    assert names == {"good", "files-v1"}
    code, _, err = ckpt(capsys, "delete", "files-v1", "--store", str(store))
    assert code == 1
    assert_one_error_line(err, "files-v1", "named", "--force")
    code, out, _ = ckpt(capsys, "delete", "files-v1", "--force", "--store", str(store))
    assert code == 0 and out.startswith("deleted files-v1")


def test_subprocess_copy_and_get_do_not_import_torch(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "models")
    code = ("import sys\nfrom ckpt_notebook.cli import main\n"
            f"s, src, out = {str(tmp_path / 's')!r}, {str(src)!r}, {str(tmp_path / 'o')!r}\n"
            "for argv in (['copy', src, '--name', 'm'], ['get', 'm', out], ['ls'],"
            " ['copy', 'm', '--name', 'm2']):\n"
            "    assert main([*argv, '--store', s]) == 0, argv\n"
            "    assert 'torch' not in sys.modules, f'ckpt {argv} imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr


def test_copy_faces_against_a_hub(capsys: pytest.CaptureFixture[str], hf_hub: Any,
                                  tmp_path: Path, cache_home: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`ckpt copy hf://...` imports a Hub repo; `ckpt copy NAME --to hf://...` uploads one."""
    hf_hub.patch(monkeypatch, tmp_path / "hf")
    hf_hub.add_files("owner/src", {"config.json": b'{"a": 1}', "w/model.bin": b"\x01" * 5000})
    hf_hub.create_repo("owner/dst")
    store = tmp_path / "store"
    code, out, err = ckpt(capsys, "copy", "hf://owner/src", "--name", "from-hub", "--store",
                          str(store))
    assert (code, err) == (0, "")
    assert out.startswith("copied hf://owner/src to from-hub (files)")
    code, out, err = ckpt(capsys, "copy", "from-hub", "--to", "hf://owner/dst", "--exclude",
                          "*.json", "--store", str(store))
    assert (code, err) == (0, ""), err
    assert out.startswith("uploaded 1 file(s) to hf://owner/dst")
    assert hf_hub.files("owner/dst") == {"w/model.bin": b"\x01" * 5000}


def test_dashboard_busy_port_is_one_line(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--store", str(tmp_path / "s"), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"port {port} is in use" in err[0]
