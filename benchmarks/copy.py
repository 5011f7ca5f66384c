"""Copying a folder into a named checkpoint on S3 against a plain ``s3fs`` put, in one process.

A folder of 1 GiB in 1,000 files of mixed sizes (``--quick``: 64 MiB in 100 files) is written
under the temp folder, and a real S3-compatible server (``moto_server``, the one the tests use)
is started on 127.0.0.1. The measurements run in rounds, each round running every measurement
once into fresh buckets (so drifts of the machine reach all alike); a measurement's value is the
median over rounds:

``s3fs_put``      ``S3FileSystem.put(folder, "bucket/prefix/", recursive=True)``: the baseline
``copy``          ``copy(folder, name, to=Store("s3://bucket/store", **options))`` into a new
                  store: hash every file, upload every blob, commit the manifest (a fresh hash
                  cache, as for a folder never copied before)
``recopy``        ``copy`` of the unchanged folder again, under a new name, into the same store
                  (the hash cache now knows the files: nothing is read, nothing but the manifest
                  travels)
``recopy_nocache`` the same with an empty hash cache (every file read and hashed; the blobs are
                  found in the store, so still nothing but the manifest travels) - info only

Bytes and requests sent are counted on the client (a botocore ``before-send`` hook on the
filesystem's S3 client: request bodies' ``Content-Length``), so no proxy slows either side.
moto runs in one Python process on the same machine, so every request costs CPU both sides
share (a listing of 1,000 keys takes moto about 0.3 s): request counts matter more here than
on real S3, and the load average is recorded with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import GIB, MIB, Options, check, format_table, machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "copy.json"
FULL = (GIB, 1000)
QUICK = (64 * MIB, 100)
TARGETS = {
    "copy_vs_s3fs_put": ("s3fs_put", "copy", ">=", 0.8,
                         "copy throughput / s3fs put throughput (time of put / time of copy)"),
    "recopy_time_vs_copy": ("recopy", "copy", "<=", 0.02,
                            "re-copy of the unchanged folder: its time / the first copy's"),
}
BYTES_TARGET = ("recopy_bytes_vs_copy", "<=", 0.02,
                "re-copy of the unchanged folder: bytes uploaded / the first copy's")


# -- the folder -------------------------------------------------------------------------------
def file_sizes(total: int, count: int) -> list[int]:
    """Mixed sizes summing to ``total``: 1% large (half the bytes), 9% medium (a third), the
    rest small, as a model folder of weights, shards, configs and tokenizer files."""
    n_large = max(1, count // 100)
    n_medium = max(1, count * 9 // 100)
    n_small = count - n_large - n_medium
    large, medium = total // 2 // n_large, total // 3 // n_medium
    small_total = total - large * n_large - medium * n_medium
    sizes = [large] * n_large + [medium] * n_medium
    # small files from 1 KiB up, growing linearly, summing to small_total
    step = max(0, (2 * small_total // n_small - 2048) // max(1, n_small - 1))
    smalls = [1024 + step * i for i in range(n_small)]
    smalls[-1] += small_total - sum(smalls)
    return sizes + smalls


def make_folder(root: Path, total: int, count: int, seed: int = 0) -> int:
    """Write ``count`` files of random bytes (``total`` in all) under ``root``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    written = 0
    for i, size in enumerate(file_sizes(total, count)):
        path = root / f"d{i % 10}" / f"part-{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(size))
        written += size
    return written


# -- counting what travels ----------------------------------------------------------------------
@dataclass
class Traffic:
    """Requests and request-body bytes an S3 filesystem sent (a botocore before-send hook)."""

    requests: dict[str, int] = field(default_factory=dict)
    body_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, request: Any, **_: Any) -> None:
        headers = request.headers
        size = headers.get("X-Amz-Decoded-Content-Length") or headers.get("Content-Length")
        body = request.body
        n = int(size) if size else (len(body) if isinstance(body, (bytes, bytearray)) else 0)
        with self._lock:
            self.requests[request.method] = self.requests.get(request.method, 0) + 1
            self.body_bytes += n

    def attach(self, fs: Any) -> Traffic:
        fs.connect()  # s3fs makes its client lazily
        fs.s3.meta.events.register("before-send.s3", self.hook)
        return self

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return sum(self.requests.values()), self.body_bytes

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.requests.items())), "body_bytes": self.body_bytes}


# -- one round ----------------------------------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    body_bytes: int
    requests: dict[str, int]


def _timed(traffic: Traffic, fn: Callable[[], object]) -> Sample:
    before = dict(traffic.requests), traffic.body_bytes
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    requests = {k: v - before[0].get(k, 0) for k, v in traffic.requests.items()
                if v != before[0].get(k, 0)}
    return Sample(seconds, traffic.body_bytes - before[1], requests)


def one_round(server: Any, folder: Path, work: Path, index: int) -> dict[str, Sample]:
    import s3fs

    from ckpt_notebook.manager.copying import copy
    from ckpt_notebook.manager.sources import HashCache
    from ckpt_notebook.storage import Store

    out: dict[str, Sample] = {}
    options = server.storage_options
    bucket = server.make_bucket(f"base{index}")
    fs = s3fs.S3FileSystem(**options)
    base_traffic = Traffic().attach(fs)
    out["s3fs_put"] = _timed(base_traffic, lambda: fs.put(str(folder), f"{bucket}/folder/",
                                                          recursive=True))

    bucket2 = server.make_bucket(f"ckpt{index}")
    store = Store(server.url(bucket2, "store"), **options)
    traffic = Traffic().attach(store.backend.fs)
    cache = HashCache(work / f"hashes-{index}.sqlite3")
    out["copy"] = _timed(traffic, lambda: copy(folder, "first", to=store, hash_cache=cache))
    out["recopy"] = _timed(traffic, lambda: copy(folder, "again", to=store, hash_cache=cache))
    cold = HashCache(work / f"hashes-{index}-cold.sqlite3")
    out["recopy_nocache"] = _timed(traffic, lambda: copy(folder, "again-nocache", to=store,
                                                         hash_cache=cold))
    cache.close()
    cold.close()
    problems = store.verify("first")
    if problems:
        raise RuntimeError(f"the copy does not verify: {problems[0]}")
    for b in (bucket, bucket2):  # free moto's memory for the next round
        fs.rm(b, recursive=True)
    return out


# -- the benchmark --------------------------------------------------------------------------------
def _start_server() -> Any:
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    servers = importlib.import_module("servers")  # the tests' moto_server wrapper
    return servers.S3Server().start()


def _summary(samples: list[Sample]) -> dict[str, Any]:
    seconds = [s.seconds for s in samples]
    return {"seconds": round(statistics.median(seconds), 4), "best_seconds": round(min(seconds), 4),
            "samples": [round(s, 4) for s in seconds],
            "body_bytes": int(statistics.median(s.body_bytes for s in samples)),
            "requests": samples[-1].requests}


def run(options: Options | bool = False) -> dict[str, Any]:
    """Run the benchmark; ``options`` is the runner's :class:`Options` or just ``quick``."""
    if not isinstance(options, Options):
        options = Options(quick=bool(options), repeats=1 if options else 3)
    total, count = QUICK if options.quick else FULL
    tmp_root = options.tmp_root or Path(tempfile.gettempdir())
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-copy-", dir=tmp_root))
    server = None
    try:
        folder = work / "folder"
        options.log(f"writing {total / MIB:.0f} MiB in {count} files under {folder}")
        nbytes = make_folder(folder, total, count)
        options.log("starting moto_server")
        server = _start_server()
        rounds: dict[str, list[Sample]] = {}
        load_before = os.getloadavg()[0]
        for i in range(options.repeats):
            options.log(f"round {i + 1} of {options.repeats}")
            for name, sample in one_round(server, folder, work, i).items():
                rounds.setdefault(name, []).append(sample)
                options.log(f"  {name}: {sample.seconds:.3f} s, "
                            f"{sample.body_bytes / MIB:.2f} MiB sent, {sample.requests}")
        machine = machine_info(work)
        machine["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        for mod in ("s3fs", "fsspec", "botocore", "moto"):
            with contextlib.suppress(ImportError):
                machine[mod] = str(getattr(__import__(mod), "__version__", "?"))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return _report(rounds, nbytes, count, machine)


def _report(rounds: dict[str, list[Sample]], nbytes: int, count: int,
            machine: dict[str, Any]) -> dict[str, Any]:
    med = {k: statistics.median(s.seconds for s in v) for k, v in rounds.items()}
    best = {k: min(s.seconds for s in v) for k, v in rounds.items()}
    checks = [check(name, med[a] / med[b], op, target, meaning, best=best[a] / best[b])
              for name, (a, b, op, target, meaning) in TARGETS.items()]
    first_bytes = statistics.median(s.body_bytes for s in rounds["copy"])
    again_bytes = statistics.median(s.body_bytes for s in rounds["recopy"])
    checks.append(check(BYTES_TARGET[0], again_bytes / first_bytes, *BYTES_TARGET[1:]))
    measurements = {k: {**_summary(v), "gb_s": round(nbytes / med[k] / 1e9, 4)}
                    for k, v in rounds.items()}
    print(format_table(
        ["measurement", "median s", "best s", "GB/s", "MiB sent", "requests"],
        [[k, f"{med[k]:.3f}", f"{best[k]:.3f}", f"{nbytes / med[k] / 1e9:.3f}",
          f"{m['body_bytes'] / MIB:.2f}", sum(m["requests"].values())]
         for k, m in measurements.items()]))
    print(format_table(["ratio", "value", "target", "pass"],
                       [[c.name, f"{c.value:.4f}", f"{c.op} {c.target}", c.passed]
                        for c in checks]))
    return {"machine": machine, "method": (__doc__ or "").strip(),
            "folder": {"bytes": nbytes, "files": count},
            "measurements": measurements,
            "checks": {c.name: c.to_json() for c in checks},
            "pass": all(c.passed for c in checks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.copy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="64 MiB in 100 files, one round: a smoke run (writes nothing "
                             "unless --results is given)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the data")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    start = time.perf_counter()
    doc = run(Options(quick=args.quick, repeats=repeats, tmp_root=args.tmp))
    doc = {"benchmark": "copy", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "quick": args.quick, "repeats": repeats,
           "wall_seconds": round(time.perf_counter() - start, 2), **doc}
    out = args.results or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
