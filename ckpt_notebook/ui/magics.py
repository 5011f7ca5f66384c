"""``%checkpoint``: the line magic. Thin: parse, call the manager, render the result.

Loading the extension imports neither torch, panel nor ipywidgets.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from .. import retention
from ..errors import CkptError
from ..manager import maintenance
from ..types import CheckpointInfo, format_bytes
from .argtypes import archive_limit, count, duration, metric_pair
from .render import Table, checkpoint_table
from .session import NotebookCheckpointer, existing_session, get_session
from .storeargs import add_hub_arguments, hub_url, refuse_hub_flags

__all__ = ["CheckpointMagics", "load_ipython_extension"]


class _Parser(MagicArgumentParser):
    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description,
                         formatter_class=argparse.HelpFormatter)

    def error(self, message: str) -> Any:
        usage = " ".join(self.format_usage().split())
        raise UsageError(f"{self.prog}: {message}. {usage}")


def _build_parsers() -> dict[str, _Parser]:
    def parser(name: str, description: str) -> _Parser:
        p = _Parser(prog=f"%checkpoint {name}", description=description)
        parsers[name] = p
        return p

    parsers: dict[str, _Parser] = {}
    p = parser("save", "Save the notebook's training state (and the named variables).")
    p.add_argument("vars", nargs="*", metavar="VAR", help="also save these variables")
    p.add_argument("--name", help="a named, immutable checkpoint")
    p.add_argument("--step", type=int, help="the step (default: `global_step` or `step`)")
    p.add_argument("--metric", type=metric_pair, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tag", action="append", default=[], metavar="T")
    p = parser("restore", "Load a checkpoint into the objects bound to the same names.")
    p.add_argument("ref", nargs="?", default="latest", metavar="REF")
    p.add_argument("--weights-only", action="store_true", help="modules only")
    p.add_argument("--no-strict", action="store_true",
                   help="skip missing, unexpected and mismatched keys")
    p.add_argument("--allow-pickle", action="store_true",
                   help="unpickle pickled values (only from a store you trust)")
    parser("list", "List the checkpoints with their retention status.")
    for name, what in (("show", "Show one checkpoint."), ("pin", "Keep a checkpoint always."),
                       ("unpin", "Let retention decide again.")):
        parser(name, what).add_argument("ref", metavar="REF")
    p = parser("diff", "Which tensors changed between two checkpoints (from hashes).")
    p.add_argument("ref_a", metavar="REF1")
    p.add_argument("ref_b", metavar="REF2")
    p = parser("store", "Show or set the store.")
    p.add_argument("url", nargs="?", metavar="URL")
    p.add_argument("--create", action="store_true",
                   help="make a new store at URL now (else a URL with nothing there is noted)")
    parser("verify", "Re-hash the blobs of a checkpoint (default latest).").add_argument(
        "ref", nargs="?", default="latest", metavar="REF")
    parser("prune", "Delete what the retention policy does not keep.").add_argument(
        "--dry-run", action="store_true")
    p = parser("delete", "Delete a checkpoint.")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--force", action="store_true", help="also named or pinned ones")
    p = parser("policy", "Show or set the retention policy (any of the rules keeps).")
    p.add_argument("--keep-last", type=count, metavar="N")
    p.add_argument("--keep-best", type=count, metavar="N")
    p.add_argument("--monitor", metavar="METRIC")
    p.add_argument("--mode", choices=("min", "max"))
    p.add_argument("--keep-every", type=count, metavar="STEPS")
    p.add_argument("--keep-within", type=duration, metavar="DURATION")
    p.add_argument("--scope", choices=("run", "store"),
                   help="run (default): rules apply within each run; store: across runs")
    p.add_argument("--clear", action="store_true", help="keep everything")
    p = parser("auto", "Auto-checkpointing after cells and in session().step().")
    p.add_argument("--every", metavar="N|DURATION", help="step() saves every N steps or T")
    p.add_argument("--on-interrupt", action="store_true", help="save when a cell is stopped")
    p.add_argument("--off", action="store_true")
    parser("widget", "Show the checkpoint widget.")
    parser("dashboard", "Show the checkpoint dashboard (Panel) in the notebook.")
    p = parser("copy", "Copy a folder, file, archive, URL or checkpoint to a named checkpoint.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("--name", help="the new checkpoint's name (not needed for hf:// uploads)")
    p.add_argument("--to", metavar="URL", help="another store, or hf://owner/repo[@rev]")
    p.add_argument("--pattern", action="append", default=[], metavar="GLOB")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    p.add_argument("--dry-run", action="store_true", help="hf:// uploads: only list files")
    p.add_argument("--archive-limit", type=archive_limit, action="append", default=[],
                   metavar="KEY=VALUE", help="archives: raise a limit on purpose (size=200G, "
                   "ratio=1000, entries=1000000)")
    add_hub_arguments(p)
    parser("use", "Materialize a named checkpoint and set $CKPT_NOTEBOOK_CHECKPOINT_PATH."
           ).add_argument("name", metavar="NAME")
    return parsers


USAGE = """%checkpoint SUBCOMMAND [options]   (%checkpoint SUBCOMMAND -h for one's options)

  save [--name NAME] [--step N] [--metric KEY=VALUE]... [--tag T]... [VAR ...]
  restore [REF] [--weights-only] [--no-strict]
  list | show REF | diff REF1 REF2 | verify [REF] | store [URL [--create]]
  prune [--dry-run] | delete REF [--force] | pin REF | unpin REF
  policy [--keep-last N] [--keep-best N --monitor METRIC [--mode min|max]]
         [--keep-every STEPS] [--keep-within DURATION] [--scope run|store] [--clear]
  auto [--every N | --every 10min] [--on-interrupt] | auto --off
  copy SRC --name NAME [--to URL] | copy SRC --to hf://owner/repo[@rev]
       [--remote-dir DIR] [--repo-type model|dataset|space] [--revision BRANCH] | use NAME
  widget | dashboard

REF: latest, best.<metric>[:min|max], an id, a name, or a .safetensors/.pt path."""


@magics_class
class CheckpointMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.parsers = _build_parsers()
        self.handlers: dict[str, Callable[[NotebookCheckpointer, argparse.Namespace], Any]] = {
            "save": self._save, "restore": self._restore, "list": self._list,
            "show": self._show, "diff": self._diff, "store": self._store,
            "verify": self._verify, "prune": self._prune, "delete": self._delete,
            "pin": self._pin, "unpin": self._unpin, "policy": self._policy,
            "auto": self._auto, "widget": self._widget, "copy": self._copy, "use": self._use,
            "dashboard": self._dashboard,
        }

    @line_magic
    def checkpoint(self, line: str) -> None:
        """Save, restore and manage training checkpoints.

        %checkpoint save [--name NAME] [--step N] [--metric KEY=VALUE]... [--tag T]... [VAR ...]
        %checkpoint restore [REF] [--weights-only] [--no-strict]
        %checkpoint list | show REF | diff REF1 REF2 | verify [REF] | store [URL]
        %checkpoint prune [--dry-run] | delete REF [--force] | pin REF | unpin REF
        %checkpoint policy [--keep-last N] [--keep-best N --monitor METRIC [--mode min|max]]
                           [--keep-every STEPS] [--keep-within DURATION]
                           [--scope run|store] [--clear]
        %checkpoint auto [--every N | --every 10min] [--on-interrupt] | --off
        %checkpoint copy SRC --name NAME [--to URL]
        %checkpoint use NAME
        %checkpoint widget | dashboard

        With no VAR, save includes every torch Module, Optimizer, LR scheduler and
        GradScaler bound to a public name, the RNG states, and step/epoch/global_step.
        REF is latest, best.<metric>[:min|max], an id, a name or a weights file.
        """
        try:
            argv = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%checkpoint: {err}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return
        command, rest = argv[0], argv[1:]
        parser = self.parsers.get(command)
        if parser is None:
            raise UsageError(f"%checkpoint: unknown subcommand {command!r}; one of "
                             f"{', '.join(self.parsers)}")
        if rest and rest[0] in ("-h", "--help"):
            parser.print_help()
            return
        args = parser.parse_args(rest)
        try:
            result = self.handlers[command](get_session(self.shell), args)
        except UsageError:
            raise
        except (CkptError, ValueError, NameError, OSError) as err:
            raise UsageError(f"%checkpoint {command}: {_option_terms(str(err))}") from None
        except Exception as err:  # never a traceback wall in the notebook
            raise UsageError(f"%checkpoint {command}: {type(err).__name__}: {err}") from None
        if isinstance(result, str):
            print(result)
        elif result is not None:
            display(result)

    # -- subcommands ---------------------------------------------------------------------
    def _save(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        added = s.remember(a.vars)
        before = s.last
        try:
            if not s.discover():
                raise ValueError("nothing to save: no torch Module, Optimizer, scheduler or "
                                 "GradScaler is bound in the notebook; name variables to save")
            info = s.save(a.step, name=a.name, metrics=dict(a.metric), tags=a.tag, wait=True)
        except Exception:
            s.forget(added)  # a VAR that cannot be saved must not break later saves
            raise
        if before is not None and info.id == before.id:
            return (f"nothing new: the state at step {info.step} is exactly {info.id}'s; "
                    "no checkpoint added")
        return Table(["id", "step", "objects", "size", "new", "seconds"],
                     [[info.id, info.step, ", ".join(info.objects),
                       format_bytes(info.logical_bytes), format_bytes(info.new_bytes),
                       f"{_elapsed(info):.2f}"]], title="Saved")

    def _restore(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        kwargs: dict[str, Any] = {"weights_only": a.weights_only, "strict": not a.no_strict}
        if a.allow_pickle:
            kwargs["allow_pickle"] = True
        return s.restore_into_namespace(a.ref, **kwargs)

    def _list(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        infos = s.list()
        title = f"{len(infos)} checkpoint(s) in {s.store.url}"
        try:
            status = maintenance.statuses(s.store, infos)
        except CkptError as err:  # a broken policy must not hide the list
            return checkpoint_table(infos, None, title=f"{title} (no statuses: {err})")
        return checkpoint_table(infos, status, title=title)

    def _show(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        info = s.resolve(a.ref)
        objects = s.store.manifest(info.id)["objects"]
        rows = [[n, o["kind"], o["type"], len(o.get("tensors", ())),
                 format_bytes(sum(t["nbytes"] for t in o.get("tensors", ())))]
                for n, o in objects.items()]
        meta = (f"run {info.run}, step {info.step}, created {info.created}, "
                f"metrics {dict(info.metrics)}, tags {list(info.tags)}, parent {info.parent}")
        return Table(["object", "kind", "type", "tensors", "bytes"], rows,
                     title=f"{info.id}" + (" (named)" if info.named else ""), note=meta)

    def _diff(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        info_a, info_b, changes, same = maintenance.diff(s.store, s.resolve(a.ref_a).id,
                                                         s.resolve(a.ref_b).id)
        return Table(["object", "tensor", "change", "detail"],
                     [[c.object, c.path, c.change, c.detail] for c in changes],
                     title=f"{info_a.id} -> {info_b.id}: {len(changes)} changed, {same} same")

    def _store(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from ..storage.presence import nothing_there

        if a.url:
            s = get_session(self.shell, store=a.url)
            if a.create:
                s.store.ensure_writable()
            elif nothing_there(s.store):  # a mistyped path must not pass for an empty store
                print(f"note: nothing is at {s.store.url} (no store, no folder): check the "
                      "path if you meant an existing store; the first save makes one there "
                      "(--create makes it now)")
        return f"store: {s.store.url}"

    def _verify(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        info = s.resolve(a.ref)
        problems = s.verify(info.id)
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return f"{info.id}: all blobs verify"

    def _prune(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        return str(s.prune(dry_run=a.dry_run))

    def _delete(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        return f"deleted {s.delete(a.ref, force=a.force).id} (blobs are freed by prune/gc)"

    def _pin(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        return f"pinned {s.pin(a.ref).id}"

    def _unpin(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        was_pinned = s.resolve(a.ref).id in s.store.pins.ids()
        info = s.unpin(a.ref)
        return f"unpinned {info.id}" if was_pinned else f"{info.id} was not pinned"

    def _policy(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        rules = {k: getattr(a, k) for k in ("keep_last", "keep_best", "monitor", "mode",
                                            "keep_every", "keep_within", "scope")}
        if a.clear and any(v is not None for v in rules.values()):
            raise UsageError("%checkpoint policy: --clear cannot be combined with rules")
        if a.keep_best is not None and not a.monitor:
            raise UsageError("%checkpoint policy: --keep-best needs --monitor METRIC, the "
                             "metric to rank by (e.g. --keep-best 2 --monitor val_loss)")
        if a.keep_best is None and (a.monitor or a.mode):
            raise UsageError("%checkpoint policy: --monitor and --mode go with --keep-best N")
        if a.clear:
            s.set_policy(retention.Policy())
        elif any(v is not None for v in rules.values()):
            s.set_policy(retention.Policy(**{k: v for k, v in rules.items() if v is not None}))
        return f"retention policy of {s.store.url}: {s.policy.describe()}"

    def _auto(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from ..manager.training import Schedule

        if a.off and (a.every or a.on_interrupt):
            raise UsageError("%checkpoint auto: --off cannot be combined with other options")
        if a.off:
            s.auto_settings.enabled = s.auto_settings.on_interrupt = False
            s.schedule = Schedule()
            return "auto-checkpointing off"
        s.schedule = Schedule.parse(a.every) if a.every else s.schedule
        s.start_auto()
        s.auto_settings.on_interrupt = a.on_interrupt or s.auto_settings.on_interrupt
        parts = ["after cells that change tracked state"]
        if s.schedule.active:
            parts.append(f"session().step() saves {s.schedule.describe()}")
        if s.auto_settings.on_interrupt:
            parts.append("when a cell is interrupted")
        return "auto-checkpointing on: " + "; ".join(parts)

    def _copy(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from .transfer import copy

        s.wait()
        hub = (a.to or "").startswith("hf://")
        if not hub:
            refuse_hub_flags(a)
        if not hub and not a.name:
            raise ValueError("--name is required: the name of the new checkpoint")
        to = hub_url(a) if hub else a.to
        info = copy(a.src, a.name, to=to, store=s.store, patterns=a.pattern,
                    excludes=a.exclude, dry_run=a.dry_run,
                    archive_limits=dict(a.archive_limit) or None)
        if not isinstance(info, CheckpointInfo):
            return str(info)
        where = to or s.store.url
        return (f"copied {a.src} to named checkpoint {info.id} in {where}: "
                f"{format_bytes(info.logical_bytes)}, {format_bytes(info.new_bytes)} new")

    def _use(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from ..manager.materializing import PATH_ENV, use
        from .progress import progress_bar

        with progress_bar(f"get {a.name}") as bar:
            path = use(a.name, store=s.store, progress=bar)
        return f"{a.name} is at {path} (${PATH_ENV})"

    def _dashboard(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from .dashboard.app import inline

        s.wait()
        return inline(s.store)

    def _widget(self, s: NotebookCheckpointer, a: argparse.Namespace) -> Any:
        from .widget import CheckpointWidget

        return CheckpointWidget(s).view


_OPTION_TERMS = {"strict=False": "--no-strict", "force=True": "--force",
                 "allow_pickle=True": "--allow-pickle"}


def _option_terms(message: str) -> str:
    """Errors from the Python API name keyword arguments; the magic's users have options."""
    for python, option in _OPTION_TERMS.items():
        message = message.replace(python, option)
    return message


def _elapsed(info: Any) -> float:
    from datetime import datetime, timezone

    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(info.created)).total_seconds()
    except ValueError:
        return 0.0


_LOADED: set[int] = set()


def _post_run_cell(ipython: Any, result: Any) -> None:
    session = existing_session(ipython)  # cells run before any %checkpoint cost nothing
    if session is not None:
        session.post_run_cell(result)


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(CheckpointMagics)
    if id(ipython) not in _LOADED:  # one hook per shell, whatever the number of %load_ext
        ipython.events.register("post_run_cell", lambda result: _post_run_cell(ipython, result))
        _LOADED.add(id(ipython))
