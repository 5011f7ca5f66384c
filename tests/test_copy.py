"""Named checkpoints from real files: ``copy`` (folders, files, archives, checkpoint REFs),
``materialize`` and ``use``, write-once names (also under a two-process race), retention
leaving named checkpoints alone, unsafe archives and symlinks refused with nothing written,
the hash cache, and the ``%checkpoint copy`` / ``%checkpoint use`` faces.

Local stores only; every file is a real file in ``tmp_path``. ``XDG_CACHE_HOME`` points into
``tmp_path`` so the hash cache and the ``use`` cache never touch the developer's home.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from conftest import ipython_shell

from ckpt_notebook import CheckpointExistsError
from ckpt_notebook.errors import CkptError, IntegrityError, InvalidNameError, UnsafeFileError
from ckpt_notebook.manager import copying, maintenance, materializing, sources
from ckpt_notebook.manager.materializing import MARKER, PATH_ENV, materialize_report
from ckpt_notebook.retention import Policy
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.blobs import INLINE_LIMIT
from ckpt_notebook.types import NAME_RULE, CheckpointInfo
from ckpt_notebook.ui import copy_api

BIG = INLINE_LIMIT + (1 << 20) + 7  # over the streaming threshold, and not a round size


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(PATH_ENV, raising=False)


def make_models(root: Path, *, seed: int = 0, big: bool = False) -> Path:
    """A ``models/``-like folder: nested folders, an executable, empty and binary files."""
    rng = _rng(seed)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"seed": seed, "layers": [4, 8, 3]}))
    (root / "weights.bin").write_bytes(rng(300_000))
    (root / "sub" / "tokenizer.txt").write_text("hello\nworld\n" * 100)
    (root / "sub" / "deeper" / "empty.txt").write_bytes(b"")
    run = root / "sub" / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    if big:
        (root / "big.bin").write_bytes(rng(BIG))
    return root


def _rng(seed: int) -> Callable[[int], bytes]:
    state = [seed]

    def gen(n: int) -> bytes:
        state[0] += 1
        return blake3.blake3(str(state[0]).encode()).digest(length=n)

    return gen


def tree(root: Path) -> dict[str, tuple[str, bool]]:
    """relpath -> (BLAKE3 of the bytes, executable), the marker left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MARKER:
            out[path.relative_to(root).as_posix()] = (
                blake3.blake3(path.read_bytes()).hexdigest(),
                bool(path.stat().st_mode & stat.S_IXUSR))
    return out


def all_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def blob_count(store: Path) -> int:
    return sum(1 for p in (store / "blobs").glob("*/*") if p.is_file()) \
        if (store / "blobs").exists() else 0


def manifests(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "manifests").glob("*.json")) \
        if (store / "manifests").exists() else []


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return make_models(tmp_path / "models")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A models folder with a file over the streaming threshold, copied once per module."""
    base = tmp_path_factory.mktemp("big")
    os.environ["XDG_CACHE_HOME"] = str(base / "xdg-cache")
    try:
        src = make_models(base / "models", seed=1, big=True)
        info = copying.copy(src, "big-v1", store=str(base / "store"))
    finally:
        del os.environ["XDG_CACHE_HOME"]
    return {"src": src, "store": base / "store", "info": info}


# -- folders, files, materialize --------------------------------------------------------------
def test_copy_folder_with_a_large_file(big: dict[str, Any], tmp_path: Path) -> None:
    src, root, info = big["src"], big["store"], big["info"]
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert (info.id, info.name, info.kind) == ("big-v1", "big-v1", "files")
    assert info.logical_bytes == total
    assert info.new_bytes == total - 0  # every blob was new (the empty file is one blob too)
    s = Store(str(root))
    assert s.verify("big-v1") == []
    doc = s.manifest("big-v1")
    assert doc.files is not None and set(doc.files) == set(tree(src))
    assert doc.files["sub/run.sh"].executable is True
    assert doc.files["weights.bin"].executable is False
    assert doc.files["big.bin"].size == BIG
    # materialize: identical bytes, read-only files, executables stay executable
    seen: list[tuple[int, int]] = []
    out = materialize_report("big-v1", tmp_path / "out", store=str(root),
                             progress=lambda d, t: seen.append((d, t)))
    assert not out.reused and out.files == len(tree(src)) and out.nbytes == total
    assert tree(out.path) == tree(src)
    for path in out.path.rglob("*"):
        if path.is_file() and path.name != MARKER:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o555 if path.name == "run.sh" else 0o444), (path, oct(mode))
    assert seen and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never steps back
    assert len(seen) > 8  # the large file reports as it streams, not once at the end


def test_copy_progress_reports_bytes(tmp_path: Path, store: Path) -> None:
    src = make_models(tmp_path / "m", seed=5)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    seen: list[tuple[int, int]] = []
    copying.copy(src, "p1", store=str(store), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (total, total)
    assert all(t == total for _, t in seen)


def test_materialize_again_reuses_without_reading_blobs(models: Path, store: Path,
                                                        tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    out = tmp_path / "out"
    first = materialize_report("m1", out, store=str(store))
    assert not first.reused
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for blob in (store / "blobs").glob("*/*"):
        blob.unlink()  # from now on, any read of a blob would fail
    again = materialize_report("m1", out, store=str(store))
    assert again.reused and again.path == out.absolute()
    assert "nothing written" in str(again)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    materializing.verify_materialized(out)
    with pytest.raises(IntegrityError, match="missing"):  # a fresh folder does need the blobs
        materialize_report("m1", tmp_path / "fresh", store=str(store))
    assert not (tmp_path / "fresh").exists()  # a failed materialize leaves no folder
    assert not [p for p in tmp_path.iterdir() if ".ckpt-staging-" in p.name]


@pytest.mark.parametrize("damage", ["edit", "delete", "chmod-only"])
def test_tampered_folder_is_written_again(models: Path, store: Path, tmp_path: Path,
                                          damage: str) -> None:
    """A folder of this checkpoint that no longer verifies is never reused: its files are
    written again (a file only made writable still verifies and is reused)."""
    copying.copy(models, "m1", store=str(store))
    out = materialize_report("m1", tmp_path / "out", store=str(store)).path
    victim = out / "sub" / "tokenizer.txt"
    victim.chmod(0o644)
    if damage == "edit":
        victim.write_text("HELLO\nworld\n" * 100)
    elif damage == "delete":
        victim.unlink()
    if damage != "chmod-only":
        with pytest.raises(IntegrityError, match="no longer matches"):
            materializing.verify_materialized(out)
    report = materialize_report("m1", out, store=str(store))
    assert report.reused is (damage == "chmod-only")
    assert report.rewritten is (damage != "chmod-only")
    assert tree(out) == tree(models)
    materializing.verify_materialized(out)
    if damage != "chmod-only":
        assert stat.S_IMODE(victim.stat().st_mode) == 0o444


def test_materialize_never_overwrites_other_files(models: Path, store: Path,
                                                  tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    copying.copy(make_models(tmp_path / "other", seed=9), "m2", store=str(store))
    # a folder with the user's own files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CkptError, match="not empty") as caught:
        materialize_report("m1", mine, store=str(store))
    assert "\n" not in str(caught.value)
    assert all_paths(mine) == {"notes.txt"}
    # a folder holding another checkpoint
    out = materialize_report("m1", tmp_path / "out", store=str(store)).path
    before = tree(out)
    with pytest.raises(CkptError, match="it holds m1"):
        materialize_report("m2", out, store=str(store))
    assert tree(out) == before
    # this checkpoint plus a file the user added: refused, the added file kept
    (out / "extra.txt").write_text("mine")
    with pytest.raises(CkptError, match=r"not part of m1.*extra\.txt"):
        materialize_report("m1", out, store=str(store))
    assert (out / "extra.txt").read_text() == "mine"
    # a file, not a folder
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CkptError, match="is a file"):
        materialize_report("m1", tmp_path / "afile", store=str(store))


def test_materialize_into_an_existing_empty_folder(models: Path, store: Path,
                                                   tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    out = tmp_path / "empty"
    out.mkdir()
    inode = out.stat().st_ino
    materialize_report("m1", out, store=str(store))
    assert out.stat().st_ino == inode  # filled in place (it may be someone's cwd)
    assert tree(out) == tree(models)
    assert not [p for p in out.iterdir() if p.name.startswith(".ckpt-staging-")]


def test_materialize_a_training_state(tmp_path: Path, store: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from ckpt_notebook import Checkpointer

    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(str(store), model=model)
    info = ckpt.save(step=1, wait=True)
    ckpt.close()
    out = materializing.materialize(info.id, tmp_path / "state", store=str(store))
    loaded = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert json.loads((out / "manifest.json").read_text())["checkpoint"]["id"] == info.id
    assert materialize_report(info.id, out, store=str(store)).reused


def test_copy_single_file(tmp_path: Path, store: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\x00weights" * 1000)
    info = copying.copy(f, "one-file", store=str(store))
    assert info.logical_bytes == f.stat().st_size
    assert set(Store(str(store)).manifest("one-file").files) == {"model.safetensors"}
    out = materializing.materialize("one-file", tmp_path / "out", store=str(store))
    assert (out / "model.safetensors").read_bytes() == f.read_bytes()


def test_copy_of_a_materialized_folder_leaves_the_marker_out(models: Path, store: Path,
                                                             tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    out = materializing.materialize("m1", tmp_path / "out", store=str(store))
    info = copying.copy(out, "m1-again", store=str(store))
    assert info.new_bytes == 0
    assert MARKER not in Store(str(store)).manifest("m1-again").files


def test_use_sets_the_checkpoint_path(models: Path, store: Path, tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    path = materializing.use("m1", store=str(store))
    assert os.environ[PATH_ENV] == str(path)
    assert path.is_relative_to(tmp_path / "xdg-cache")
    assert tree(path) == tree(models)
    mtime = (path / "weights.bin").stat().st_mtime_ns
    del os.environ[PATH_ENV]
    assert materializing.use("m1", store=str(store)) == path  # reused
    assert os.environ[PATH_ENV] == str(path)
    assert (path / "weights.bin").stat().st_mtime_ns == mtime
    # the cache folder is ours: whatever got into it is cleared when it no longer verifies
    (path / "stray.txt").write_text("x")
    assert materializing.use("m1", store=str(store)) == path
    assert tree(path) == tree(models)


def test_a_folder_holding_the_store_is_copied_without_it(tmp_path: Path) -> None:
    project = make_models(tmp_path / "project")
    store = project / "checkpoints"  # the default store lives in the notebook's folder
    copying.copy(project / "sub", "first", store=str(store))
    info = copying.copy(project, "project", store=str(store))
    files = Store(str(store)).manifest("project").files
    assert not [f for f in files if f.startswith("checkpoints/")]
    assert set(files) == set(tree(project)) - {f for f in tree(project)
                                               if f.startswith("checkpoints/")}
    assert info.logical_bytes == sum(p.stat().st_size for p in project.rglob("*")
                                     if p.is_file() and "checkpoints" not in p.parts)
    with pytest.raises(CkptError, match="inside that store"):
        copying.copy(store / "blobs", "blobs", store=str(store))
    with pytest.raises(CkptError, match="inside that store"):
        copying.copy(store, "itself", store=str(store))


# -- archives ---------------------------------------------------------------------------------
def build_archive(src: Path, dest: Path) -> Path:
    name = dest.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src).as_posix()
                if path.is_dir():
                    zf.writestr(rel + "/", b"")
                else:
                    zf.write(path, rel)  # keeps the mode bits (executable)
        return dest
    mode = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2"}[
        next(s for s in (".tar.gz", ".tar.bz2", ".tgz", ".tar") if name.endswith(s))]
    with tarfile.open(dest, mode) as tf:  # type: ignore[call-overload]
        tf.add(src, arcname=".")  # `tar -C src -cf x.tar .`: members ".", "./a", ...
        weights = src / "weights.bin"
        for linkname, kind in (("alias.bin", tarfile.SYMTYPE), ("hard.bin", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(f"./links/{linkname}" if kind == tarfile.SYMTYPE
                                   else f"links/{linkname}")
            info.type = kind
            info.linkname = "../weights.bin" if kind == tarfile.SYMTYPE else "./weights.bin"
            tf.addfile(info)
        assert weights.exists()
    return dest


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2"])
def test_archives_are_extracted_as_imported(models: Path, store: Path, tmp_path: Path,
                                            suffix: str) -> None:
    archive = build_archive(models, tmp_path / f"models{suffix}")
    before = all_paths(tmp_path)
    info = copying.copy(archive, "from-archive", store=str(store))
    assert info.kind == "files"
    new = {p for p in all_paths(tmp_path) - before if not p.startswith(("store", "xdg-cache"))}
    assert new == set()  # nothing extracted next to the archive
    out = materializing.materialize("from-archive", tmp_path / "out", store=str(store))
    expected = tree(models)
    if suffix != ".zip":  # links inside the archive arrive as the files they point to
        expected["links/alias.bin"] = expected["links/hard.bin"] = expected["weights.bin"]
    assert tree(out) == expected
    assert expected["sub/run.sh"][1] is True


def test_archive_and_folder_share_blobs(models: Path, store: Path, tmp_path: Path) -> None:
    copying.copy(models, "folder", store=str(store))
    info = copying.copy(build_archive(models, tmp_path / "m.tgz"), "archive", store=str(store))
    assert info.new_bytes == 0


def test_damaged_archive_is_one_line_and_commits_nothing(models: Path, store: Path,
                                                         tmp_path: Path) -> None:
    good = build_archive(models, tmp_path / "m.tar.gz").read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises(CkptError) as caught:
        copying.copy(broken, "broken", store=str(store))
    assert "broken.tar.gz" in str(caught.value) and "\n" not in str(caught.value)
    notzip = tmp_path / "not.zip"
    notzip.write_bytes(b"this is not a zip file")
    with pytest.raises(CkptError, match="cannot read the archive"):
        copying.copy(notzip, "notzip", store=str(store))
    assert manifests(store) == []


def _zip_with(tmp_path: Path, name: str, member: zipfile.ZipInfo | str,
              data: bytes = b"evil") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(member, data)
    return path


def _tar_with(tmp_path: Path, name: str, member: tarfile.TarInfo,
              data: bytes | None = None) -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        if data is not None:
            member.size = len(data)
        tf.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


UNSAFE: dict[str, Callable[[Path], Path]] = {
    "zip ../": lambda t: _zip_with(t, "a.zip", "../evil.txt"),
    "zip absolute": lambda t: _zip_with(t, "b.zip", str(t / "abs-evil.txt")),
    "zip nested ../": lambda t: _zip_with(t, "c.zip", "sub/../../evil.txt"),
    "zip symlink": lambda t: _zip_with(t, "d.zip", _zip_symlink(), b"/etc/passwd"),
    "tar ../": lambda t: _tar_with(t, "a.tgz", tarfile.TarInfo("../evil.txt"), b"evil"),
    "tar absolute": lambda t: _tar_with(t, "b.tgz", tarfile.TarInfo(str(t / "abs-evil.txt")),
                                        b"evil"),
    "tar symlink /etc/passwd": lambda t: _tar_with(t, "c.tgz", _link("passwd", "/etc/passwd")),
    "tar symlink ../x": lambda t: _tar_with(t, "d.tgz", _link("x", "../evil.txt")),
    "tar nested symlink ../../x": lambda t: _tar_with(t, "e.tgz", _link("a/x", "../../evil")),
    "tar hardlink outside": lambda t: _tar_with(t, "f.tgz", _link("h", "../evil.txt",
                                                                  tarfile.LNKTYPE)),
    "tar hardlink absolute": lambda t: _tar_with(t, "g.tgz", _link("h", "/etc/passwd",
                                                                   tarfile.LNKTYPE)),
    "tar fifo": lambda t: _tar_with(t, "h.tgz", _fifo()),
}


def _fifo() -> tarfile.TarInfo:
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = UNSAFE[case](work)
    store = work / "store"
    before = all_paths(tmp_path)
    with pytest.raises(UnsafeFileError) as caught:
        copying.copy(archive, "unsafe", store=str(store))
    message = str(caught.value)
    assert "\n" not in message and "refusing" in message, message
    assert archive.name in message
    assert manifests(store) == [] and blob_count(store) == 0
    after = all_paths(tmp_path)
    assert {p for p in after - before if not p.startswith("xdg-cache")} == set()
    assert not (work / "abs-evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_archive_link_to_a_folder_or_a_missing_member_is_refused(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("dir")
    folder.type = tarfile.DIRTYPE
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tf:
        tf.addfile(folder)
        tf.addfile(_link("to-dir", "dir"))
    with pytest.raises(UnsafeFileError, match="does not lead to a file"):
        copying.copy(path, "x", store=str(tmp_path / "store"))


def test_archive_with_a_path_that_is_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "clash.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a", b"file")
        zf.writestr("a/b", b"inside")
    with pytest.raises(CkptError, match="both a file and a folder"):
        copying.copy(path, "clash", store=str(tmp_path / "store"))
    assert manifests(tmp_path / "store") == []


# -- symlinks in folders ----------------------------------------------------------------------
def test_folder_symlink_leading_outside_is_refused(models: Path, tmp_path: Path,
                                                   store: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    (models / "sub" / "leak.txt").symlink_to(secret)
    with pytest.raises(UnsafeFileError, match=r"leak\.txt.*outside"):
        copying.copy(models, "leaky", store=str(store))
    (models / "sub" / "leak.txt").unlink()
    (models / "outside-dir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match=r"outside-dir.*outside"):
        copying.copy(models, "leaky", store=str(store))
    assert manifests(store) == [] and blob_count(store) == 0


def test_folder_symlinks_inside_are_copied_as_files(models: Path, store: Path,
                                                    tmp_path: Path) -> None:
    (models / "alias.bin").symlink_to("weights.bin")
    (models / "sub-alias").symlink_to("sub", target_is_directory=True)
    copying.copy(models, "links", store=str(store))
    out = materializing.materialize("links", tmp_path / "out", store=str(store))
    assert (out / "alias.bin").read_bytes() == (models / "weights.bin").read_bytes()
    assert not (out / "alias.bin").is_symlink()
    assert (out / "sub-alias" / "run.sh").read_bytes() == (models / "sub/run.sh").read_bytes()


def test_folder_symlink_loop_and_broken_link_are_refused(models: Path, store: Path) -> None:
    (models / "sub" / "loop").symlink_to("..", target_is_directory=True)
    with pytest.raises(UnsafeFileError, match="loops"):
        copying.copy(models, "loop", store=str(store))
    (models / "sub" / "loop").unlink()
    (models / "dangling").symlink_to("nowhere.bin")
    with pytest.raises(CkptError, match="broken"):
        copying.copy(models, "broken", store=str(store))
    assert manifests(store) == []


def test_special_file_in_folder_is_refused(models: Path, store: Path) -> None:
    os.mkfifo(models / "pipe")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        copying.copy(models, "fifo", store=str(store))


# -- checkpoint REFs --------------------------------------------------------------------------
def test_copy_a_ref_in_the_same_store_writes_no_blob(models: Path, store: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    blobs = blob_count(store)
    info = copying.copy("m1", "m1-again", store=str(store))
    assert info.new_bytes == 0 and info.parent == "m1" and info.kind == "files"
    assert blob_count(store) == blobs
    s = Store(str(store))
    assert s.manifest("m1-again").files == s.manifest("m1").files
    assert s.verify("m1-again") == []


def test_copy_a_ref_to_another_store_moves_only_missing_blobs(models: Path, store: Path,
                                                              tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    other = tmp_path / "other"
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "w.bin").write_bytes((models / "weights.bin").read_bytes())
    copying.copy(partial, "seed", store=str(other))  # `other` already has weights.bin's blob
    info = copying.copy("m1", "m1", store=str(store), to=str(other))
    weights = (models / "weights.bin").stat().st_size
    total = sum(p.stat().st_size for p in models.rglob("*") if p.is_file())
    assert info.logical_bytes == total
    assert info.new_bytes == total - weights
    assert Store(str(other)).verify("m1") == []
    out = materializing.materialize("m1", tmp_path / "out", store=str(other))
    assert tree(out) == tree(models)
    again = copying.copy("m1", "m1-b", store=str(store), to=str(other))
    assert again.new_bytes == 0


def test_copy_a_large_checkpoint_to_another_store(big: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other"
    info = copying.copy("big-v1", "big-copy", store=str(big["store"]), to=str(other))
    assert info.new_bytes == big["info"].logical_bytes
    assert Store(str(other)).verify("big-copy") == []


def test_copy_a_ref_whose_blobs_are_gone_commits_nothing(models: Path, store: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    next(iter((store / "blobs").glob("*/*"))).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        copying.copy("m1", "m1-copy", store=str(store))
    assert manifests(store) == ["m1.json"]


def test_copy_a_training_checkpoint_keeps_latest(tmp_path: Path, store: Path) -> None:
    torch = pytest.importorskip("torch")
    from ckpt_notebook import Checkpointer
    from ckpt_notebook.manager import resolve_ref

    model = torch.nn.Linear(4, 2)
    ckpt = Checkpointer(str(store), model=model)
    first = ckpt.save(step=1, metrics={"loss": 1.0}, wait=True)
    with torch.no_grad():
        model.weight.add_(1)
    second = ckpt.save(step=2, metrics={"loss": 0.5}, wait=True)
    ckpt.close()
    named = copying.copy(first.id, "baseline", store=str(store))
    assert (named.kind, named.step, named.parent, named.new_bytes) == ("state", 1, first.id, 0)
    assert named.created == first.created
    s = Store(str(store))
    assert resolve_ref(s, "latest").id == second.id  # the copy did not become `latest`
    assert s.manifest("baseline").objects == s.manifest(first.id).objects


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    "", ".hidden", ".", "..", "a/b", "../up", "a\\b", "has space", "x" * 129, "é", "a:b",
    "new\nline", "tab\t", "star*", "semi;colon", "q?", "~home", "a@rev", "#hash",
    "latest", "last", "best.val_loss",  # REF keywords: a checkpoint named so could not be named
])
def test_invalid_names_are_rejected_with_the_rule(models: Path, store: Path, bad: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        copying.copy(models, bad, store=str(store))
    assert NAME_RULE in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert not store.exists()


@pytest.mark.parametrize("good", ["a", "x" * 128, "resnet-v1.2_final", "-dash", "trailing."])
def test_valid_names(models: Path, store: Path, good: str) -> None:
    assert copying.copy(models, good, store=str(store)).id == good


def test_a_taken_name_raises_and_changes_nothing(models: Path, store: Path,
                                                 tmp_path: Path) -> None:
    copying.copy(models, "m1", store=str(store))
    manifest = (store / "manifests" / "m1.json").read_bytes()
    other = make_models(tmp_path / "other", seed=3)
    with pytest.raises(CheckpointExistsError) as caught:
        copying.copy(other, "m1", store=str(store))
    assert isinstance(caught.value, FileExistsError)
    assert "already exists" in str(caught.value) and "write-once" in str(caught.value)
    assert (store / "manifests" / "m1.json").read_bytes() == manifest
    with pytest.raises(FileExistsError):
        copying.copy("m1", "m1", store=str(store))


def test_a_name_taken_during_the_copy_raises(models: Path, store: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The race's losing side, made deterministic: the name is free when the copy starts
    and taken when it commits. The commit (an exclusive create) refuses."""
    copying.copy(models, "m1", store=str(store))
    manifest = (store / "manifests" / "m1.json").read_bytes()
    monkeypatch.setattr(Store, "exists", lambda self, ckpt_id: False)
    with pytest.raises(CheckpointExistsError, match=r"already exists.*write-once"):
        copying.copy(make_models(tmp_path / "other", seed=4), "m1", store=str(store))
    assert (store / "manifests" / "m1.json").read_bytes() == manifest


RACER = """
import os, sys, time
from ckpt_notebook.manager import copying
from ckpt_notebook.errors import CheckpointExistsError
src, store, go = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.001)
try:
    copying.copy(src, "contested", store=store)
except CheckpointExistsError as err:
    print("LOST", err)
    sys.exit(3)
print("WON")
"""


def test_two_processes_racing_for_one_name(tmp_path: Path) -> None:
    for round_ in range(3):
        base = tmp_path / f"round{round_}"
        srcs = [make_models(base / f"src{i}", seed=10 * round_ + i) for i in range(2)]
        for i, src in enumerate(srcs):
            (src / "payload.bin").write_bytes(_rng(100 + i)(4 << 20))
        store, go = base / "store", base / "go"
        Store(str(store)).ensure_writable()  # the race is for the name, not the new store
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(src), str(store), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for src in srcs]
        time.sleep(0.3)
        go.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 3], results
        loser = next(out for code, out, _ in results if code == 3)
        assert "already exists" in loser
        winner = srcs[[code for code, _, _ in results].index(0)]
        s = Store(str(store))
        assert s.verify("contested") == []
        out = materializing.materialize("contested", base / "out", store=str(store))
        assert tree(out) == tree(winner)
        assert [i.id for i in s.list()] == ["contested"]


# -- retention and delete ---------------------------------------------------------------------
def test_retention_never_removes_named_checkpoints(models: Path, store: Path) -> None:
    torch = pytest.importorskip("torch")
    from ckpt_notebook import Checkpointer

    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(str(store), model=model)
    ckpt.save(step=1, wait=True)
    copying.copy(models, "files-named", store=str(store))
    copying.copy("latest", "state-named", store=str(store))
    ckpt.set_policy(keep_last=1)
    for step in range(2, 6):
        with torch.no_grad():
            model.weight.add_(1)
        ckpt.save(step=step, wait=True)
    ckpt.close()
    s = Store(str(store))
    report = maintenance.prune(s, policy=Policy(keep_last=1))
    names = {i.id for i in s.list() if i.named}
    assert names == {"files-named", "state-named"}
    assert all(not i.named for i in report.removed)
    assert s.verify("files-named") == [] and s.verify("state-named") == []
    s.gc()
    assert s.verify("files-named") == [] and s.verify("state-named") == []
    with pytest.raises(CkptError, match="force"):
        maintenance.delete(s, "files-named")
    assert maintenance.delete(s, "files-named", force=True).id == "files-named"
    assert not s.exists("files-named")


# -- hash cache -------------------------------------------------------------------------------
def _age(root: Path, seconds: float = 60) -> None:
    past = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def test_recopy_of_an_unchanged_folder_reads_nothing(models: Path, store: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _age(models)
    first = copying.copy(models, "v1", store=str(store))
    assert first.new_bytes == first.logical_bytes

    def no_reading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a file was opened: {args[0]}")

    monkeypatch.setattr(sources, "open", no_reading, raising=False)
    again = copying.copy(models, "v2", store=str(store))
    assert (again.new_bytes, again.logical_bytes) == (0, first.logical_bytes)
    monkeypatch.undo()
    s = Store(str(store))
    assert s.manifest("v2").files == s.manifest("v1").files


def test_hash_cache_notices_changes_and_fresh_files(models: Path, store: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    copying.copy(models, "v1", store=str(store))
    # files written just now are not trusted to the cache (a change in the same timestamp
    # tick would go unnoticed), so they are read again
    opened: list[str] = []
    real_open = open

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", counting, raising=False)
    copying.copy(models, "v2", store=str(store))
    assert len(opened) == len(tree(models))
    # a changed file (same size, new content) is read and stored anew
    _age(models)
    copying.copy(models, "v3", store=str(store))
    target = models / "weights.bin"
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    past = time.time() - 30
    os.utime(target, (past, past))  # old enough to be cached, and not the old mtime
    opened.clear()
    info = copying.copy(models, "v4", store=str(store))
    assert opened == [str(target.resolve())]
    assert info.new_bytes == len(data)
    out = materializing.materialize("v4", models.parent / "out", store=str(store))
    assert (out / "weights.bin").read_bytes() == bytes(data)


def test_a_large_file_changing_between_passes_commits_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files are read twice (hash, then write); bytes that differ on the second pass
    must never be stored under the first pass's hash."""
    from ckpt_notebook.storage.localfs import LocalBackend

    src = tmp_path / "src"
    src.mkdir()
    target = src / "big.bin"
    target.write_bytes(_rng(7)(BIG))
    real = LocalBackend.write_stream

    def meddling(self: LocalBackend, rel: str, source: Any, **kwargs: Any) -> None:
        target.write_bytes(_rng(8)(BIG))  # the training loop rewrote the file meanwhile
        real(self, rel, source, **kwargs)

    monkeypatch.setattr(LocalBackend, "write_stream", meddling)
    store = tmp_path / "store"
    with pytest.raises(IntegrityError, match="changed while it was copied"):
        copying.copy(src, "moving", store=str(store))
    assert manifests(store) == [] and blob_count(store) == 0


# -- the Python face with progress, and its argument checks -----------------------------------
def test_transfer_copy_checks_its_arguments(models: Path, store: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        copy_api.copy(models, store=str(store), progress=False)
    with pytest.raises(ValueError, match="Hub uploads only"):
        copy_api.copy(models, "x", store=str(store), patterns=["*.bin"], progress=False)
    with pytest.raises(ValueError, match="takes no name"):
        copy_api.copy(models, "x", to="hf://me/repo", store=str(store), progress=False)
    info = copy_api.copy(models, "x", store=str(store), progress=False)
    assert isinstance(info, CheckpointInfo) and info.id == "x"
    out = copy_api.materialize("x", tmp_path / "out", store=str(store), progress=False)
    assert tree(out) == tree(models)


# -- the magic face ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shell() -> Any:
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "ckpt_notebook")
    return ip


@pytest.fixture
def ip(shell: Any, store: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    from ckpt_notebook.ui import session as session_mod

    def drop() -> None:
        old = session_mod._SESSIONS.pop(id(shell), None)
        if old is not None:
            old.close()

    drop()
    shell.reset(new_session=False)
    shell.run_line_magic("checkpoint", f"store {shlex.quote(str(store))}")
    capsys.readouterr()
    yield shell
    drop()


def test_magic_copy_and_use(ip: Any, models: Path, store: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError

    ip.run_line_magic("checkpoint", f"copy {shlex.quote(str(models))} --name resnet-v1")
    out = capsys.readouterr().out
    assert "resnet-v1" in out and "new" in out
    assert Store(str(store)).info("resnet-v1").kind == "files"
    ip.run_line_magic("checkpoint", "use resnet-v1")
    out = capsys.readouterr().out
    path = Path(os.environ[PATH_ENV])
    assert str(path) in out and PATH_ENV in out
    assert tree(path) == tree(models)
    # to another store
    other = tmp_path / "other"
    ip.run_line_magic("checkpoint", f"copy resnet-v1 --name resnet-v1 --to {other}")
    assert Store(str(other)).verify("resnet-v1") == []
    for line, fragment in ((f"copy {models} --name resnet-v1", "already exists"),
                           (f"copy {models} --name .bad", NAME_RULE),
                           (f"copy {models}", "--name is required"),
                           ("use nothing-here", "nothing-here")):
        with pytest.raises(UsageError) as caught:
            ip.run_line_magic("checkpoint", line)
        message = str(caught.value)
        assert "\n" not in message and fragment in message, message
