"""``%checkpoint``: the line magic. Thin: parse, call the manager, render the result. Its
parsers, its usage text and its docstring (``%checkpoint?``) come from :mod:`.commands`.

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

from ..errors import CkptError
from ..manager import maintenance
from ..types import CheckpointInfo, format_bytes
from .commands import (
    MAGIC,
    add_arguments,
    command,
    commands_of,
    copy_terms,
    option_words,
    policy_of,
    synopsis,
)
from .render import Table, checkpoint_table
from .session import NotebookCheckpointer, existing_session, get_session

__all__ = ["CheckpointMagics", "load_ipython_extension"]


class _Parser(MagicArgumentParser):
    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description,
                         formatter_class=argparse.HelpFormatter)

    def error(self, message: str) -> Any:
        usage = " ".join(self.format_usage().split())
        raise UsageError(f"{self.prog}: {message}. {usage}")


def _build_parsers() -> dict[str, _Parser]:
    """One parser per subcommand, as :mod:`.commands` declares them for the magic."""
    parsers: dict[str, _Parser] = {}
    for cmd in commands_of(MAGIC):
        parsers[cmd.name] = _Parser(prog=f"%checkpoint {cmd.name}",
                                    description=cmd.help_for(MAGIC))
        add_arguments(parsers[cmd.name], cmd, MAGIC)
    return parsers


def _synopses(prefix: str) -> str:
    return "\n".join(synopsis(cmd, MAGIC, indent=prefix) for cmd in commands_of(MAGIC))


_REF_HELP = "REF: latest, best.<metric>[:min|max], an id, a name, or a .safetensors/.pt path."

USAGE = f"""%checkpoint SUBCOMMAND [options]   (%checkpoint SUBCOMMAND -h for one's options)

{_synopses("  ")}

{_REF_HELP}"""


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
        try:
            argv = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%checkpoint: {err}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return
        subcommand, rest = argv[0], argv[1:]
        parser = self.parsers.get(subcommand)
        if parser is None:
            raise UsageError(f"%checkpoint: unknown subcommand {subcommand!r}; one of "
                             f"{', '.join(self.parsers)}")
        if rest and rest[0] in ("-h", "--help"):
            parser.print_help()
            return
        args = parser.parse_args(rest)
        try:
            result = self.handlers[subcommand](get_session(self.shell), args)
        except UsageError:
            raise
        except (CkptError, ValueError, NameError, OSError) as err:
            raise UsageError(f"%checkpoint {subcommand}: "
                             f"{option_words(err, command(subcommand), MAGIC)}") from None
        except Exception as err:  # never a traceback wall in the notebook
            raise UsageError(f"%checkpoint {subcommand}: {type(err).__name__}: {err}") from None
        if isinstance(result, str):
            print(result)
        elif result is not None:
            display(result)

    checkpoint.__doc__ = f"""Save, restore and manage training checkpoints.

{_synopses("%checkpoint ")}

With no VAR, save includes every torch Module, Optimizer, LR scheduler and GradScaler
bound to a public name, the RNG states, and step/epoch/global_step.
{_REF_HELP}
"""

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
        if a.key_map:
            kwargs["key_map"] = dict(a.key_map)
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
        objects = s.store.manifest(info.id).objects
        rows = [[n, o.kind, o.type, len(o.tensors), format_bytes(sum(t.nbytes for t in o.tensors))]
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
        info = s.resolve(a.ref or "latest")
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
        policy = policy_of(a)
        if policy is not None:
            s.set_policy(policy)
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
        from ..manager.hub import plan_copy
        from .progress import progress_bar

        s.wait()
        plan = plan_copy(a.src, a.to, name=a.name, store=s.store, patterns=a.pattern,
                         excludes=a.exclude, dry_run=a.dry_run, remote_dir=a.remote_dir,
                         repo_type=a.repo_type, revision=a.revision,
                         archive_limits=dict(a.archive_limit) or None, terms=copy_terms())
        with progress_bar(plan.label, enabled=False if plan.dry_run else None) as bar:
            info = plan.run(bar)
        if not isinstance(info, CheckpointInfo):  # a Hub upload
            return str(info)
        return (f"copied {a.src} to named checkpoint {info.id} in {a.to or s.store.url}: "
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
