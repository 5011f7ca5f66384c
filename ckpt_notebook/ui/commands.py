"""Every ``ckpt`` command and ``%checkpoint`` subcommand, declared once.

A :class:`Command` is a name, a help text and its :class:`Arg` list; the CLI parser
(``cli.build_parser``) and the magic's parsers (``magics._build_parsers``) are both built
from :data:`COMMANDS` by :func:`add_arguments`, and the magic's usage text is written from
them by :func:`synopsis`, as IPython's ``magic_arguments`` makes a magic's help from its
parser. A command or an argument that only one interface has says so (``only=CLI`` or
``only=MAGIC``); where the two differ in wording, the difference is declared
(``magic_help``), never a second copy.

Its imports are argparse, the errors, the argument types and three constants' modules
(retention, the store's request lifetime, the dashboard's token variable): ``ckpt --help``
and ``%load_ext`` load no manager, torch, panel, ipywidgets or huggingface_hub through it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidArgumentError
from ..retention import Policy
from ..storage.control import REQUEST_LIFETIME_S
from ..types import NAME_RULE
from .argtypes import (
    archive_limit,
    checkpoint_name,
    count,
    duration,
    key_rename,
    metric_name,
    metric_pair,
    seconds,
)
from .dashboard.access import TOKEN_ENV

if TYPE_CHECKING:
    from ..manager.hub import CopyTerms

__all__ = ["CLI", "COMMANDS", "MAGIC", "Arg", "Command", "add_arguments", "command",
           "commands_of", "copy_terms", "option_words", "policy_of", "synopsis"]

Interface = Literal["cli", "magic"]
CLI: Interface = "cli"
MAGIC: Interface = "magic"


@dataclass(frozen=True)
class Arg:
    """One argument: its flags (or a positional's name) and ``add_argument``'s keywords.
    Arguments of one ``group`` are mutually exclusive. ``keyword``: the Python API's keyword
    argument this option stands for, as errors name it (``force=True``, their ``keyword``)."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    only: Interface | None = None
    group: str | None = None
    keyword: str | None = None


def arg(*flags: str, only: Interface | None = None, group: str | None = None,
        keyword: str | None = None, **options: Any) -> Arg:
    return Arg(flags, options, only, group, keyword)


@dataclass(frozen=True)
class Command:
    """One subcommand: ``help`` is its one-line description in both interfaces
    (``magic_help`` where the magic's does something else); ``needs_store``: the CLI refuses
    a ``--store`` where no store is, since a mistyped URL is not an empty store."""

    name: str
    help: str
    args: tuple[Arg, ...] = ()
    only: Interface | None = None
    magic_help: str | None = None
    needs_store: bool = False

    def has(self, interface: Interface) -> bool:
        return self.only in (None, interface)

    def help_for(self, interface: Interface) -> str:
        return self.magic_help if interface == MAGIC and self.magic_help else self.help

    def args_for(self, interface: Interface) -> list[Arg]:
        return [a for a in self.args if a.only in (None, interface)]


def _flag(name: str, help: str, **more: Any) -> Arg:
    return arg(name, action="store_true", help=help, **more)


REF = arg("ref", metavar="REF")
JSON = _flag("--json", "print JSON", only=CLI)
PROGRESS = arg("--progress", action=argparse.BooleanOptionalAction, default=None, only=CLI,
               help="show a progress bar (default: when stderr is a terminal)")
ARCHIVE_LIMIT_HELP = ("archives: raise a limit on what one may extract, on purpose: "
                      "size=200G, ratio=1000 or entries=1000000 (defaults: 64G, 100, 100000; "
                      "repeatable)")

COMMANDS: tuple[Command, ...] = (
    Command("save", "save the notebook's training state (and the named variables)", (
        arg("--name", type=checkpoint_name, metavar="NAME",
            help=f"a named, write-once checkpoint: {NAME_RULE}"),
        arg("--step", type=int, metavar="N", help="the step (default: `global_step` or `step`)"),
        arg("--metric", type=metric_pair, action="append", default=[], metavar="KEY=VALUE",
            help="a metric of this checkpoint (repeatable)"),
        arg("--tag", action="append", default=[], metavar="T", help="a tag (repeatable)"),
        arg("vars", nargs="*", metavar="VAR", help="also save these variables"),
    ), only=MAGIC),
    Command("restore", "load a checkpoint into the objects bound to the same names", (
        arg("ref", nargs="?", default="latest", metavar="REF", help="default: latest"),
        _flag("--weights-only", "modules only"),
        _flag("--no-strict", "skip missing, unexpected and mismatched keys",
              keyword="strict=False"),
        _flag("--allow-pickle", "unpickle pickled values (only from a store you trust)",
              keyword="allow_pickle=True"),
        arg("--key-map", type=key_rename, action="append", default=[], metavar="OLD=NEW",
            keyword="key_map", help="rename saved module keys first: a prefix ending in '.' "
            "(backbone.=encoder.) or one key (repeatable)"),
    ), only=MAGIC),
    Command("list", "list the checkpoints with their retention status", only=MAGIC),
    Command("ls", "list every checkpoint, newest first (as every UI lists them)",
            (_flag("--json", "print a JSON list"),), only=CLI, needs_store=True),
    Command("show", "show one checkpoint's metadata and objects", (REF, JSON),
            needs_store=True),
    Command("diff", "which tensors changed between two checkpoints (from hashes)", (
        arg("ref_a", metavar="REF1"), arg("ref_b", metavar="REF2"), JSON), needs_store=True),
    Command("verify", "re-hash the blobs of a checkpoint (default: latest)", (
        arg("ref", metavar="REF", nargs="?", group="which"),
        _flag("--all", "verify every checkpoint", only=CLI, group="which"),
    ), needs_store=True),
    Command("store", "show or set the notebook's store", (
        arg("url", nargs="?", metavar="URL"),
        _flag("--create", "make a new store at URL now (else a URL with nothing there is "
              "noted)"),
    ), only=MAGIC),
    Command("gc", "remove unreferenced blobs and leftover temp files",
            (_flag("--dry-run", "only report what would go"),), only=CLI, needs_store=True),
    Command("export", "write a checkpoint's model weights as .safetensors or .pt", (
        REF, arg("out", metavar="OUT", help="file ending in .safetensors, .pt or .pth"),
    ), only=CLI, needs_store=True),
    Command("policy", "show the store's retention policy, or set it (the rules given replace "
            "the whole policy; a checkpoint is kept when any rule keeps it)", (
        arg("--keep-last", type=count, metavar="N", help="the N newest"),
        arg("--keep-best", type=count, metavar="N", help="the N best by --monitor"),
        arg("--monitor", type=metric_name, metavar="METRIC", help="e.g. val_loss"),
        arg("--mode", choices=("min", "max"),
            help="lower or higher is better (default: min for losses and errors)"),
        arg("--keep-every", type=count, metavar="STEPS",
            help="those whose step is a multiple of STEPS"),
        arg("--keep-within", type=duration, metavar="DURATION",
            help="those younger than DURATION: 3600, 90s, 10min, 2h, 1d, 1h30m"),
        arg("--scope", choices=("run", "store"),
            help="run (default): the rules apply within each run, so one run's saves never "
            "make another's prunable; store: they span every run"),
        _flag("--clear", "remove the policy: keep everything"),
    )),
    Command("prune", "delete the checkpoints the retention policy does not keep (never named "
            "or pinned ones, nor the newest)", (_flag("--dry-run", "only list what would go"),),
            needs_store=True),
    Command("pin", "keep a checkpoint whatever the retention policy says", (REF,),
            needs_store=True),
    Command("unpin", "let the retention policy decide about a checkpoint again", (REF,),
            needs_store=True),
    Command("delete", "delete one checkpoint (named or pinned ones need --force)", (
        REF, _flag("--force", "also a named or pinned checkpoint", keyword="force=True"),
        _flag("--yes", "no question when REF is not the id or name (latest, best.<metric>, a "
              "prefix): delete what it names now", only=CLI),
    ), needs_store=True),
    Command("auto", "auto-checkpointing after cells and in session().step()", (
        arg("--every", metavar="N|DURATION", help="step() saves every N steps or DURATION"),
        _flag("--on-interrupt", "save when a cell is stopped"),
        _flag("--off", "stop auto-checkpointing"),
    ), only=MAGIC),
    Command("request-save", "ask the training loop running on this store to save at its next "
            "step()", (
        arg("--tag", action="append", default=[], metavar="T",
            help="a tag for the requested checkpoint (repeatable)"),
        arg("--lifetime", type=duration, default=REQUEST_LIFETIME_S, metavar="DURATION",
            help="a loop that has not taken the request by then never will (90s, 5min; "
            f"default {REQUEST_LIFETIME_S:g}s)"),
        arg("--wait", type=seconds, default=0.0, metavar="SECONDS",
            help="wait up to SECONDS and say whether a training loop took the request"),
    ), only=CLI, needs_store=True),
    Command("copy", "copy a folder, file, archive (.zip .tar .tar.gz .tgz .tar.bz2, extracted), "
            "URL or checkpoint REF into a named, write-once checkpoint; or upload a "
            "checkpoint's files or a folder to a Hugging Face Hub repo (--to hf://...)", (
        arg("src", metavar="SRC", help="a folder, file, archive, URL or REF"),
        arg("--name", type=checkpoint_name, metavar="NAME",
            help=f"the new checkpoint's name (not for hf:// uploads): {NAME_RULE}"),
        arg("--to", metavar="URL", help="another store (any fsspec URL; default: the store), "
            "or hf://owner/repo[@revision] to upload there"),
        arg("--pattern", action="append", default=[], metavar="GLOB",
            help="hf:// uploads: only files matching GLOB (repeatable)"),
        arg("--exclude", action="append", default=[], metavar="GLOB",
            help="hf:// uploads: leave out files matching GLOB (repeatable)"),
        _flag("--dry-run", "hf:// uploads: only list the files"),
        arg("--remote-dir", metavar="DIR",
            help="hf:// uploads: the folder in the repo (or hf://owner/repo/DIR)"),
        arg("--repo-type", choices=("model", "dataset", "space"),
            help="hf:// uploads: the kind of repo (or hf://datasets/..., hf://spaces/...)"),
        arg("--revision", metavar="BRANCH",
            help="hf:// uploads: the branch to commit to (or hf://owner/repo@BRANCH)"),
        arg("--archive-limit", type=archive_limit, action="append", default=[],
            metavar="KEY=VALUE", help=ARCHIVE_LIMIT_HELP),
        PROGRESS,
    )),
    Command("get", "write a checkpoint's files into a local folder (read-only files); a folder "
            "that still verifies is reused, nothing else is overwritten", (
        arg("ref", metavar="NAME", help="a checkpoint name (or any REF)"),
        arg("dir", metavar="DIR"), PROGRESS,
    ), only=CLI),
    Command("use", "materialize a named checkpoint and set $CKPT_NOTEBOOK_CHECKPOINT_PATH",
            (arg("name", metavar="NAME"),), only=MAGIC),
    Command("repair", "re-hash every blob of every checkpoint, quarantine bad ones, and fetch "
            "bad or missing ones from another store (--from), verified", (
        arg("--from", dest="source", metavar="URL",
            help="a healthy copy: a mirror, or the store a copy came from"),
        _flag("--dry-run", "change nothing; report what a repair would fix"), JSON,
    ), only=CLI),
    Command("widget", "show the checkpoint widget", only=MAGIC),
    Command("dashboard", "serve the dashboard on 127.0.0.1 (Ctrl-C stops it); every request "
            "needs the token in the URL it prints", (
        arg("--port", type=int, default=0, only=CLI, help="port (default: a free one)"),
        arg("--address", default="127.0.0.1", only=CLI, help="address to bind (default "
            "127.0.0.1; anything else is reachable from other machines, and is said so)"),
        _flag("--show", "open it in a browser", only=CLI),
        arg("--token", metavar="TOKEN", default=None, group="token", only=CLI,
            help=f"the token the page asks for (default: ${TOKEN_ENV}, else a new random one, "
            f"printed in the URL); other local users see command lines, so prefer ${TOKEN_ENV}"),
        _flag("--no-token", "no token: every local user (and, with --address, everyone who "
              "can reach the port) can pin, copy, delete and prune", group="token", only=CLI),
    ), magic_help="show the checkpoint dashboard (Panel) in the notebook"),
)
"""Both interfaces list them in this order; ``test_commands`` checks that each reaches both
where it is declared for both."""

_BY_NAME = {c.name: c for c in COMMANDS}


def command(name: str) -> Command:
    return _BY_NAME[name]


def commands_of(interface: Interface) -> list[Command]:
    return [c for c in COMMANDS if c.has(interface)]


def add_arguments(parser: argparse.ArgumentParser, cmd: Command, interface: Interface) -> None:
    """Add ``cmd``'s arguments for ``interface`` to ``parser``."""
    args = cmd.args_for(interface)
    shared = Counter(a.group for a in args if a.group is not None)
    groups: dict[str, Any] = {}
    for a in args:
        target: Any = parser
        if a.group is not None and shared[a.group] > 1:  # alone, it excludes nothing
            if a.group not in groups:
                groups[a.group] = parser.add_mutually_exclusive_group()
            target = groups[a.group]
        target.add_argument(*a.flags, **a.options)


# -- the magic's usage text -------------------------------------------------------------------
def synopsis(cmd: Command, interface: Interface, width: int = 92, indent: str = "") -> str:
    """``save [--name NAME] [--metric KEY=VALUE]... [VAR ...]``, wrapped at ``width``
    between arguments (mutually exclusive ones as ``[REF | --all]``)."""
    words: list[str] = []
    grouped: dict[str, list[str]] = {}
    for a in cmd.args_for(interface):
        word = _word(a)
        if a.group is None:
            words.append(word)
        elif a.group in grouped:
            grouped[a.group].append(word.strip("[]"))
        else:
            grouped[a.group] = [word.strip("[]")]
            words.append(f"\0{a.group}")
    words = [f"[{' | '.join(grouped[w[1:]])}]" if w.startswith("\0") else w for w in words]
    lines, line = [], indent + cmd.name
    hang = " " * (len(indent) + len(cmd.name) + 1)
    for word in words:
        if len(line) + 1 + len(word) > width and line.strip() != cmd.name:
            lines.append(line)
            line = hang + word
        else:
            line = f"{line} {word}"
    return "\n".join([*lines, line])


def _word(a: Arg) -> str:
    o = a.options
    if not a.flags[0].startswith("-"):
        name = str(o.get("metavar") or a.flags[0].upper())
        return {"?": f"[{name}]", "*": f"[{name} ...]"}.get(str(o.get("nargs")), name)
    flag = next((f for f in a.flags if f.startswith("--")), a.flags[0])
    if o.get("action") in ("store_true", "store_false"):
        return f"[{flag}]"
    if o.get("action") is argparse.BooleanOptionalAction:
        return f"[{flag} | --no-{flag[2:]}]"
    value = o.get("metavar") or ("|".join(o["choices"]) if "choices" in o else
                                 flag[2:].upper().replace("-", "_"))
    return f"[{flag} {value}]" + ("..." if o.get("action") == "append" else "")


# -- what the options mean, checked once for both interfaces ---------------------------------
POLICY_RULES = ("keep_last", "keep_best", "monitor", "mode", "keep_every", "keep_within",
                "scope")


def policy_of(args: argparse.Namespace) -> Policy | None:
    """The retention policy ``policy``'s options set: ``None`` when they set nothing (show
    the policy), an empty one for ``--clear``; options that cannot mean what was asked raise
    :class:`~ckpt_notebook.errors.InvalidArgumentError` (a ValueError) naming them."""
    rules = {k: getattr(args, k) for k in POLICY_RULES if getattr(args, k) is not None}
    if not args.clear and not rules:
        return None
    if rules and args.clear:
        raise InvalidArgumentError("--clear removes every rule",
                                   hint="give it alone, or give only the rules (setting rules "
                                        "replaces the whole policy)")
    if "keep_best" in rules and "monitor" not in rules:
        raise InvalidArgumentError("--keep-best needs --monitor METRIC, the metric to rank by "
                                   "(e.g. --keep-best 2 --monitor val_loss)")
    if "keep_best" not in rules and rules.keys() & {"monitor", "mode"}:
        raise InvalidArgumentError("--monitor and --mode say what --keep-best ranks by",
                                   hint="give --keep-best N too (e.g. --keep-best 2 --monitor "
                                        "val_loss)")
    return Policy(**rules)


def option_words(err: BaseException, cmd: Command, interface: Interface) -> str:
    """``str(err)`` as the user of ``cmd`` reads it: an error that names a Python keyword
    argument (its ``keyword`` fact, ``force=True``) names ``cmd``'s option declared for that
    keyword instead (``--force``), where ``interface`` has one."""
    text = str(err)
    keyword = getattr(err, "keyword", None)
    option = next((a.flags[0] for a in cmd.args_for(interface)
                   if keyword is not None and a.keyword == keyword), None)
    return text.replace(keyword, option) if keyword and option else text


def copy_terms() -> CopyTerms:
    """How ``copy``'s options are spelled in the manager's refusals of a copy or upload."""
    from ..manager.hub import CopyTerms

    return CopyTerms(
        missing_name="copy needs --name NAME, the new checkpoint's name: --name is required "
                     "unless --to hf://owner/repo[@revision] uploads to the Hub instead",
        hub="--to hf://owner/repo[@revision]",
        keys={"name": "--name", "patterns": "--pattern", "excludes": "--exclude",
              "dry_run": "--dry-run", "remote_dir": "--remote-dir", "repo_type": "--repo-type",
              "revision": "--revision"})
