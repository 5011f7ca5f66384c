"""Layout rules no linter checks: every module of the package stays under 600 lines."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ckpt_notebook"
MAX_LINES = 600


def modules() -> list[Path]:
    """Every ``.py`` file under ckpt_notebook/ (os.walk does not follow the labextension
    link, which holds the built JavaScript)."""
    return sorted(Path(folder) / name for folder, _, names in os.walk(PACKAGE)
                  for name in names if name.endswith(".py"))


def lines(path: Path) -> int:
    """As ``wc -l`` counts them: newline characters."""
    return path.read_bytes().count(b"\n")


def test_every_module_has_at_most_600_lines() -> None:
    found = modules()
    assert PACKAGE / "manager" / "checkpointer.py" in found  # the walk finds the package
    too_long = [(path.relative_to(ROOT).as_posix(), n) for path in found
                if (n := lines(path)) > MAX_LINES]
    assert not too_long, "; ".join(
        f"{path} has {n} lines, more than {MAX_LINES}: split it into modules that each hold "
        "one part of it" for path, n in too_long)
