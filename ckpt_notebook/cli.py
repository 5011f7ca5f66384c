"""``ckpt``: list, inspect, verify, garbage-collect and export checkpoints from a shell.

    ckpt ls [--json]                     every checkpoint, newest first, with its status
    ckpt show REF [--json]               one checkpoint's metadata and objects
    ckpt copy SRC --name NAME [--to URL] copy a folder, file, archive, URL or checkpoint into
                                         a named, write-once checkpoint (in --to, or here)

``ckpt --help`` lists every command and ``ckpt COMMAND --help`` one's options; both come from
the declarations in :mod:`ckpt_notebook.ui.commands`, which ``%checkpoint`` shares.

The retention policy is stored with the store (policy.json), so the CLI, the magics, the
dashboard and every Checkpointer on the store apply the same one.

Every command takes ``--store URL`` (default ``$CKPT_NOTEBOOK_STORE`` or ``./checkpoints``).
A REF is ``latest``, ``best.<metric>[:min|max]``, an id, a name or a unique id prefix.
Errors print one line, ``ckpt: error: ...``, and exit 1; usage errors
are one line too, pointing at ``--help``, and exit 2. ``ckpt`` alone prints the help.

A thin adapter: it parses arguments, calls the store or the manager (one ``cmd_*`` per
command, in :data:`HANDLERS`), and renders. The manager (and with it torch) is imported only by
the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import CkptError, StoreError
from .types import CheckpointInfo, format_bytes
from .ui.cliparse import CliParser, delete_target
from .ui.commands import (
    CLI,
    add_arguments,
    command,
    commands_of,
    copy_terms,
    option_words,
    policy_of,
)
from .ui.progress import progress_bar
from .ui.render import format_metrics, format_table, object_summary, short_time
from .ui.storeargs import add_storage_option_arguments, cli_store

if TYPE_CHECKING:
    from .retention import Policy, Status
    from .storage import Store

__all__ = ["main"]

_LS_HEADER = ("ID", "KIND", "RUN", "STEP", "CREATED", "METRICS", "SIZE", "NEW", "STATUS")


# -- commands ---------------------------------------------------------------------------------
def cmd_ls(store: Store, args: argparse.Namespace) -> int:
    infos = store.list()[::-1]  # newest first, as the widget, the dashboard and the lab list
    status = _statuses(store, infos) if infos else {}
    if args.json:  # one compact entry per line: readable, and the C encoder keeps it fast
        print("[" + ",\n ".join(json.dumps(_ls_entry(i, status)) for i in infos) + "]")
        return 0
    if not infos:
        print(f"no checkpoints in {store.url} yet")
        return 0
    rows = [(i.id + (" *" if i.named else ""), i.kind, i.run or "-", _opt(i.step),
             short_time(i.created), format_metrics(i.metrics), format_bytes(i.logical_bytes),
             format_bytes(i.new_bytes), _label(status, i.id))
            for i in infos]
    print(format_table(_LS_HEADER, rows, right=(3, 6, 7)))
    if any(i.named for i in infos):
        print("* named (write-once, never pruned)")
    return 0


def _statuses(store: Store, infos: list[CheckpointInfo]) -> dict[str, Status] | None:
    """Retention statuses; a broken policy.json costs the column, not the listing."""
    from .manager import maintenance

    try:
        return maintenance.statuses(store, infos)
    except CkptError as err:
        print(f"ckpt: warning: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return None


def _label(status: dict[str, Status] | None, ckpt_id: str) -> str:
    st = None if status is None else status.get(ckpt_id)
    return "?" if st is None else st.label


def _ls_entry(info: CheckpointInfo, status: dict[str, Status] | None) -> dict[str, Any]:
    st = None if status is None else status.get(info.id)
    entry = info.to_json()
    entry["status"] = None if st is None else st.label
    entry["pinned"] = None if st is None else "pinned" in st.reasons
    return entry


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    info = _resolve(store, args.ref)
    doc = store.manifest(info.id)
    objects = [object_summary(name, obj) for name, obj in doc.objects.items()]
    files = doc.files or {}
    versions = dict(doc.library_versions)
    if args.json:
        _print_json({"checkpoint": info.to_json(), "objects": objects,
                     "files": len(files), "library_versions": versions})
        return 0
    fields = [
        ("id", info.id), ("name", info.name or "-"), ("kind", info.kind),
        ("run", info.run or "-"), ("step", _opt(info.step)), ("epoch", _opt(info.epoch)),
        ("created", f"{short_time(info.created)}  ({info.created})"),
        ("metrics", format_metrics(info.metrics)), ("tags", ", ".join(info.tags) or "-"),
        ("parent", info.parent or "-"), ("notebook", info.notebook or "-"),
        ("source", info.source or "-"),
        ("size", f"{format_bytes(info.logical_bytes)} ({format_bytes(info.new_bytes)} new)"),
        ("blobs", str(len(doc.blobs))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"),
    ]
    if files:
        fields.append(("files", str(len(files))))
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in fields))
    if objects:
        rows = [(o["name"], o["kind"], o["type"], str(o["tensors"]), format_bytes(o["bytes"]))
                for o in objects]
        print()
        print(format_table(("OBJECT", "KIND", "TYPE", "TENSORS", "BYTES"), rows, right=(3, 4)))
    if files:
        shown = sorted(files.items())[:_SHOW_FILES]
        file_rows = [(path, format_bytes(e.size), "x" if e.executable else "")
                     for path, e in shown]
        print()
        print(format_table(("FILE", "SIZE", "EXEC"), file_rows, right=(1,)))
        if len(files) > len(shown):
            print(f"... and {len(files) - len(shown)} more (`ckpt get {info.id} DIR` writes "
                  "them all)")
    return 0


_SHOW_FILES = 50


def cmd_verify(store: Store, args: argparse.Namespace) -> int:
    store_problems = store.audit() if args.all else []
    if args.all:
        ids = [i.id for i in store.list()]
        if not ids and not store_problems:
            print(f"no checkpoints in {store.url} to verify")
            return 0
    else:
        ids = [_resolve(store, args.ref or "latest").id]
    for problem in store_problems:
        print(f"BAD {problem}")
    bad = 0
    seen: dict[str, str | None] = {}
    for ckpt_id in ids:
        try:
            problems = [str(p) for p in store.verify(ckpt_id, seen=seen)]
        except CkptError as err:
            problems = [f"{ckpt_id}: {err}"]
        print(f"OK  {ckpt_id}" if not problems else "\n".join(f"BAD {p}" for p in problems))
        bad += bool(problems)
    if args.all:
        _note_unreferenced(store)
    if bad or store_problems:
        extra = f" and {len(store_problems)} store problem(s)" if store_problems else ""
        print(f"ckpt: error: {bad} of {len(ids)} checkpoint(s) failed verification{extra}",
              file=sys.stderr)
        return 1
    return 0


def _note_unreferenced(store: Store) -> None:
    """Unreferenced blobs are no damage (a deleted checkpoint's, until gc), but worth a word."""
    unreferenced = store.unreferenced_blobs()
    if unreferenced:
        size = sum(store.backend.size(rel) for rel in unreferenced.values())
        print(f"note: {len(unreferenced)} unreferenced blob(s) ({format_bytes(size)}); "
              "`ckpt gc` removes them")


def cmd_gc(store: Store, args: argparse.Namespace) -> int:
    from .storage.store import STORE_FILE

    if not store.backend.exists(STORE_FILE):
        raise StoreError(f"{store.url!r} is not a ckpt_notebook store (no {STORE_FILE})",
                         url=store.url, hint="check --store")
    print(store.gc(dry_run=args.dry_run))
    return 0


def cmd_export(store: Store, args: argparse.Namespace) -> int:
    from .manager import export_weights

    info = _resolve(store, args.ref)
    keys = export_weights(store, info, args.out)
    print(f"exported {len(keys)} tensors of {info.id} to {args.out}")
    return 0


def cmd_diff(store: Store, args: argparse.Namespace) -> int:
    from .manager.maintenance import diff

    a, b, changes, same = diff(store, args.ref_a, args.ref_b)
    if args.json:
        _print_json({"from": a.id, "to": b.id, "unchanged": same,
                     "changes": [{"object": c.object, "tensor": c.path, "change": c.change,
                                  "detail": c.detail} for c in changes]})
        return 0
    print(f"{a.id} -> {b.id}: {len(changes)} tensor(s) differ, {same} unchanged")
    if changes:
        rows = [(c.object, c.path, c.change, c.detail or "") for c in changes]
        print(format_table(("OBJECT", "TENSOR", "CHANGE", "DETAIL"), rows))
    return 0


def cmd_policy(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance

    policy = policy_of(args)
    if policy is None:
        print(f"retention policy of {store.url}: {maintenance.load_policy(store).describe()}")
        return 0
    store.ensure_writable()
    maintenance.save_policy(store, policy)
    print(f"retention policy of {store.url} set: {policy.describe()}")
    _print_prunable(store, policy)
    return 0


def _print_prunable(store: Store, policy: Policy) -> None:
    from .manager import maintenance

    if policy.is_empty:
        return
    infos = store.list()
    doomed = sum(not st.kept for st in maintenance.statuses(store, infos, policy).values())
    if doomed:
        print(f"{doomed} of {len(infos)} checkpoint(s) are now prunable; the next save, or "
              "`ckpt prune`, deletes them (`ckpt prune --dry-run` lists them)")


def cmd_prune(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance

    policy = maintenance.load_policy(store)
    if policy.is_empty:
        print(f"nothing to prune: {store.url} has no retention policy, so every checkpoint "
              "is kept (set one with `ckpt policy --keep-last N ...`)")
        return 0
    report = maintenance.prune(store, dry_run=args.dry_run, policy=policy)
    print(f"policy: {policy.describe()}")
    print(report)
    if args.dry_run:
        for info in report.removed:
            print(f"  {info.id}  step {_opt(info.step)}  {format_metrics(info.metrics)}")
    return 0


def cmd_pin(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance

    info = maintenance.pin(store, args.ref)
    print(f"pinned {info.id}: retention keeps it until `ckpt unpin {info.id}`")
    return 0


def cmd_unpin(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance, resolve_ref

    info = resolve_ref(store, args.ref)
    if info.id not in store.pins.ids():
        print(f"{info.id} was not pinned")
        return 0
    maintenance.unpin(store, info.id)
    print(f"unpinned {info.id}: the retention policy decides about it again")
    return 0


def cmd_delete(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance

    target = delete_target(store, args.ref, yes=args.yes)
    if target is None:
        print("nothing deleted")
        return 1
    info = maintenance.delete(store, target, force=args.force)
    print(f"deleted {info.id} (its blobs are freed by `ckpt gc`)")
    return 0


def cmd_request_save(store: Store, args: argparse.Namespace) -> int:
    from .ui.saverequest import request_save_report

    print(request_save_report(store, tags=args.tag, lifetime_s=args.lifetime,
                              wait_s=args.wait))
    return 0


def cmd_copy(store: Store, args: argparse.Namespace) -> int:
    from .manager.hub import plan_copy

    plan = plan_copy(args.src, args.to, name=args.name, store=store, patterns=args.pattern,
                     excludes=args.exclude, dry_run=args.dry_run, remote_dir=args.remote_dir,
                     repo_type=args.repo_type, revision=args.revision,
                     archive_limits=dict(args.archive_limit),
                     open_to=lambda url: cli_store(url, args), terms=copy_terms())
    with progress_bar(plan.label, enabled=False if plan.dry_run else args.progress) as bar:
        result = plan.run(bar)
    if not isinstance(result, CheckpointInfo):  # a Hub upload
        print(result)
        return 0
    where = args.to or store.url
    what = "files" if result.kind == "files" else "training state"
    print(f"copied {args.src} to {result.id} ({what}) in {where}: "
          f"{format_bytes(result.logical_bytes)}, {format_bytes(result.new_bytes)} new")
    return 0


def cmd_dashboard(store: Store, args: argparse.Namespace) -> int:
    from .ui.dashboard.app import run

    args.store = store
    return run(args)


def cmd_repair(store: Store, args: argparse.Namespace) -> int:
    from .manager.repair import repair

    source = args.source and cli_store(args.source, args)
    report = repair(store, source=source, dry_run=args.dry_run)
    if args.json:
        _print_json(report.to_json())
    else:
        print(report)
    return 0 if report.ok else 1


def cmd_get(store: Store, args: argparse.Namespace) -> int:
    from .manager import materializing

    with progress_bar(f"get {args.ref}", enabled=args.progress) as bar:
        report = materializing.materialize_report(args.ref, args.dir, store=store,
                                                  progress=bar)
    print(report)
    return 0


# -- rendering (the tables and texts live in ui/render.py) ----------------------------------
def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _resolve(store: Store, ref: str) -> CheckpointInfo:
    from .manager import resolve_ref

    return resolve_ref(store, ref)


# -- parsing and entry point ------------------------------------------------------------------
HANDLERS: dict[str, Callable[[Store, argparse.Namespace], int]] = {
    "ls": cmd_ls, "show": cmd_show, "diff": cmd_diff, "verify": cmd_verify, "gc": cmd_gc,
    "export": cmd_export, "policy": cmd_policy, "prune": cmd_prune, "pin": cmd_pin,
    "unpin": cmd_unpin, "delete": cmd_delete, "request-save": cmd_request_save,
    "copy": cmd_copy, "get": cmd_get, "repair": cmd_repair, "dashboard": cmd_dashboard,
}


def build_parser() -> CliParser:
    """``ckpt``'s parser, its commands as :mod:`.ui.commands` declares them."""
    store_help = "store path or fsspec URL (default: $CKPT_NOTEBOOK_STORE or ./checkpoints)"
    common = CliParser(add_help=False)
    # SUPPRESS: an absent --store after the command keeps the one given before it.
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=store_help)
    parser = CliParser(
        prog="ckpt", description="Checkpoints of PyTorch training: list, inspect, diff, verify, "
        "gc, export, and retention (policy, prune, pin, delete); ask a running loop to save; "
        "copy folders, files, archives and checkpoints into named ones, and get them back. "
        "REF: latest, best.<metric>[:min|max], an id, a name or an id prefix.")
    parser.add_argument("--store", metavar="URL", default=None, help=store_help)
    parser.add_argument("--version", action="version", version=f"ckpt_notebook {__version__}")
    add_storage_option_arguments(parser, common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # none: the help
    for cmd in commands_of(CLI):
        p = sub.add_parser(cmd.name, parents=[common], help=cmd.help, description=cmd.help)
        p.set_defaults(func=HANDLERS[cmd.name], needs_store=cmd.needs_store)
        add_arguments(p, cmd, CLI)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ckpt``; returns the exit status (0 fine, 1 error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_command(argv)
    if args.command is None:  # `ckpt` alone: what it can do
        parser.print_help()
        return 0
    try:
        store = cli_store(args.store, args)
        if args.needs_store:  # a mistyped --store is not an empty store
            from .storage.presence import require_store

            require_store(store, fix="check --store (a store is made by its first save)")
        return int(args.func(store, args))
    except (CkptError, ValueError, OSError) as err:
        if isinstance(err, BrokenPipeError):  # `ckpt ls | head`: the reader went away
            _silence_stdout()
            return 1
        _fail(option_words(err, command(args.command), CLI) or type(err).__name__)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as err:  # a bug; still one line, and the type says where to look
        _fail(f"unexpected {type(err).__name__}: {err}")
    return 1


def _fail(message: str) -> None:
    print(f"ckpt: error: {' '.join(message.splitlines())}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
