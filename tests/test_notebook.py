"""The notebook experience in real kernels: a killed kernel resumes bit-for-bit, an
interrupted cell leaves a checkpoint, and "save now" reaches a busy training cell."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kernels import Kernel
from safetensors.torch import load_file

from ckpt_notebook import Store

SETUP = """
%load_ext ckpt_notebook
import time, torch, ckpt_notebook as ckn
%checkpoint store {store}
%checkpoint auto --every 10 --on-interrupt
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                            torch.nn.Linear(32, 1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.9)
step = 0
ckpt = ckn.session()
"""

TRAIN = """
while step < {total}:
    step += 1
    x = torch.randn(16, 8)                    # the global torch RNG drives data and dropout
    loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    ckpt.step(step, {{"loss": loss.item()}})
    time.sleep({pause})
{hold}"""

# TRAIN's {hold}: at step {at} the cell creates the file {flag} and goes no further, still
# running, until the test kills the kernel.
HOLD = """\
    if step == {at}:
        open({flag!r}, "w").close()
        while True:
            time.sleep(0.01)
"""

SAVE_WEIGHTS = """
from safetensors.torch import save_file
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {out!r})
"""


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def steps_saved(store: Path) -> list[int]:
    return [i.step for i in Store(str(store)).list() if i.step is not None]


def test_killed_kernel_resumes_bit_identical(tmp_path: Path) -> None:
    total = 60
    straight, resumed = tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors"
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(SETUP.format(store=tmp_path / "ref-store"))
        k.run(TRAIN.format(total=total, pause=0, hold=""))
        k.run(SAVE_WEIGHTS.format(out=str(straight)))

    store, held = tmp_path / "store", tmp_path / "at-step-35"
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(SETUP.format(store=store))
        # killed at step 35, between two scheduled saves, once the save at 30 is committed
        k.start(TRAIN.format(total=total, pause=0, hold=HOLD.format(at=35, flag=str(held))))
        wait_for(held.exists, what="training to reach step 35")
        wait_for(lambda: any(s >= 30 for s in steps_saved(store)), what="a checkpoint at 30")
        k.kill()
    assert max(steps_saved(store)) < total

    with Kernel(cwd=str(tmp_path)) as k:
        k.run(SETUP.format(store=store))  # the user re-runs the setup cells...
        out = k.run("%checkpoint restore")  # ...and restores
        assert "Restored" in out and "rng" in out
        assert int(k.run("print(step)").strip()) == max(steps_saved(store))
        k.run(TRAIN.format(total=total, pause=0, hold=""))
        k.run(SAVE_WEIGHTS.format(out=str(resumed)))

    a, b = load_file(straight), load_file(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_interrupted_cell_gets_a_checkpoint(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(SETUP.format(store=store) + "\n%checkpoint auto --off\n"
              "%checkpoint auto --on-interrupt")
        msg = k.start(TRAIN.format(total=100_000, pause=0.01, hold=""))
        time.sleep(1.5)
        k.interrupt()
        reply, out = k.wait(msg)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert "saved after the interrupt" in out
        reached = int(k.run("print(step)").strip())
    interrupted = [i for i in Store(str(store)).list() if "interrupted" in i.tags]
    assert len(interrupted) == 1 and interrupted[0].step == reached > 0


def test_request_save_reaches_a_running_cell(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(SETUP.format(store=store) + "\n%checkpoint auto --off")
        msg = k.start(TRAIN.format(total=100_000, pause=0.01, hold=""))
        time.sleep(1.0)
        assert Store(str(store)).list() == []
        done = subprocess.run([sys.executable, "-m", "ckpt_notebook.cli", "request-save",
                               "--store", str(store)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: bool(Store(str(store)).list()), timeout=30, what="the requested save")
        k.interrupt()  # the cell was still running when the checkpoint appeared
        reply, _ = k.wait(msg)
        assert reply["ename"] == "KeyboardInterrupt"
    (saved,) = Store(str(store)).list()
    assert "requested" in saved.tags and saved.step is not None and saved.step > 1


@pytest.mark.parametrize("notebook", ["quickstart.ipynb"])
def test_example_notebook_runs(notebook: str, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).parents[1] / "examples" / notebook
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Restored" in text and "bit-identical: True" in text
    assert "models/: ['model.safetensors']" in text  # ready for "Copy to checkpoint..."
    assert (tmp_path / "models" / "model.safetensors").stat().st_size > 0
