"""What ``ckpt`` says when something is wrong: the help when nothing is asked, one-line usage
errors that point at ``--help``, CLI words (``--force``) in errors, REF hints newest first
and listing an ambiguous prefix's candidates, MiB in progress bars, and a confirmation
before ``ckpt delete latest`` deletes whatever ``latest`` happens to be."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.storage import Store
from ckpt_notebook.ui.progress import progress_bar


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A store with three checkpoints of one run (the middle one named ``kept``)."""
    root = str(tmp_path_factory.mktemp("msgs") / "store")
    model = torch.nn.Linear(2, 2)
    ck = Checkpointer(root, run="r", model=model)
    ids = []
    for step, name in ((1, None), (2, "kept"), (3, None)):
        with torch.no_grad():
            model.weight.add_(1.0)
        ids.append(ck.save(step=step, name=name, wait=True).id)
    ck.close()
    return root, ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error: "), err
    return lines[0]


def test_no_arguments_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    assert out.startswith("usage: ckpt") and "request-save" in out and "dashboard" in out


@pytest.mark.parametrize(("argv", "pointer"), [
    (["frobnicate"], "ckpt --help"), (["ls", "--bogus"], "ckpt ls --help"),
    (["delete"], "ckpt delete --help"), (["policy", "--keep-last", "two"], "ckpt policy --help"),
])
def test_usage_error_is_one_line_pointing_at_help(capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], pointer: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    line = one_error_line(err)
    assert pointer in line and "usage:" not in err


def test_errors_use_cli_words(capsys: pytest.CaptureFixture[str], saved: tuple[str, list[str]],
                              tmp_path: Path) -> None:
    import shutil

    store = str(tmp_path / "s")
    shutil.copytree(saved[0], store)
    code, _, err = run(capsys, "delete", "kept", "--store", store)
    line = one_error_line(err)
    assert code == 1 and "--force" in line and "force=True" not in line
    assert run(capsys, "pin", saved[1][0], "--store", store)[0] == 0
    line = one_error_line(run(capsys, "delete", saved[1][0], "--store", store)[2])
    assert "--force" in line and "force=True" not in line


def test_unknown_ref_lists_newest_first(capsys: pytest.CaptureFixture[str],
                                        saved: tuple[str, list[str]]) -> None:
    code, _, err = run(capsys, "show", "q", "--store", saved[0])
    line = one_error_line(err)
    assert code == 1 and "newest:" in line
    hint = line.split("newest:")[1]
    assert [hint.index(i) for i in reversed(saved[1])] == sorted(hint.index(i) for i in saved[1])


def test_ambiguous_ref_lists_its_candidates(capsys: pytest.CaptureFixture[str],
                                            saved: tuple[str, list[str]]) -> None:
    unnamed = [saved[1][0], saved[1][2]]
    prefix = unnamed[0][:8]  # the date: both share it
    assert unnamed[1].startswith(prefix)
    code, _, err = run(capsys, "show", prefix, "--store", saved[0])
    line = one_error_line(err)
    assert code == 1 and "ambiguous" in line
    assert all(i in line for i in unnamed)


def test_terminal_progress_bar_counts_in_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar("copy x", enabled=True) as bar:
        assert bar is not None
        bar(3 * 2**20, 10 * 2**20)
        bar(10 * 2**20, 10 * 2**20)
    text = stream.getvalue()
    assert "10.0 MiB" in text and "MB" not in text.replace("MiB", "")


def test_delete_latest_needs_yes_off_a_terminal(capsys: pytest.CaptureFixture[str],
                                                saved: tuple[str, list[str]],
                                                tmp_path: Path) -> None:
    import shutil

    store = str(tmp_path / "s")
    shutil.copytree(saved[0], store)
    code, out, err = run(capsys, "delete", "latest", "--store", store)
    line = one_error_line(err)
    assert (code, out) == (1, "") and "--yes" in line and saved[1][2] in line
    assert len(Store(store).list()) == 3
    code, out, err = run(capsys, "delete", "latest", "--yes", "--store", store)
    assert (code, err) == (0, "") and out.startswith(f"deleted {saved[1][2]}")
    code, out, err = run(capsys, "delete", saved[1][0], "--store", store)  # an id: no question
    assert (code, err) == (0, "")


@pytest.mark.parametrize(("answer", "left"), [("n\n", 3), ("", 3), ("y\n", 2)])
def test_delete_latest_asks_on_a_terminal(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch,
                                          saved: tuple[str, list[str]], tmp_path: Path,
                                          answer: str, left: int) -> None:
    import shutil

    store = str(tmp_path / "s")
    shutil.copytree(saved[0], store)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    code, out, _ = run(capsys, "delete", "latest", "--store", store)
    assert f"delete {saved[1][2]}" in out
    assert len(Store(store).list()) == left
    assert code == (0 if left == 2 else 1)
