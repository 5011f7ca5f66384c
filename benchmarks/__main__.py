"""Run the benchmarks: ``python -m benchmarks [--quick] [MODULE ...]`` (``make bench``).

Every module of this package that defines ``run(options) -> dict`` is a benchmark; the dict
it returns is written to ``benchmarks/results/<module>.json``. ``--quick`` runs small sizes
as a smoke test and writes nothing unless ``--results DIR`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import Options

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BenchFn = Callable[[Options], dict[str, Any]]


def discover() -> dict[str, BenchFn]:
    """Benchmark modules by name, in alphabetical order (``core`` first)."""
    package = sys.modules[__package__ or "benchmarks"]
    found: dict[str, BenchFn] = {}
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                   if not m.name.startswith("_"))
    names.sort(key=lambda n: n != "core")
    for name in names:
        module = importlib.import_module(f"{package.__name__}.{name}")
        fn = getattr(module, "run", None)
        if callable(fn):
            found[name] = fn
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help="run only these benchmark modules (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 2 rounds: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of measurements (default 5, or 2 with --quick)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder for temp files and stores (default: the system temp)")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"where to write <module>.json (default {RESULTS_DIR}; "
                             "--quick writes only when this is given)")
    parser.add_argument("--list", action="store_true", help="list the benchmark modules")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = [m for m in args.modules if m not in available]
    if unknown:
        parser.error(f"unknown benchmark module(s) {', '.join(unknown)}; "
                     f"available: {', '.join(available)}")
    selected = args.modules or list(available)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    options = Options(quick=args.quick, repeats=repeats, tmp_root=args.tmp,
                      verbose=not args.quiet)
    results_dir = args.results or (None if args.quick else RESULTS_DIR)

    failed_targets: list[str] = []
    for name in selected:
        print(f"== benchmark {name}{' (quick)' if args.quick else ''} ==", flush=True)
        start = time.perf_counter()
        doc = available[name](options)
        doc = {"benchmark": name, "created": datetime.now(timezone.utc).isoformat(),
               "quick": args.quick, "repeats": repeats,
               "wall_seconds": round(time.perf_counter() - start, 2), **doc}
        text = json.dumps(doc, indent=2, sort_keys=False) + "\n"  # also checks it serializes
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)
            out = results_dir / f"{name}.json"
            out.write_text(text)
            print(f"wrote {out}")
        if doc.get("pass") is False:
            failed_targets.append(name)
    if failed_targets:
        print(f"targets missed in: {', '.join(failed_targets)} (see the tables above)")
    # Missed targets are findings, not errors: the exit status stays 0 so `make bench` completes.
    return 0


if __name__ == "__main__":
    sys.exit(main())
