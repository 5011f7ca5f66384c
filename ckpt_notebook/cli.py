"""``ckpt``: list, inspect, verify, garbage-collect and export checkpoints from a shell.

    ckpt ls [--json]                     every checkpoint, newest first, with its status
    ckpt show REF [--json]               one checkpoint's metadata and objects
    ckpt diff REF1 REF2                  which tensors changed (from hashes; reads no data)
    ckpt verify [REF | --all]            re-hash blobs; exit 1 if any does not match
    ckpt gc [--dry-run]                  remove unreferenced blobs and leftover temp files
    ckpt export REF OUT.safetensors      model weights that plain torch / safetensors load
    ckpt policy [--keep-last N] [--keep-best N --monitor M [--mode min|max]]
                [--keep-every STEPS] [--keep-within DURATION] | --clear
                                         show or set the store's retention policy
    ckpt prune [--dry-run]               delete what the policy does not keep
    ckpt pin REF / ckpt unpin REF        keep a checkpoint whatever the policy says / undo
    ckpt delete REF [--force] [--yes]    delete one checkpoint (named or pinned: --force;
                                         a REF other than its id or name asks, or --yes)
    ckpt request-save [--tag T]...       ask the training loop on this store to save at
                                         its next step()
    ckpt copy SRC --name NAME [--to URL] copy a folder, file, archive, URL or checkpoint into
                                         a named, write-once checkpoint (in --to, or here)
    ckpt copy SRC --to hf://owner/repo[@rev] [--pattern GLOB]... [--exclude GLOB]... [--dry-run]
                                         upload a checkpoint's files or a folder to the Hub
    ckpt get NAME DIR                    write a checkpoint's files into DIR (read-only);
                                         a folder that still verifies is reused
    ckpt repair [--from URL] [--dry-run] [--json]
                                         re-hash every blob, quarantine bad ones, fetch bad
                                         or missing ones from another store; exit 1 if any
                                         checkpoint stays broken

The retention policy is stored with the store (policy.json), so the CLI, the magics, the
dashboard and every Checkpointer on the store apply the same one.

Every command takes ``--store URL`` (default ``$CKPT_NOTEBOOK_STORE`` or ``./checkpoints``).
A REF is ``latest``, ``best.<metric>[:min|max]``, an id, a name or a unique id prefix.
Errors print one line, ``ckpt: error: ...``, and exit 1; usage errors
are one line too, pointing at ``--help``, and exit 2. ``ckpt`` alone prints the help.

A thin adapter: it parses arguments, calls the store or the manager, and renders. The
manager (and with it torch) is imported only by the commands that need it.
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
from .types import NAME_RULE, CheckpointInfo, format_bytes
from .ui.argtypes import archive_limit, checkpoint_name, count, duration
from .ui.cliparse import CliParser, cli_words, delete_target
from .ui.progress import progress_bar
from .ui.render import format_metrics, format_table, object_summary, short_time
from .ui.saverequest import add_request_save_arguments
from .ui.storeargs import (
    add_hub_arguments,
    add_storage_option_arguments,
    cli_store,
    hub_url,
    refuse_hub_flags,
)

if TYPE_CHECKING:
    from .retention import Policy, Status
    from .storage import Store

__all__ = ["main"]

_LS_HEADER = ("ID", "KIND", "RUN", "STEP", "CREATED", "METRICS", "SIZE", "NEW", "STATUS")
Progress = Callable[[int, int], None]


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
    objects = [object_summary(name, obj) for name, obj in doc["objects"].items()]
    files = doc.get("files") or {}
    if args.json:
        _print_json({"checkpoint": info.to_json(), "objects": objects,
                     "files": len(files), "library_versions": doc.get("library_versions", {})})
        return 0
    versions = doc.get("library_versions") or {}
    fields = [
        ("id", info.id), ("name", info.name or "-"), ("kind", info.kind),
        ("run", info.run or "-"), ("step", _opt(info.step)), ("epoch", _opt(info.epoch)),
        ("created", f"{short_time(info.created)}  ({info.created})"),
        ("metrics", format_metrics(info.metrics)), ("tags", ", ".join(info.tags) or "-"),
        ("parent", info.parent or "-"), ("notebook", info.notebook or "-"),
        ("source", info.source or "-"),
        ("size", f"{format_bytes(info.logical_bytes)} ({format_bytes(info.new_bytes)} new)"),
        ("blobs", str(len(doc["blobs"]))),
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
        file_rows = [(path, format_bytes(int(e["size"])), "x" if e.get("executable") else "")
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
        raise StoreError(f"{store.url!r} is not a ckpt_notebook store (no {STORE_FILE}); "
                         "check --store")
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


_POLICY_OPTIONS = ("keep_last", "keep_best", "monitor", "mode", "keep_every", "keep_within",
                   "scope")


def cmd_policy(store: Store, args: argparse.Namespace) -> int:
    from .manager import maintenance
    from .retention import Policy

    rules = {k: getattr(args, k) for k in _POLICY_OPTIONS if getattr(args, k) is not None}
    if not args.clear and not rules:
        print(f"retention policy of {store.url}: {maintenance.load_policy(store).describe()}")
        return 0
    if rules and args.clear:
        raise ValueError("--clear removes every rule; give it alone, or give only the rules "
                         "(setting rules replaces the whole policy)")
    if "keep_best" in rules and "monitor" not in rules:
        raise ValueError("--keep-best needs --monitor METRIC, the metric to rank by "
                         "(e.g. --keep-best 2 --monitor val_loss)")
    if "keep_best" not in rules and rules.keys() & {"monitor", "mode"}:
        raise ValueError("--monitor and --mode say what --keep-best ranks by; give "
                         "--keep-best N too (e.g. --keep-best 2 --monitor val_loss)")
    policy = Policy(**rules)
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


ARCHIVE_LIMIT_HELP = ("archives: raise a limit on what one may extract, on purpose: "
                      "size=200G, ratio=1000 or entries=1000000 (defaults: 64G, 100, 100000; "
                      "repeatable)")


def cmd_copy(store: Store, args: argparse.Namespace) -> int:
    hub = (args.to or "").startswith("hf://")
    if hub:
        return _upload(store, args)
    refuse_hub_flags(args)
    if args.pattern or args.exclude or args.dry_run:
        raise ValueError("--pattern, --exclude and --dry-run go with Hub uploads "
                         "(--to hf://owner/repo[@revision])")
    if not args.name:
        raise ValueError("ckpt copy needs --name NAME, the new checkpoint's name (or --to "
                         "hf://owner/repo to upload to the Hub instead)")
    from .manager import copying

    with progress_bar(f"copy {args.name}", enabled=args.progress) as bar:
        info = copying.copy(args.src, args.name, to=args.to and cli_store(args.to, args),
                            store=store, progress=bar,
                            archive_limits=dict(args.archive_limit))
    where = args.to or store.url
    what = "files" if info.kind == "files" else "training state"
    print(f"copied {args.src} to {info.id} ({what}) in {where}: "
          f"{format_bytes(info.logical_bytes)}, {format_bytes(info.new_bytes)} new")
    return 0


def _upload(store: Store, args: argparse.Namespace) -> int:
    from .manager.hub import upload_to_hub

    if args.name:
        raise ValueError(f"--name is not used with a Hub upload: the files go to {args.to} as "
                         "they are (leave --name out)")
    with progress_bar(f"upload {args.src}",
                      enabled=False if args.dry_run else args.progress) as bar:
        report = upload_to_hub(args.src, hub_url(args), store=store, patterns=args.pattern,
                               excludes=args.exclude, dry_run=args.dry_run, progress=bar)
    print(report)
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
def build_parser() -> CliParser:
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

    def add(name: str, func: Callable[[Store, argparse.Namespace], int],
            text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(func=func)
        return p

    p = add("ls", cmd_ls, "list every checkpoint, newest first (as every UI lists them)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p = add("show", cmd_show, "show one checkpoint's metadata and objects")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("verify", cmd_verify, "re-hash the blobs of a checkpoint (default: latest)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("ref", metavar="REF", nargs="?")
    which.add_argument("--all", action="store_true", help="verify every checkpoint")
    p = add("gc", cmd_gc, "remove unreferenced blobs and leftover temp files")
    p.add_argument("--dry-run", action="store_true", help="only report what would go")
    p = add("export", cmd_export, "write a checkpoint's model weights as .safetensors or .pt")
    p.add_argument("ref", metavar="REF")
    p.add_argument("out", metavar="OUT", help="file ending in .safetensors, .pt or .pth")
    p = add("diff", cmd_diff, "which tensors changed between two checkpoints (from hashes)")
    p.add_argument("ref_a", metavar="REF1")
    p.add_argument("ref_b", metavar="REF2")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("policy", cmd_policy, "show the store's retention policy, or set it (the rules "
            "given replace the whole policy; a checkpoint is kept when any rule keeps it)")
    p.add_argument("--keep-last", type=count, metavar="N", help="the N newest")
    p.add_argument("--keep-best", type=count, metavar="N", help="the N best by --monitor")
    p.add_argument("--monitor", type=_metric_name, metavar="METRIC", help="e.g. val_loss")
    p.add_argument("--mode", choices=("min", "max"),
                   help="lower or higher is better (default: min for losses and errors)")
    p.add_argument("--keep-every", type=count, metavar="STEPS",
                   help="those whose step is a multiple of STEPS")
    p.add_argument("--keep-within", type=duration, metavar="DURATION",
                   help="those younger than DURATION: 3600, 90s, 10min, 2h, 1d, 1h30m")
    p.add_argument("--scope", choices=("run", "store"),
                   help="run (default): the rules apply within each run, so one run's saves "
                   "never make another's prunable; store: they span every run")
    p.add_argument("--clear", action="store_true", help="remove the policy: keep everything")
    p = add("prune", cmd_prune, "delete the checkpoints the retention policy does not keep "
            "(never named or pinned ones, nor the newest)")
    p.add_argument("--dry-run", action="store_true", help="only list what would go")
    p = add("pin", cmd_pin, "keep a checkpoint whatever the retention policy says")
    p.add_argument("ref", metavar="REF")
    p = add("unpin", cmd_unpin, "let the retention policy decide about a checkpoint again")
    p.add_argument("ref", metavar="REF")
    p = add("delete", cmd_delete, "delete one checkpoint (named or pinned ones need --force)")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--force", action="store_true", help="also a named or pinned checkpoint")
    p.add_argument("--yes", action="store_true", help="no question when REF is not the id or "
                   "name (latest, best.<metric>, a prefix): delete what it names now")
    p = add("request-save", cmd_request_save, "ask the training loop running on this store "
            "to save at its next step()")
    p.add_argument("--tag", action="append", default=[], metavar="T",
                   help="a tag for the requested checkpoint (repeatable)")
    add_request_save_arguments(p)
    progress_help = "show a progress bar (default: when stderr is a terminal)"
    p = add("copy", cmd_copy, "copy a folder, file, archive (.zip .tar .tar.gz .tgz .tar.bz2, "
            "extracted), URL or checkpoint REF into a named, write-once checkpoint; or upload "
            "a checkpoint's files or a folder to a Hugging Face Hub repo (--to hf://...)")
    p.add_argument("src", metavar="SRC", help="a folder, file, archive, URL or REF")
    p.add_argument("--name", type=checkpoint_name, metavar="NAME",
                   help=f"the new checkpoint's name: {NAME_RULE}")
    p.add_argument("--to", metavar="URL", help="another store (any fsspec URL; default: "
                   "--store), or hf://owner/repo[@revision] to upload there")
    p.add_argument("--pattern", action="append", default=[], metavar="GLOB",
                   help="hf:// uploads: only files matching GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="hf:// uploads: leave out files matching GLOB (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="hf:// uploads: only list the files")
    add_hub_arguments(p)
    p.add_argument("--archive-limit", type=archive_limit, action="append", default=[],
                   metavar="KEY=VALUE", help=ARCHIVE_LIMIT_HELP)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=progress_help)
    p = add("get", cmd_get, "write a checkpoint's files into a local folder (read-only "
            "files); a folder that still verifies is reused, nothing else is overwritten")
    p.add_argument("ref", metavar="NAME", help="a checkpoint name (or any REF)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=progress_help)
    p = add("repair", cmd_repair, "re-hash every blob of every checkpoint, quarantine bad "
            "ones, and fetch bad or missing ones from another store (--from), verified")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="a healthy copy: a mirror, or the store a copy came from")
    p.add_argument("--dry-run", action="store_true", help="change nothing; report what a "
                   "repair would fix")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("dashboard", cmd_dashboard, "serve the dashboard on 127.0.0.1 (Ctrl-C stops it); "
            "every request needs the token in the URL it prints")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else is reachable "
                        "from other machines, and is said so)")
    p.add_argument("--show", action="store_true", help="open it in a browser")
    from .ui.dashboard.access import add_token_arguments

    add_token_arguments(p)
    return parser


def _metric_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a metric name such as val_loss")
    return text


NEEDS_A_STORE = frozenset({"ls", "show", "verify", "gc", "export", "diff", "prune", "pin",
                           "unpin", "delete", "request-save"})


def main(argv: list[str] | None = None) -> int:
    """Run ``ckpt``; returns the exit status (0 fine, 1 error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_command(argv)
    if args.command is None:  # `ckpt` alone: what it can do
        parser.print_help()
        return 0
    try:
        store = cli_store(args.store, args)
        if args.command in NEEDS_A_STORE:  # a mistyped --store is not an empty store
            from .storage.presence import require_store

            require_store(store, fix="check --store (a store is made by its first save)")
        return int(args.func(store, args))
    except (CkptError, ValueError, OSError) as err:
        if isinstance(err, BrokenPipeError):  # `ckpt ls | head`: the reader went away
            _silence_stdout()
            return 1
        _fail(str(err) or type(err).__name__)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as err:  # a bug; still one line, and the type says where to look
        _fail(f"unexpected {type(err).__name__}: {err}")
    return 1


def _fail(message: str) -> None:
    print(f"ckpt: error: {' '.join(cli_words(message).splitlines())}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
