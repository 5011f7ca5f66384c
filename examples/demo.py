"""The main job, end to end: train, checkpoint, crash, restore, continue - bit for bit.

    make demo            (or: python examples/demo.py [--store URL])

A child process trains a small model on synthetic data, checkpointing every 10 steps, and
is killed with SIGKILL mid-run. This process then builds fresh objects, restores the latest
checkpoint, finishes the run, and checks the result against an uninterrupted run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import torch

import ckpt_notebook as ckn

STEPS, EVERY, CRASH_AT = 60, 10, 37


def build(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(20, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(128, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    return model, opt, sched


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)  # synthetic, reproducible per step
    x = torch.randn(64, 20, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def train(model, opt, sched, start: int, stop: int, ckpt: ckn.Checkpointer | None = None,
          crash_at: int | None = None) -> float:
    loss = torch.tensor(0.0)
    for step in range(start + 1, stop + 1):
        x, y = data(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ckpt is not None and step % EVERY == 0:
            ckpt.track(step=step)
            info = ckpt.save(step=step, metrics={"loss": loss.item()})
            print(f"  step {step:3d}  loss {loss.item():.4f}  checkpoint {info.id} (async)")
        if step == crash_at:
            ckpt and ckpt.wait()
            print(f"  step {step:3d}  *** kernel dies (SIGKILL) ***", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    return loss.item()


def child(store: str) -> None:
    model, opt, sched = build()
    ckpt = ckn.Checkpointer(store, run="demo", model=model, optimizer=opt, scheduler=sched)
    train(model, opt, sched, 0, STEPS, ckpt, crash_at=CRASH_AT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store URL (default: ./checkpoints)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-notebook", action="store_true", help="skip the notebook part")
    args = parser.parse_args()
    store = ckn.Store(args.store)
    if args.child:
        child(store.url)
        return

    print(f"1. Training {STEPS} steps, checkpointing every {EVERY}, in a child process")
    proc = subprocess.run([sys.executable, __file__, "--child", "--store", store.url],
                          check=False)
    print(f"   child exited with signal {-proc.returncode} "
          f"({signal.Signals(-proc.returncode).name})\n" if proc.returncode < 0 else "")

    print("2. A fresh start: rebuild the objects (other seed), restore 'latest'")
    model, opt, sched = build(seed=123)
    ckpt = ckn.Checkpointer(store, run="demo", model=model, optimizer=opt, scheduler=sched,
                            step=0)
    t0 = time.perf_counter()
    report = ckpt.restore("latest")
    print(f"   restored in {time.perf_counter() - t0:.3f} s")
    print("   " + str(report).replace("\n", "\n   "))
    start = report.values["step"]

    print(f"\n3. Continue from step {start} to {STEPS}")
    resumed = train(model, opt, sched, start, STEPS)

    print("\n4. Compare with an uninterrupted run")
    ref_model, ref_opt, ref_sched = build()
    straight = train(ref_model, ref_opt, ref_sched, 0, STEPS)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref_model.state_dict().values(), strict=True))
    print(f"   final loss resumed {resumed:.6f} vs uninterrupted {straight:.6f}")
    print(f"   weights bit-identical: {same}")

    infos = store.list()
    where = store.url if "://" in store.url else os.path.abspath(store.url)
    print(f"\nCheckpoints are in {where} ({len(infos)} in the store). Try:")
    print(f"   .venv/bin/ckpt ls --store {store.url}")
    print(f"   .venv/bin/ckpt verify --all --store {store.url}")
    if not same:
        raise SystemExit("resume was not bit-identical")
    if not args.no_notebook:
        run_notebook(store.url)


def run_notebook(store: str) -> None:
    """Execute examples/quickstart.ipynb headless in a real kernel and show what it printed."""
    import nbformat
    from nbclient import NotebookClient

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.ipynb")
    print("\n5. The same in a notebook: examples/quickstart.ipynb (open it with `make lab`)")
    nb = nbformat.read(path, as_version=4)
    cwd = os.path.abspath(store) if "://" not in store else os.getcwd()
    os.makedirs(cwd, exist_ok=True)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   extra_arguments=["--IPKernelApp.log_level=ERROR"],
                   resources={"metadata": {"path": os.path.dirname(cwd)}}).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"   In: {cell.source.splitlines()[0]}")
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            for line in str(text).rstrip().splitlines()[:12]:
                print(f"       {line}")


if __name__ == "__main__":
    main()
