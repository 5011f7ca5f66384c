"""How ``ckpt`` speaks when the command line is wrong, and how it asks before a deletion the
user did not spell out.

- A usage error is one line, ``ckpt: error: WHAT (`ckpt CMD --help` shows the usage)``:
  argparse's default prints the whole usage block first, which buries the one fact that
  matters.
- :func:`confirm` asks on a terminal and otherwise needs ``--yes``: ``ckpt delete latest``
  deletes whatever ``latest`` is at that moment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from ..errors import CkptError, InvalidArgumentError

if TYPE_CHECKING:
    from ..storage import Store

__all__ = ["CliParser", "confirm", "delete_target"]


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that points at ``--help``
    (subcommand parsers are of the same class: argparse creates them with ``type(self)``)."""

    def error(self, message: str) -> NoReturn:
        self._usage_error(self.prog, message)

    def parse_command(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """``parse_args``, but an unknown option after a command points at that command's
        help (argparse reports it from the top-level parser, which knows no command)."""
        args, extras = self.parse_known_args(argv)
        if extras:
            command = getattr(args, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self._usage_error(prog, f"unrecognized arguments: {' '.join(extras)}")
        return args

    def _usage_error(self, prog: str, message: str) -> NoReturn:
        line = " ".join(message.splitlines())
        self.exit(2, f"ckpt: error: {line} (`{prog} --help` shows the usage)\n")


def confirm(question: str, *, yes: bool, refusal: str, stdin: TextIO | None = None) -> bool:
    """True with ``--yes``, or when a person at a terminal answers y; off a terminal, without
    ``--yes``, raise :class:`InvalidArgumentError` (a ValueError) saying ``refusal``; a 'no'
    (or no answer) returns False."""
    if yes:
        return True
    stdin = sys.stdin if stdin is None else stdin
    if not stdin.isatty():
        raise InvalidArgumentError(refusal)
    print(f"{question} [y/N] ", end="", flush=True)
    answer = stdin.readline().strip().lower()
    if not answer:
        print()
    return answer in ("y", "yes")


def delete_target(store: Store, ref: str, *, yes: bool) -> str | None:
    """The id ``ckpt delete REF`` deletes, or None when the person says no. A REF other than
    the id or name itself (``latest``, ``best.loss``, a prefix) means whatever it names now,
    so a person confirms it, or gives ``--yes``."""
    from ..manager import resolve_ref

    try:
        info = resolve_ref(store, ref)
    except CkptError:  # maintenance.delete explains it, or (--force) accepts a lost manifest
        return ref
    if ref in (info.id, info.name):
        return info.id
    step = "-" if info.step is None else info.step
    what = f"{info.id} (run {info.run or '-'}, step {step})"
    ok = confirm(f"delete {what}, which is {ref!r} now?", yes=yes,
                 refusal=f"{ref!r} is {what} now; to delete it give its id, or add --yes")
    return info.id if ok else None
