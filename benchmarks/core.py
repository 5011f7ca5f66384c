"""Core save and restore speed of ckpt_notebook against plain baselines, in one process.

For a model state of 100 MiB and of 1 GiB, in that order (fp32 Linear layers of 2-16 and
8-64 MiB weights plus small biases; ``--quick``: 8 MiB and 64 MiB), on the same disk. The
measurements run in rounds, each round running every measurement once (so drifts of the
machine reach all alike); a measurement's value is the median over rounds (the best
sample is reported too):

baselines
    ``raw_write``        the tensors' bytes written back to back into one new file, fsync
    ``raw_write_direct`` the same with O_DIRECT through one aligned 8 MiB buffer (info)
    ``torch_save``       ``torch.save(state_dict)`` into a new file, fsync
    ``safetensors_save`` ``safetensors.torch.save_file(state_dict)`` into a new file, fsync
    ``memory_copy``      ``{k: v.clone() for k, v in state_dict().items()}`` (fresh memory)
    ``memory_copy_warm`` ``copy_`` of every tensor into buffers allocated beforehand (info)
    ``raw_read``         the raw_write file read into one new ``bytearray`` (``readinto``)
    ``safetensors_load`` ``safetensors.torch.load_file`` + ``load_state_dict`` (info)

ckpt_notebook (``Checkpointer(store, model=model, rng=False)``, so the tensor path is measured)
    ``sync_save``        ``save(wait=True)`` into a new, empty store with a new Checkpointer
                         (every byte is new; a first save reads tensors in place and keeps
                         no host copy)
    ``sync_save_warm``   ``save(wait=True)`` after every tensor changed, same Checkpointer
                         and store as before (tensors read in place, their host copies
                         refreshed alongside the writes)
    ``save_10pct``       ``save(wait=True)`` after ~10% of the bytes changed, same Checkpointer
                         (compared with ``sync_save_warm``: the same conditions, all changed):
                         tensors that match their host copy are neither hashed nor written
    ``async_save_warm``  ``save()`` + ``wait()`` (async, the default) after every tensor
                         changed, same Checkpointer (info)
    ``async_save_10pct`` the same after ~10% of the bytes changed (info): tensors whose
                         snapshot buffer already holds their bytes are neither copied nor hashed
    ``async_stall_first`` how long ``save()`` (async) blocks the caller, a new Checkpointer
    ``async_stall_later`` the same on its 2nd and 3rd save (host buffers reused), every
                         tensor changed before each; ``wait()`` is outside the timed region
    ``restore``          ``restore("latest")``: read every blob, verify its BLAKE3 hash, and
                         copy into the existing model (``load_state_dict``)

Every write starts from the same state: ``sync``, then the page cache dropped (when
allowed), so no write pays for what an earlier one left dirty or cached. ckpt_notebook
writes tensors of 4 MiB and more with direct I/O (O_DIRECT); the baselines write through
the page cache as ``torch.save`` and safetensors do, and ``raw_write_direct`` shows what
the disk does without it.

Reads are timed with a cold page cache (``sync`` + ``drop_caches`` before each run) when that
is allowed, else warm on both sides; warm-cache reads are reported as well. Ratios are of
medians; "of bests" repeats them with each side's fastest sample, a check on noise from other
processes (the load average is recorded).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from . import (
    GIB,
    MIB,
    Check,
    Options,
    Timing,
    check,
    drop_page_cache,
    format_table,
    fsync_path,
    machine_info,
    timed,
)

# Smaller first: the larger size writes tens of GiB, and the virtual disk here stays busy
# with them for a while afterwards, which small writes feel most.
FULL_SIZES = (("100 MiB", 100 * MIB), ("1 GiB", GIB))
QUICK_SIZES = (("8 MiB", 8 * MIB), ("64 MiB", 64 * MIB))
CHANGED_FRACTION = 0.10
IN_FEATURES = 1024
FREE_SPACE_FACTOR = 20  # a size's run keeps about this many copies of the state on disk

MEASUREMENTS = (
    "raw_write", "raw_write_direct", "torch_save", "safetensors_save", "sync_save",
    "sync_save_warm", "save_10pct", "async_save_warm", "async_save_10pct",
    "memory_copy", "memory_copy_warm", "async_stall_first", "async_stall_later",
    "raw_read", "restore", "safetensors_load", "raw_read_warm", "restore_warm",
)
# Every ratio is time[first] / time[second], so throughput ratios put the baseline first.
TARGETS = {
    "sync_save_vs_raw_write": ("raw_write", "sync_save", ">=", 0.9,
                               "sync save throughput / raw write throughput"),
    "async_stall_first_vs_copy": ("async_stall_first", "memory_copy", "<=", 1.5,
                                  "first async save() stall / plain memory copy"),
    "async_stall_later_vs_copy": ("async_stall_later", "memory_copy", "<=", 1.5,
                                  "later async save() stall / plain memory copy"),
    "save_10pct_vs_full_save": ("save_10pct", "sync_save_warm", "<=", 0.3,
                                "~10%-changed save / all-changed save, same Checkpointer"),
    "restore_vs_raw_read": ("raw_read", "restore", ">=", 0.9,
                            "restore throughput / raw read throughput"),
}
INFO_RATIOS = {
    "sync_save_vs_raw_write_direct": ("raw_write_direct", "sync_save"),
    "torch_save_vs_raw_write": ("raw_write", "torch_save"),
    "safetensors_save_vs_raw_write": ("raw_write", "safetensors_save"),
    "sync_save_warm_vs_raw_write": ("raw_write", "sync_save_warm"),
    "save_10pct_vs_sync_save": ("save_10pct", "sync_save"),
    "async_save_10pct_vs_async_full": ("async_save_10pct", "async_save_warm"),
    "async_stall_later_vs_warm_copy": ("async_stall_later", "memory_copy_warm"),
    "restore_vs_safetensors_load": ("safetensors_load", "restore"),
    "restore_warm_vs_raw_read_warm": ("raw_read_warm", "restore_warm"),
}


# -- the state -------------------------------------------------------------------------------
def weight_sizes(total: int) -> list[int]:
    """Bytes of each weight: a repeating [big, big/2, big/4, big/8, big/8] pattern summing to
    total, so that whole layers can make up close to 10% of the state.

    ``big`` is 64 MiB, halved until it is at most a quarter of ``total``.
    """
    big = 64 * MIB
    while big > total // 4 and big > 256 << 10:
        big //= 2
    pattern = [big, big // 2, big // 4, big // 8, big // 8]
    sizes: list[int] = []
    left = total
    while left > 0:
        size = min(pattern[len(sizes) % len(pattern)], left)
        sizes.append(size)
        left -= size
    return sizes


def build_model(total: int, seed: int = 0) -> torch.nn.ModuleList:
    """Linear layers whose fp32 weights total ``total`` bytes, with random (distinct) values,
    so no two tensors share bytes and content-addressed dedup cannot skip any."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for size in weight_sizes(total):
        out_features = size // (4 * IN_FEATURES)
        layer = torch.nn.Linear(IN_FEATURES, out_features, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            layer.weight.uniform_(-1, 1, generator=gen)
            layer.bias.uniform_(-1, 1, generator=gen)
        layers.append(layer)
    return torch.nn.ModuleList(layers)


def state_bytes(model: torch.nn.Module) -> int:
    return sum(t.nbytes for t in model.state_dict().values())


def tensor_bytes(t: torch.Tensor) -> memoryview:
    return t.detach().reshape(-1).view(torch.uint8).numpy().data


def pick_changed(model: torch.nn.ModuleList, fraction: float) -> list[int]:
    """Layers to change so that close to ``fraction`` of the state's bytes change: largest
    first, each taken if the total stays within 5% above the target."""
    target = fraction * state_bytes(model)
    order = sorted(range(len(model)), key=lambda i: (-state_bytes(model[i]), i))
    chosen: list[int] = []
    changed = 0
    for i in order:
        size = state_bytes(model[i])
        if changed + size <= target * 1.05:
            chosen.append(i)
            changed += size
        if changed >= target:
            break
    return sorted(chosen) or [len(model) - 1]


@torch.no_grad()
def change(model: torch.nn.ModuleList, layers: Iterable[int]) -> None:
    for i in layers:
        for p in model[i].parameters():
            p.add_(1.0)


# -- baselines -------------------------------------------------------------------------------
def write_all(fd: int, view: memoryview) -> None:
    while view.nbytes:
        n = os.write(fd, view)
        view = view[n:]


def raw_write(model: torch.nn.Module, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for t in model.state_dict().values():
            write_all(fd, tensor_bytes(t))
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_write_direct(model: torch.nn.Module, path: Path) -> None:
    """The same bytes with O_DIRECT, through one reused page-aligned buffer (the simple way
    to write with direct I/O): what the disk does when the page cache is left out."""
    import mmap

    block = 8 * MIB
    buf = memoryview(mmap.mmap(-1, block))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0), 0o644)
    fill = size = 0
    try:
        for t in model.state_dict().values():
            view = tensor_bytes(t)
            size += view.nbytes
            while view.nbytes:
                k = min(view.nbytes, block - fill)
                buf[fill:fill + k] = view[:k]
                fill, view = fill + k, view[k:]
                if fill == block:
                    write_all(fd, buf)
                    fill = 0
        if fill:
            padded = fill + -fill % 4096
            buf[fill:padded] = bytes(padded - fill)
            write_all(fd, buf[:padded])
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_read(path: Path, size: int) -> bytearray:
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as f:
        got = f.readinto(buf)
    if got != size:
        raise RuntimeError(f"{path}: read {got} of {size} bytes")
    return buf


def torch_save(model: torch.nn.Module, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(model.state_dict(), f)
        f.flush()
        os.fsync(f.fileno())


def safetensors_save(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(path))
    fsync_path(path)


def safetensors_load(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def memory_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- one size --------------------------------------------------------------------------------
class SizeRun:
    """Every measurement for one state size, in one temp folder.

    The measurements are interleaved: each round runs every one of them once, so slow
    drifts of the machine (disk write-back bursts, other processes) reach all of them alike.
    """

    def __init__(self, label: str, total: int, options: Options, work: Path) -> None:
        self.label = label
        self.total = total
        self.options = options
        self.work = work
        self.model = build_model(total)
        self.nbytes = state_bytes(self.model)
        self.cold_reads = drop_page_cache()
        self.changed_layers = pick_changed(self.model, CHANGED_FRACTION)
        self.changed_bytes = sum(state_bytes(self.model[i]) for i in self.changed_layers)
        n = self.nbytes
        self.timings: dict[str, Timing] = {
            name: Timing(nbytes=self.changed_bytes if name.endswith("10pct") else n)
            for name in MEASUREMENTS}
        self.new_bytes_10pct: int | None = None
        self._count = 0
        self.raw_file = self.new_path("raw")
        self.st_file = self.new_path("safetensors")

    def log(self, message: str) -> None:
        self.options.log(f"{self.label}: {message}")

    def new_path(self, stem: str) -> Path:
        self._count += 1
        return self.work / f"{stem}-{self._count}"

    def checkpointer(self, store: Path) -> Any:
        import ckpt_notebook as ckn

        return ckn.Checkpointer(store, model=self.model, rng=False, run="bench")

    def time(self, name: str, fn: Callable[[], object]) -> object:
        with timed(self.timings[name].samples):
            return fn()

    def time_write(self, name: str, fn: Callable[[], object]) -> object:
        """Time a write from the same starting state as every other write: nothing dirty
        left by earlier measurements, and the page cache emptied. (On this kind of VM a
        buffered write into memory the page cache just gave back runs several times faster
        than one that must reclaim it first, so a fixed order would favour whichever write
        happens to follow a cache drop.)"""
        if not (self.cold_reads and drop_page_cache(metadata=False)):
            os.sync()
        return self.time(name, fn)

    def run(self) -> dict[str, Any]:
        load_before = os.getloadavg()[0]
        incremental = self.checkpointer(self.work / "incremental-store")
        incremental.save(wait=True)  # prime: the store and its host buffers exist from here on
        incremental.save()
        incremental.wait()
        raw_write(self.model, self.raw_file)
        safetensors_save(self.model, self.st_file)
        copy_buffers = memory_copy(self.model)
        for r in range(self.options.repeats):
            self.log(f"round {r + 1} of {self.options.repeats}")
            self.writes(incremental)
            self.stalls(copy_buffers)
            incremental.save(wait=True)  # untimed: its latest is the model stalls() left
            self.reads(incremental)
        incremental.close()
        return self.result(load_before, os.getloadavg()[0])

    def writes(self, incremental: Any) -> None:
        """Baseline writes, a sync save into a new store, a full and a 10%-changed save."""
        self.time_write("raw_write", lambda: raw_write(self.model, self.new_path("raw")))
        self.time_write("raw_write_direct",
                        lambda: raw_write_direct(self.model, self.new_path("raw-direct")))
        self.time_write("torch_save", lambda: torch_save(self.model, self.new_path("pt")))
        self.time_write("safetensors_save",
                        lambda: safetensors_save(self.model, self.new_path("safetensors")))
        ckpt = self.checkpointer(self.new_path("sync-store"))
        self.time_write("sync_save", lambda: ckpt.save(wait=True))
        ckpt.close()
        gc.collect()
        change(self.model, range(len(self.model)))
        self.time_write("sync_save_warm", lambda: incremental.save(wait=True))
        change(self.model, self.changed_layers)
        info = self.time_write("save_10pct", lambda: incremental.save(wait=True))
        self.new_bytes_10pct = info.new_bytes  # type: ignore[attr-defined]

        def save_async() -> None:
            incremental.save()
            incremental.wait()

        change(self.model, range(len(self.model)))
        self.time_write("async_save_warm", save_async)
        change(self.model, self.changed_layers)
        self.time_write("async_save_10pct", save_async)

    def stalls(self, copy_buffers: dict[str, torch.Tensor]) -> None:
        """The async save() stall of a new Checkpointer and of its 2nd and 3rd saves, against
        a plain copy to fresh memory and into buffers allocated beforehand."""
        def copy_fresh() -> None:
            snapshot = memory_copy(self.model)
            del snapshot

        def copy_warm() -> None:
            for k, v in self.model.state_dict().items():
                copy_buffers[k].copy_(v)

        self.time("memory_copy", copy_fresh)
        self.time("memory_copy_warm", copy_warm)
        ckpt = self.checkpointer(self.work / "async-store")
        self.time("async_stall_first", ckpt.save)
        ckpt.wait()
        for _ in range(2):
            change(self.model, range(len(self.model)))  # trained since: every buffer is stale
            self.time("async_stall_later", ckpt.save)
            ckpt.wait()
        ckpt.close()
        gc.collect()

    def reads(self, incremental: Any) -> None:
        """Restore vs raw read (and safetensors load), cold when the cache can be dropped, then
        warm. ``incremental``'s latest checkpoint holds the model as it is now; each restore is
        checked (outside the timed region) to have brought back a tensor zeroed before it."""
        n = self.nbytes
        probe = next(iter(self.model.state_dict().values()))  # shares the parameter's memory
        expected = probe.clone()

        def spoil() -> None:
            with torch.no_grad():
                probe.zero_()

        def check_restored() -> None:
            if not torch.equal(probe, expected):
                raise AssertionError("restore did not bring the model back")

        def restore() -> None:
            incremental.restore("latest")

        for name, fn in (("raw_read", lambda: raw_read(self.raw_file, n)),
                         ("restore", restore),
                         ("safetensors_load", lambda: safetensors_load(self.model, self.st_file))):
            spoil()
            if self.cold_reads:
                drop_page_cache()
            self.time(name, fn)
            if name == "restore":
                check_restored()
        raw_read(self.raw_file, n)
        self.time("raw_read_warm", lambda: raw_read(self.raw_file, n))
        spoil()
        self.time("restore_warm", restore)
        check_restored()

    def ratio(self, first: str, second: str, *, best: bool = False) -> float:
        a, b = self.timings[first], self.timings[second]
        return a.best / b.best if best else a.median / b.median

    def ratios(self) -> list[Check]:
        return [check(name, self.ratio(first, second), op, target, meaning,
                      best=self.ratio(first, second, best=True))
                for name, (first, second, op, target, meaning) in TARGETS.items()]

    def info_ratios(self) -> dict[str, float]:
        return {name: round(self.ratio(first, second), 4)
                for name, (first, second) in INFO_RATIOS.items()}

    def result(self, load_before: float, load_after: float) -> dict[str, Any]:
        checks = self.ratios()
        return {"label": self.label, "bytes": self.nbytes,
                "tensors": len(self.model.state_dict()),
                "weights_mib": sorted({s / MIB for s in weight_sizes(self.total)},
                                      reverse=True),
                "cold_page_cache": self.cold_reads,
                "changed_fraction": round(self.changed_bytes / self.nbytes, 4),
                "changed_layers": len(self.changed_layers),
                "save_10pct_new_bytes": self.new_bytes_10pct,
                "load_average": [round(load_before, 2), round(load_after, 2)],
                "measurements": {k: t.to_json() for k, t in self.timings.items()},
                "ratios": {c.name: c.to_json() for c in checks},
                "info_ratios": self.info_ratios(),
                "pass": all(c.passed for c in checks)}


# -- output ----------------------------------------------------------------------------------
def print_size(res: dict[str, Any]) -> None:
    cache = "cold" if res["cold_page_cache"] else "warm (could not drop the page cache)"
    print(f"\n{res['label']} state: {res['bytes'] / MIB:.1f} MiB in {res['tensors']} tensors "
          f"(weights of {', '.join(f'{w:g}' for w in res['weights_mib'])} MiB); "
          f"reads: {cache} page cache; 10% case changes {res['changed_fraction']:.1%}; "
          f"load average {res['load_average'][0]} -> {res['load_average'][1]}")
    if max(res["load_average"]) > 0.5:
        print("note: other processes were busy during this run; expect noisy timings")
    rows = []
    for name, t in res["measurements"].items():
        gb_s = t.get("gb_s")
        samples = " ".join(f"{s:.3f}" for s in t["samples"])
        rows.append([name, f"{t['seconds']:.3f}", "" if gb_s is None else f"{gb_s:.2f}",
                     samples])
    print(format_table(["measurement", "median s", "GB/s", "samples s"], rows))
    print()
    rows = [[name, f"{c['value']:.3f}", c["target"], "PASS" if c["pass"] else "MISS",
             f"{c['value_best']:.3f}", c["meaning"]] for name, c in res["ratios"].items()]
    rows += [[name, f"{v:.3f}", "", "info", "", ""] for name, v in res["info_ratios"].items()]
    print(format_table(["ratio (of medians)", "value", "target", "", "of bests", "meaning"],
                       rows))


def run(options: Options) -> dict[str, Any]:
    sizes = QUICK_SIZES if options.quick else FULL_SIZES
    tmp_root = options.tmp_root or Path(tempfile.gettempdir())
    tmp_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(tmp_root).free
    need = FREE_SPACE_FACTOR * max(total for _, total in sizes)
    if free < need:
        raise SystemExit(f"benchmarks.core needs about {need / GIB:.1f} GiB free in "
                         f"{tmp_root} (has {free / GIB:.1f} GiB); pass --tmp DIR")
    machine = machine_info(tmp_root)
    results = []
    for label, total in sizes:
        work = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=tmp_root))
        try:
            res = SizeRun(label, total, options, work).run()
        finally:
            shutil.rmtree(work, ignore_errors=True)
            gc.collect()
        print_size(res)
        results.append(res)
    return {"machine": machine, "method": (__doc__ or "").strip(),
            "targets": {k: f"{op} {v}: {meaning}"
                        for k, (_, _, op, v, meaning) in TARGETS.items()},
            "sizes": results, "pass": all(r["pass"] for r in results)}
