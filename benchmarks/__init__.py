"""Benchmarks for ckpt_notebook: ratios against baselines measured in the same process.

``python -m benchmarks [--quick] [MODULE ...]`` runs every module in this package that
defines ``run(options: Options) -> dict`` (today: ``core``), prints a table per module and
writes ``benchmarks/results/<module>.json``. Helpers shared by the modules live here:
timing with repeats, the page-cache drop, machine facts, ratio checks and the table printer.

Timings on shared or virtual machines are noisy, so every measurement is repeated and the
median is reported next to every sample.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Options",
    "Timing",
    "check",
    "drop_page_cache",
    "format_table",
    "machine_info",
    "measure",
    "timed",
]

GB = 1e9  # throughputs are reported in GB/s (10^9 bytes per second)
MIB = 1 << 20
GIB = 1 << 30


@dataclass
class Options:
    """What the runner passes to every benchmark module."""

    quick: bool = False
    repeats: int = 5
    tmp_root: Path | None = None  # where temp files and stores go (default: the system temp)
    verbose: bool = True

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass
class Timing:
    """Repeated wall-clock samples of one operation (seconds)."""

    samples: list[float] = field(default_factory=list)
    nbytes: int | None = None  # bytes the operation moves, for a throughput
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def gb_s(self) -> float | None:
        if not self.nbytes or self.median <= 0:
            return None
        return self.nbytes / self.median / GB

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.median, 6),
                               "best_seconds": round(self.best, 6),
                               "samples": [round(s, 6) for s in self.samples]}
        if self.nbytes is not None:
            out["bytes"] = self.nbytes
            gb_s = self.gb_s
            out["gb_s"] = None if gb_s is None else round(gb_s, 4)
        if self.note:
            out["note"] = self.note
        return out


@contextlib.contextmanager
def timed(into: list[float]) -> Iterator[None]:
    """Append the wall-clock seconds of the ``with`` body to ``into``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into.append(time.perf_counter() - start)


def measure(fn: Callable[[], object], repeats: int, *, setup: Callable[[], object] | None = None,
            teardown: Callable[[], object] | None = None, nbytes: int | None = None,
            note: str = "") -> Timing:
    """Time ``fn`` ``repeats`` times; ``setup``/``teardown`` run untimed around each call."""
    timing = Timing(nbytes=nbytes, note=note)
    for _ in range(repeats):
        if setup is not None:
            setup()
        with timed(timing.samples):
            fn()
        if teardown is not None:
            teardown()
    return timing


def drop_page_cache(*, metadata: bool = True) -> bool:
    """``sync`` and drop the OS page cache so the next read comes from disk (needs root);
    ``metadata=False`` keeps cached directory entries and inodes.

    Returns whether it worked; callers fall back to warm-cache reads on both sides.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n" if metadata else "1\n")
    except OSError:
        return False
    return True


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file that a library wrote and closed (fsync on any descriptor of it works)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Check:
    """A ratio against its target."""

    name: str
    value: float
    op: str  # ">=" or "<="
    target: float
    meaning: str
    best: float | None = None  # the same ratio from the best (fastest) samples, for context

    @property
    def passed(self) -> bool:
        return self.meets(self.value)

    def meets(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value <= self.target

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": round(self.value, 4), "target": f"{self.op} {self.target}",
                               "pass": self.passed, "meaning": self.meaning}
        if self.best is not None:
            out.update(value_best=round(self.best, 4), pass_best=self.meets(self.best))
        return out


def check(name: str, value: float, op: str, target: float, meaning: str,
          best: float | None = None) -> Check:
    """A ratio (from medians) against its target; ``best`` is the ratio of best samples."""
    if op not in (">=", "<="):
        raise ValueError(f"op must be '>=' or '<=', not {op!r}")
    return Check(name, value, op, target, meaning, best)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _filesystem_of(path: Path) -> dict[str, Any]:
    """The mount that holds ``path``: device, type, free bytes."""
    best: tuple[str, str, str] | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype, *_ = line.split()
            if str(path).startswith(mnt) and (best is None or len(mnt) > len(best[1])):
                best = (dev, mnt, fstype)
    usage = os.statvfs(path)
    out: dict[str, Any] = {"path": str(path), "free_bytes": usage.f_bavail * usage.f_frsize}
    if best is not None:
        out.update(device=best[0], mount=best[1], type=best[2])
    return out


def machine_info(tmp_dir: Path) -> dict[str, Any]:
    """Facts that make a result comparable: CPU, memory, library versions, the disk used."""
    import ckpt_notebook

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _mem_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ckpt_notebook": ckpt_notebook.__version__,
        "git_commit": _git_commit(),
        "filesystem": _filesystem_of(tmp_dir),
    }
    for mod in ("torch", "safetensors", "numpy", "blake3"):
        with contextlib.suppress(ImportError):
            module = __import__(mod)
            info[mod] = str(getattr(module, "__version__", "?"))
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; numbers right-aligned, everything else left-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r]
                                            for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:] if r[i]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(row, widths, numeric, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True
