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
def test_ls_table_oldest_first(capsys: pytest.CaptureFixture[str], store: Path,
                               ids: list[str]) -> None:
    code, out, err = ckpt(capsys, "ls", "--store", str(store))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "RUN", "STEP", "CREATED", "METRICS", "SIZE", "NEW"]
    rows = lines[1:4]
    assert [r.split()[0] for r in rows] == ids
    assert "good *" in rows[1]
    assert all(RUN in r for r in rows)
    assert "val_loss=0.5 acc=0.5" in rows[0]
    assert [r.split()[2] if r.split()[1] != "*" else r.split()[3] for r in rows] == \
        ["1", "2", "3"]
    assert lines[-1].startswith("* named")


def test_ls_json_is_the_store_listing(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    code, out, _ = ckpt(capsys, "ls", "--json", "--store", str(store))
    assert code == 0
    data = json.loads(out)
    assert data == [i.to_json() for i in Store(str(store)).list()]
    assert [CheckpointInfo.from_json(d).step for d in data] == [1, 2, 3]


def test_ls_empty_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = ckpt(capsys, "ls", "--store", str(tmp_path / "nothing-here"))
    assert (code, err) == (0, "")
    assert out.startswith("no checkpoints in ")
    assert not (tmp_path / "nothing-here").exists()  # listing never creates a store
    code, out, _ = ckpt(capsys, "ls", "--json", "--store", str(tmp_path / "nothing-here"))
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
    assert [d["id"] for d in json.loads(before[1])] == ids


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
        raw = manifest_format.encode(info, objects={}, blobs={})
        (root / "manifests" / f"{info.id}.json").write_bytes(raw)
    for _ in range(2):  # the first run builds index.json, the second reads it
        code, out, err = ckpt(capsys, "ls", "--store", str(root))
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert len(lines) == n + 1
        assert lines[1].startswith("20240101-000000-000000")
        assert lines[-1].startswith(f"20240101-000000-{n - 1:06x}")
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
    digest = next(iter(doc["blobs"]))
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
    for digest in Store(str(store)).manifest("good")["blobs"]:
        (store / "blobs" / digest[:2] / digest).unlink()
    code, out, err = ckpt(capsys, "verify", "good", "--store", str(store))
    assert code == 1
    assert "is missing" in out
    assert_one_error_line(err)


def test_verify_empty_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = ckpt(capsys, "verify", "--all", "--store", str(tmp_path / "empty"))
    assert code == 0 and out.startswith("no checkpoints")
    code, out, err = ckpt(capsys, "verify", "--store", str(tmp_path / "empty"))
    assert (code, out) == (1, "")
    assert_one_error_line(err, "no checkpoints")


# -- gc ---------------------------------------------------------------------------------------
def test_gc_dry_run_then_gc(capsys: pytest.CaptureFixture[str], store: Path,
                            ids: list[str]) -> None:
    s = Store(str(store))
    gone = set(s.manifest(ids[0])["blobs"]) - set(s.manifest(ids[1])["blobs"]) \
        - set(s.manifest(ids[2])["blobs"])
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
    assert_one_error_line(err, "not a ckpt_notebook store")
    assert not (tmp_path / "typo").exists()


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


# -- errors and usage -------------------------------------------------------------------------
def test_bad_store_url(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["ls"], ["show", "latest"], ["verify"], ["gc"], ["export", "latest", "x.pt"]):
        code, out, err = ckpt(capsys, *argv, "--store", "nosuchproto://x")
        assert (code, out) == (1, ""), argv
        assert_one_error_line(err, "nosuchproto://x")


def test_store_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    code, _, err = ckpt(capsys, "ls", "--store", str(tmp_path / "f"))
    assert code == 1
    assert_one_error_line(err, "not a folder")


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["show"], ["ls", "--bogus"], ["verify", "latest", "--all"],
    ["export", "latest"], ["--store"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = ckpt(capsys, *argv)
    assert code == 2
    assert "usage: ckpt" in err
    assert "Traceback" not in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ckpt(capsys, "--help")
    assert code == 0
    for command in ("ls", "show", "verify", "gc", "export"):
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
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:4]] == ids
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


def test_subprocess_ls_does_not_import_torch(store: Path) -> None:
    code = ("import sys\nfrom ckpt_notebook.cli import main\n"
            f"assert main(['ls', '--store', {str(store)!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'ckpt ls imported torch'\n")
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
