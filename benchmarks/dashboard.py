"""First view of the dashboard for a store of 2,000 checkpoints (target < 3 s), and how soon
a new checkpoint shows in an open page (target < 2 s).

The store: 2,000 checkpoints (``--quick``: 200) in 5 runs, each run with a metric history
of 2,000 steps, a retention policy (keep last 10, best 3 by loss), the listing index current
(as it is after any listing). The checkpoints share one small state: the dashboard's first
view reads listings, not tensors.

Measurements (medians over rounds):

``model``              ``DashboardModel(store)``: listing, pins, retention statuses
``view``               the model plus ``DashboardView``: table rows, the first run's plot,
                       every widget; no server, no browser
``page_html``          ``GET /`` from a running ``ckpt dashboard`` (the server builds the page's
                       session: model and views)
``first_view``         Debian's chromium (Playwright): from navigating to the printed URL (the
                       token's login page, then the page) to the first table row on screen,
                       in a fresh browser context (empty cache) - the target
``first_view_cached``  the same page again in the same context (scripts cached; info)
``live_update``        a checkpoint committed by another writer -> its row on screen in the
                       open, settled page, no reload (watchfiles)

``python -m benchmarks.dashboard [--quick]`` runs it alone; ``make bench`` runs it with the
others. Without chromium or Playwright the browser measurements are skipped (noted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import Options, Timing, check, format_table, machine_info, measure

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
FULL_COUNT, QUICK_COUNT = 2000, 200
RUNS = 5
HISTORY_STEPS = 2000
FIRST_VIEW_TARGET_S = 3.0
LIVE_TARGET_S = 2.0
CHROMIUM = os.environ.get("CKPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update"]


def make_store(root: Path, count: int, options: Options) -> None:
    """``count`` checkpoints over RUNS runs, sharing one real saved state."""
    import torch

    from ckpt_notebook import Checkpointer, Store
    from ckpt_notebook.storage.manifest import Manifest
    from ckpt_notebook.types import utc_now

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    first = Checkpointer(str(root), run="run-0", model=model, rng=False,
                         async_save=False).save(step=0, metrics={"loss": 1.0, "acc": 0.0})
    store = Store(str(root))
    doc = store.manifest(first.id)
    base = doc.checkpoint
    options.log(f"committing {count - 1} more manifests")
    for k in range(1, count):
        run, step = f"run-{k % RUNS}", (k // RUNS + 1) * 10
        loss = 1.0 / (1 + step / 100) + 0.01 * (k % 7)
        info = dataclasses.replace(
            base, id=f"20260101-{k:06d}-{k % 4096:03x}", run=run, step=step,
            created=utc_now(), metrics={"loss": loss, "acc": 1 - loss},
            tags=("warmup",) if step < 100 else (), parent=None, new_bytes=0)
        store.commit(Manifest(info, doc.blobs, doc.objects))
    for r in range(RUNS):
        store.history.write_segment(f"run-{r}", "seg-0", (
            {"step": s, "time": s, "metrics": {"loss": 1.0 / (1 + s / 100), "acc": s / 10_000}}
            for s in range(1, HISTORY_STEPS + 1)))
    store.policy.write({"keep_last": 10, "keep_best": 3, "monitor": "loss"})
    assert len(store.list()) == count  # also brings the listing index up to date


class Server:
    def __init__(self, root: Path) -> None:
        self.url = ""
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ckpt_notebook.ui.dashboard.app", "--store", str(root)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=Path(__file__).resolve().parents[1])
        threading.Thread(target=self._drain, daemon=True).start()
        if not self.ready.wait(120):
            self.stop()
            raise RuntimeError("the dashboard did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"at ((http://127\.0\.0\.1:\d+/)\?token=(\S+))", line)
            if found and not self.url:
                self.url, self.base, self.token = found.groups()  # url: with its token
                self.ready.set()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _get(url: str, token: str) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def browser_timings(server: Server, root: Path, repeats: int,
                    ) -> tuple[dict[str, Timing], str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}, "skipped: playwright is not installed"
    if not os.path.exists(CHROMIUM):
        return {}, "skipped: chromium is not installed (make browser)"
    from ckpt_notebook import Store
    from ckpt_notebook.storage.manifest import Manifest
    from ckpt_notebook.types import utc_now

    store = Store(str(root))
    some = store.list()[-1]
    doc = store.manifest(some.id)
    first, cached, live = Timing(), Timing(), Timing()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        for n in range(repeats):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            for into in (first, cached):
                start = time.perf_counter()
                page.goto(server.url)
                page.locator(".tabulator-row").first.wait_for(timeout=60_000)
                into.samples.append(time.perf_counter() - start)
            page.get_by_text("prunable now:").wait_for(timeout=60_000)  # the page is settled
            new_id = f"29990101-live{n:02d}"
            info = dataclasses.replace(doc.checkpoint, id=new_id, step=10**7 + n,
                                       created=utc_now())
            start = time.perf_counter()
            store.commit(Manifest(info, doc.blobs, doc.objects))
            page.locator(".tabulator-row", has_text=new_id).first.wait_for(timeout=30_000)
            live.samples.append(time.perf_counter() - start)
            context.close()
        browser.close()
    return {"first_view": first, "first_view_cached": cached, "live_update": live}, ""


def run(options: Options) -> dict[str, Any]:
    count = QUICK_COUNT if options.quick else FULL_COUNT
    tmp_root = options.tmp_root or Path(tempfile.gettempdir())
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-dash-", dir=tmp_root))
    root = work / "store"
    try:
        options.log(f"building a store of {count} checkpoints")
        make_store(root, count, options)
        return _measure(root, count, options, machine_info(tmp_root))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(root: Path, count: int, options: Options, machine: dict[str, Any],
             ) -> dict[str, Any]:
    import panel as pn

    from ckpt_notebook.ui.dashboard.model import DashboardModel
    from ckpt_notebook.ui.dashboard.views import DashboardView

    pn.extension("tabulator")
    DashboardView(DashboardModel(str(root)))  # imports and caches, as serve() warms up
    timings: dict[str, Timing] = {
        "model": measure(lambda: DashboardModel(str(root)), options.repeats),
        "view": measure(lambda: DashboardView(DashboardModel(str(root))), options.repeats),
    }
    options.log("starting ckpt dashboard")
    server = Server(root)
    try:
        timings["page_html"] = measure(lambda: _get(server.base, server.token),
                                          options.repeats)
        options.log("timing the first view in chromium")
        browser, note = browser_timings(server, root, options.repeats)
        timings.update(browser)
    finally:
        server.stop()
    checks = []
    if "first_view" in timings:
        fv, live = timings["first_view"], timings["live_update"]
        checks = [
            check("first_view_vs_target", fv.median / FIRST_VIEW_TARGET_S, "<=", 1.0,
                  f"first view (navigation -> first row) / {FIRST_VIEW_TARGET_S} s",
                  best=fv.best / FIRST_VIEW_TARGET_S),
            check("live_update_vs_target", live.median / LIVE_TARGET_S, "<=", 1.0,
                  f"new checkpoint committed -> row on screen / {LIVE_TARGET_S} s",
                  best=live.best / LIVE_TARGET_S)]
    else:  # no browser: the server-side part of the first view is what can be checked
        page = timings["page_html"]
        checks = [check("page_html_vs_target", page.median / FIRST_VIEW_TARGET_S, "<=", 1.0,
                        f"server-side page build / {FIRST_VIEW_TARGET_S} s (no browser)",
                        best=page.best / FIRST_VIEW_TARGET_S)]
    print(format_table(["measurement", "median s", "best s"],
                       [[k, f"{t.median:.3f}", f"{t.best:.3f}"] for k, t in timings.items()]))
    if note:
        print(f"browser: {note}")
    print(format_table(["ratio", "value", "target", "pass"],
                       [[c.name, f"{c.value:.4f}", f"{c.op} {c.target}", c.passed]
                        for c in checks]))
    return {"machine": machine, "method": (__doc__ or "").strip(),
            "store": {"checkpoints": count, "runs": RUNS, "history_steps": HISTORY_STEPS},
            "measurements": {k: t.to_json() for k, t in timings.items()},
            "browser": note or f"chromium at {CHROMIUM}",
            "checks": {c.name: c.to_json() for c in checks},
            "pass": all(c.passed for c in checks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_COUNT} checkpoints, 2 rounds: a smoke run (writes nothing "
                             "unless --results is given)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5; quick 2)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the store")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    start = time.perf_counter()
    doc = run(Options(quick=args.quick, repeats=repeats, tmp_root=args.tmp))
    doc = {"benchmark": "dashboard",
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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
