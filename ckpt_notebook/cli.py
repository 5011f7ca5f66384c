"""``ckpt``: list, inspect, verify, garbage-collect and export checkpoints from a shell.

    ckpt ls [--json]                     every checkpoint, oldest first
    ckpt show REF [--json]               one checkpoint's metadata and objects
    ckpt verify [REF | --all]            re-hash blobs; exit 1 if any does not match
    ckpt gc [--dry-run]                  remove unreferenced blobs and leftover temp files
    ckpt export REF OUT.safetensors      model weights that plain torch / safetensors load

Every command takes ``--store URL`` (default ``$CKPT_NOTEBOOK_STORE`` or ``./checkpoints``).
A REF is ``latest``, ``best.<metric>[:min|max]``, an id, a name or a unique id prefix.
Errors print one line, ``ckpt: error: ...``, and exit 1; usage errors exit 2.

A thin adapter: it parses arguments, calls the store or the manager, and renders. The
manager (and with it torch) is imported only by the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import CkptError, StoreError
from .types import CheckpointInfo, format_bytes

if TYPE_CHECKING:
    from .storage import Store

__all__ = ["main"]

_LS_HEADER = ("ID", "RUN", "STEP", "CREATED", "METRICS", "SIZE", "NEW")


# -- commands ---------------------------------------------------------------------------------
def cmd_ls(store: Store, args: argparse.Namespace) -> int:
    infos = store.list()
    if args.json:  # one compact entry per line: readable, and the C encoder keeps it fast
        print("[" + ",\n ".join(json.dumps(i.to_json()) for i in infos) + "]")
        return 0
    if not infos:
        print(f"no checkpoints in {store.url} yet")
        return 0
    rows = [(i.id + (" *" if i.named else ""), i.run or "-", _opt(i.step), short_time(i.created),
             format_metrics(i.metrics), format_bytes(i.logical_bytes), format_bytes(i.new_bytes))
            for i in infos]
    print(format_table(_LS_HEADER, rows, right=(2, 5, 6)))
    if any(i.named for i in infos):
        print("* named (write-once, never pruned)")
    return 0


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
    return 0


def cmd_verify(store: Store, args: argparse.Namespace) -> int:
    if args.all:
        ids = [i.id for i in store.list()]
        if not ids:
            print(f"no checkpoints in {store.url} to verify")
            return 0
    else:
        ids = [_resolve(store, args.ref or "latest").id]
    bad = 0
    for ckpt_id in ids:
        problems = store.verify(ckpt_id)
        if not problems:
            print(f"OK  {ckpt_id}")
        for problem in problems:
            print(f"BAD {problem}")
        bad += bool(problems)
    if bad:
        print(f"ckpt: error: {bad} of {len(ids)} checkpoint(s) failed verification",
              file=sys.stderr)
        return 1
    return 0


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


# -- rendering --------------------------------------------------------------------------------
def short_time(created: str) -> str:
    """``2024-05-01T12:00:00.123456+00:00`` -> ``2024-05-01 14:00:00`` in local time."""
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return created or "-"
    if when.tzinfo is not None:
        when = when.astimezone()
    return f"{when:%Y-%m-%d %H:%M:%S}"


def format_metrics(metrics: Any) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={'-' if v is None else v}"
             for k, v in metrics.items()]
    return " ".join(parts) or "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[int] = ()) -> str:
    widths = [max(len(str(r[c])) for r in (header, *rows)) for c in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [str(v).rjust(w) if c in right else str(v).ljust(w)
                 for c, (v, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def object_summary(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    tensors = obj.get("tensors", ())
    nbytes = sum(int(t.get("nbytes", 0)) for t in tensors)
    nbytes += sum(int(p.get("size", 0)) for p in obj.get("pickles", ()))
    return {"name": name, "kind": obj.get("kind", "?"), "type": obj.get("type", "?"),
            "tensors": len(tensors), "bytes": nbytes}


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _resolve(store: Store, ref: str) -> CheckpointInfo:
    from .manager import resolve_ref

    return resolve_ref(store, ref)


# -- parsing and entry point ------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    store_help = "store path or fsspec URL (default: $CKPT_NOTEBOOK_STORE or ./checkpoints)"
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an absent --store after the command keeps the one given before it.
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=store_help)
    parser = argparse.ArgumentParser(
        prog="ckpt", description="Checkpoints of PyTorch training: list, inspect, verify, "
        "gc and export. REF: latest, best.<metric>[:min|max], an id, a name or an id prefix.")
    parser.add_argument("--store", metavar="URL", default=None, help=store_help)
    parser.add_argument("--version", action="version", version=f"ckpt_notebook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[Store, argparse.Namespace], int],
            text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(func=func)
        return p

    p = add("ls", cmd_ls, "list every checkpoint, oldest first")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ckpt``; returns the exit status (0 fine, 1 error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        from .storage import Store

        return int(args.func(Store(args.store), args))
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
    print(f"ckpt: error: {' '.join(message.splitlines())}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
