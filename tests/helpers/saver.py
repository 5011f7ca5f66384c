"""A process that saves checkpoints, for the crash and concurrency tests (run as a script).

The tests import this file too (by path), for the model and for the values its tensors take
at each step, so they can check that a restored checkpoint holds exactly what was saved.

Commands (``python saver.py COMMAND ...``):

``worker STORE SEED START``
    Save in a loop (sync and async saves at random, steps START+1, START+2, ...) until
    killed; prints ``SAVED <id> <step>`` after each commit.

``save STORE --count N --offset K --tag T [--go FILE] [--mode sync|async|mixed] [--name N]
[--gate DIR]``
    Print ``READY`` once set up, wait for ``FILE`` to exist, save ``N`` checkpoints (each
    printed ``SAVED <id> <step>`` once committed), then optionally one named checkpoint
    (``SAVED <id> named`` or ``EXISTS <name>`` when another process holds the name). With
    ``--gate``, the save of step ``S`` > 1 waits for the file ``DIR/S-1`` (the test writes
    one after each thing it does beside the saves, so those are sure to interleave).

``control STORE --count N [--go FILE]``
    Write the store's small mutable files (metric history, policy, pins, requests) ``N``
    times each, then print ``DONE <n>``.

``serve``
    A fork server: import torch and ckpt_notebook once, print ``READY``, then read lines on
    stdin. ``fork COMMAND ARGS...`` forks a child that runs one of the commands above and
    prints ``PID <pid>``; everything a child prints is prefixed ``@<pid> ``, and its last
    line is ``@<pid> EXIT <code>`` unless it was killed. ``reap PID`` waits for a child
    (prints ``REAPED <pid> <signal> <exitcode>``); ``quit`` ends. Forking skips the
    seconds-long import of torch, so the tests can start many saving processes cheaply.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
import traceback
from typing import Any

DELTA = 1.0 / 64  # exact in binary, so base + step * DELTA is reproducible bit for bit
SIZES = (512, 512, 256)  # two 1 MiB weights, so a save has several blobs (>= 1 MiB each)


def build_model() -> Any:
    """A small model: two 1 MiB weights, small biases, and a fixed 1 MiB buffer.

    The buffer is the same in every process and every step, so concurrent savers write the
    same blob at once (dedup races) and gc must never remove it while it is in use.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[1], SIZES[2] * 2),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    model.register_buffer("table", torch.randn(512, 512, generator=gen))
    return model


def base_state() -> dict[str, Any]:
    return {k: v.clone() for k, v in build_model().state_dict().items()}


def expected_state(step: int, offset: float = 0.0,
                   base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's state dict at ``step`` (the fixed ``table`` buffer never changes)."""
    out = {}
    for key, value in (base if base is not None else base_state()).items():
        out[key] = value if key == "table" else value + (offset + step * DELTA)
    return out


def set_step(model: Any, base: dict[str, Any], step: int, offset: float = 0.0) -> None:
    import torch

    with torch.no_grad():
        for key, p in model.named_parameters():
            p.copy_(base[key] + (offset + step * DELTA))


def train_step(model: Any, opt: Any, step: int, offset: float = 0.0,
               base: dict[str, Any] | None = None) -> None:
    """Change the optimizer state (so every save has new blobs), then set the weights."""
    import torch

    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01 * (step % 7 + 1))
    opt.step()
    set_step(model, base if base is not None else base_state(), step, offset)


_PREFIX = ""  # "@<pid> " in a child of the fork server


def _say(line: str) -> None:
    os.write(1, f"{_PREFIX}{line}\n".encode())  # one write: lines of processes never mix


# -- worker: saves until it is killed ---------------------------------------------------------
def worker(store: str, seed: int, start: int) -> None:
    import torch

    from ckpt_notebook.manager import Checkpointer

    rng = random.Random(seed)
    model = build_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ckpt = Checkpointer(store, model=model, optimizer=opt, run=f"worker-{seed}")
    pending = None
    step = start
    while True:
        step += 1
        train_step(model, opt, step, base=base)  # runs while an async write is in flight
        done = ckpt.wait()
        if done is not None and pending is not None:
            _say(f"SAVED {done.id} {pending}")
            pending = None
        if rng.random() < 0.5:
            info = ckpt.save(step=step, metrics={"loss": 1.0 / step}, wait=True)
            _say(f"SAVED {info.id} {step}")
        else:
            ckpt.save(step=step, metrics={"loss": 1.0 / step}, wait=False)
            pending = step


def serve() -> None:
    global _PREFIX
    import torch

    import ckpt_notebook.manager  # noqa: F401 - imported once here, before forking

    # One intra-op thread: no thread pool exists when we fork (fork-safe), and two cores
    # are shared by these processes and the test. Warm up what is slow the first time (the
    # optimizer's first use imports much of torch) so each forked child starts at once.
    torch.set_num_threads(1)
    model = build_model()
    train_step(model, torch.optim.Adam(model.parameters()), 1)
    _say("READY")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "fork":
            pid = os.fork()
            if pid == 0:
                _PREFIX = f"@{os.getpid()} "
                code = 1
                try:
                    code = main(cmd[1:])
                except BaseException:
                    traceback.print_exc()
                finally:
                    _say(f"EXIT {code}")
                    sys.stderr.flush()
                    os._exit(code)
            _say(f"PID {pid}")
        elif cmd[0] == "reap":
            pid = int(cmd[1])
            _, status = os.waitpid(pid, 0)
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
            _say(f"REAPED {pid} {sig} {code}")
        elif cmd[0] == "quit":
            break


# -- save: a fixed number of saves, started together with other processes -------------------
def save_main(args: argparse.Namespace) -> int:
    import torch

    from ckpt_notebook.errors import CheckpointExistsError
    from ckpt_notebook.manager import Checkpointer

    rng = random.Random(args.offset)
    model = build_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ckpt = Checkpointer(args.store, model=model, optimizer=opt, run=args.tag)
    _say("READY")
    if not wait_for(args.go):
        return 2
    pending = None
    for step in range(1, args.count + 1):
        if args.gate and step > 1 and not wait_for(os.path.join(args.gate, str(step - 1))):
            return 2
        train_step(model, opt, step, args.offset, base)
        done = ckpt.wait()
        if done is not None:
            _say(f"SAVED {done.id} {pending}")
        mode = args.mode if args.mode != "mixed" else rng.choice(("sync", "async"))
        info = ckpt.save(step=step, metrics={"loss": 1.0 / step}, wait=mode == "sync")
        if mode == "sync":
            _say(f"SAVED {info.id} {step}")
            pending = None
        else:
            pending = step
    done = ckpt.wait()
    if done is not None:
        _say(f"SAVED {done.id} {pending}")
    if args.name:
        set_step(model, base, 0, args.offset)
        try:
            info = ckpt.save(name=args.name, wait=True)
        except CheckpointExistsError as err:
            _say(f"EXISTS {args.name} {type(err).__name__}")
        else:
            _say(f"SAVED {info.id} named")
    ckpt.close()
    return 0


def wait_for(go: str) -> bool:
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go):
        if time.monotonic() > deadline:
            _say("NO-GO")
            return False
        time.sleep(0.005)
    return True


# -- control: the store's small mutable files, written while another process runs gc --------
def control_main(args: argparse.Namespace) -> int:
    from ckpt_notebook.storage import Store

    store = Store(args.store)
    store.ensure_writable()
    _say("READY")
    if not wait_for(args.go):
        return 2
    for i in range(args.count):
        store.history.write_segment(args.tag, "segment", [{"step": i, "metrics": {}}])
        store.policy.write({"keep_last": i + 1})
        store.pins.add(f"ckpt-{i % 3}")
        store.requests.put("save")
    _say(f"DONE {args.count}")
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode_name", required=True)
    sub.add_parser("serve")
    w = sub.add_parser("worker")
    w.add_argument("store")
    w.add_argument("seed", type=int)
    w.add_argument("start", type=int)
    p = sub.add_parser("save")
    p.add_argument("store")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--offset", type=float, default=0.0)
    p.add_argument("--tag", default="saver")
    p.add_argument("--go", default="")
    p.add_argument("--mode", choices=("sync", "async", "mixed"), default="mixed")
    p.add_argument("--gate", default="")
    p.add_argument("--name", default="")
    c = sub.add_parser("control")
    c.add_argument("store")
    c.add_argument("--count", type=int, default=200)
    c.add_argument("--tag", default="control")
    c.add_argument("--go", default="")
    args = parser.parse_args(argv)
    if args.mode_name == "serve":
        serve()
        return 0
    if args.mode_name == "worker":
        worker(args.store, args.seed, args.start)
        return 0
    if args.mode_name == "control":
        return control_main(args)
    return save_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
