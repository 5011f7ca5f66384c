"""The README and the user guide say only what is true: their code blocks run, their tables of
commands list every subcommand there is, and their links stay inside the repository.

How the blocks run:

- ```` ```python ```` blocks of one document run in order, in one real IPython shell (so
  ``%load_ext`` and ``%checkpoint`` lines run as in a notebook), in a fresh temp folder that
  holds a ``models/`` folder with one file. The harness predefines only what a training
  notebook would have defined before the snippet: ``model`` (a small torch Linear), ``opt``
  (SGD over it), ``sched`` (StepLR), ``scaler`` (a CPU GradScaler), ``loss`` (a tensor),
  ``val_loss`` (a float), ``step`` (0) and ``total`` / ``total_steps`` (3). Everything
  else, imports included, the snippet must do itself.
- ```` ```bash ```` blocks run each ``ckpt ...`` line through the CLI (``main(argv)``)
  against the temp folder's ``./checkpoints``; any other command fails the test.
- Untagged blocks are sample output or mixed shells and do not run.
- A block that cannot run here is skipped by one of :data:`SKIP_RULES` (each skip shows in
  pytest's summary with its rule), never silently.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ipython_shell
from IPython.core.interactiveshell import InteractiveShell

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/user-guide.md")

SKIP_RULES: tuple[tuple[str, str], ...] = (
    (r"\b(s3|gs|az|hf)://", "names a remote store or the Hugging Face Hub, which this test "
     "cannot reach (tests/test_remote.py and tests/test_hub.py run them against local servers)"),
    (r"(?m)^\s*make\s", "runs a make target (make test runs this very suite)"),
    (r"(?m)^\s*pip install", "installs packages"),
    (r"\A# ~/", "is a configuration file, not code to run"),
    (r"(?m)^\s*ckpt dashboard\b", "serves until Ctrl-C (tests/test_dashboard_security.py "
     "runs it)"),
)


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def code_blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text()
    return [Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in re.finditer(r"(?ms)^```(\w*)\n(.*?)^```", text)]


def skip_reason(block: Block) -> str | None:
    return next((why for rule, why in SKIP_RULES if re.search(rule, block.code)), None)


def runnable(doc: str) -> list[Block]:
    return [b for b in code_blocks(doc) if b.lang in ("python", "bash")]


# -- the blocks run ---------------------------------------------------------------------------
@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    from ckpt_notebook.ui import session as session_mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKPT_NOTEBOOK_STORE", raising=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "weights.bin").write_bytes(b"\0" * 1024)
    ip = ipython_shell()
    ip.reset(new_session=False)
    ip.user_ns.update(harness_names())
    yield ip
    old = session_mod._SESSIONS.pop(id(ip), None)
    if old is not None:
        old.close()
    ip.reset(new_session=False)


def harness_names() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"model": model, "opt": opt, "sched": torch.optim.lr_scheduler.StepLR(opt, 1),
            "scaler": torch.amp.GradScaler("cpu"), "loss": torch.tensor(0.5),
            "val_loss": 0.4, "step": 0, "total": 3, "total_steps": 3}


def run_bash(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    from ckpt_notebook.cli import main

    for offset, line in enumerate(block.code.splitlines(), start=1):
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        assert argv[0] == "ckpt", f"{block.doc}:{block.line + offset}: only `ckpt` lines run"
        code = main(argv[1:])
        assert code == 0, f"{block.doc}:{block.line + offset}: {line!r} exited {code}: " \
                          f"{capsys.readouterr().err}"


@pytest.mark.parametrize("doc", DOCS)
def test_code_blocks_run(doc: str, shell: InteractiveShell,
                         capsys: pytest.CaptureFixture[str]) -> None:
    ran = 0
    for block in runnable(doc):
        if skip_reason(block) is not None:
            continue
        if block.lang == "python":
            result = shell.run_cell(block.code, store_history=False)
            error = result.error_before_exec or result.error_in_exec
            assert result.success, f"{block.where}: {type(error).__name__}: {error}"
        else:
            run_bash(block, capsys)
        ran += 1
    assert ran, f"no block of {doc} ran"


SKIPPED = [b for doc in DOCS for b in runnable(doc) if skip_reason(b) is not None]


@pytest.mark.parametrize("block", SKIPPED, ids=[b.where for b in SKIPPED])
def test_skipped_blocks_say_why(block: Block) -> None:
    pytest.skip(f"{block.where}: not run: it {skip_reason(block)}")


# -- the tables list every subcommand ---------------------------------------------------------
def cli_commands() -> set[str]:
    import argparse

    from ckpt_notebook.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def magic_commands() -> set[str]:
    from ckpt_notebook.ui.magics import _build_parsers

    return set(_build_parsers())


@pytest.mark.parametrize("doc", DOCS)
def test_cli_tables_list_every_command(doc: str) -> None:
    """The document's synopsis of ``ckpt`` (the block that lists ``ckpt ls``) names every
    command; ``ckpt pin REF / unpin REF`` counts for both."""
    table = next(b.code for b in code_blocks(doc) if "ckpt ls" in b.code)
    listed = set(re.findall(r"(?:\bckpt|/)\s+([a-z][a-z-]+)", table))
    assert cli_commands() - listed == set(), f"{doc}: the ckpt synopsis lacks these"


def test_magic_table_lists_every_subcommand() -> None:
    text = (ROOT / "docs/user-guide.md").read_text()
    listed = set(re.findall(r"^\| `%checkpoint ([a-z-]+)", text, re.M))
    listed |= set(re.findall(r"^\| `%checkpoint [a-z]+ [^|]*` / `([a-z-]+)", text, re.M))
    assert magic_commands() - listed == set(), "the user guide's %checkpoint table lacks these"


# -- links stay inside ------------------------------------------------------------------------
@pytest.mark.parametrize("doc", DOCS)
def test_links_stay_inside_the_repository(doc: str) -> None:
    path = ROOT / doc
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    targets += re.findall(r"`(\.\./[^`\s]+)`", text)  # a path a reader would follow
    assert targets
    for target in targets:
        assert not re.match(r"[a-z]+:", target), f"{doc}: {target} leaves the repository"
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.is_relative_to(ROOT), f"{doc}: {target} points outside the repository"
        assert file.exists(), f"{doc}: {target} names no file"
