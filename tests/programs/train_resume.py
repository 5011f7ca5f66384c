"""Train a small model with every kind of state, optionally saving or resuming.

    python train_resume.py STORE OUT.safetensors --steps N [--save-at K] [--resume] [--seed S]
                           [--no-rng]

--save-at K saves a checkpoint after step K and exits (a "crash"); --resume restores the
latest checkpoint into freshly built objects and continues to N. The final weights go to OUT.
--no-rng makes the Checkpointer with ``rng=False``: it neither saves nor restores the RNGs.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
from safetensors.torch import save_file

import ckpt_notebook as ckn


def build(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(256, 10),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=200)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
    return model, opt, sched, scaler


def step_once(model, opt, sched, scaler, rng: np.random.Generator) -> float:
    # Every RNG in play: torch (data + dropout), numpy (a Generator and the global one), python.
    x = torch.randn(64, 32)
    noise = float(rng.normal()) + float(np.random.rand()) + random.random()
    y = torch.randint(0, 10, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x + 0.01 * noise), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    return float(loss)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--save-at", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rng", dest="rng", action="store_false")
    args = p.parse_args()

    model, opt, sched, scaler = build(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    gen = np.random.default_rng(args.seed)
    ckpt = ckn.Checkpointer(args.store, model=model, optimizer=opt, scheduler=sched,
                            scaler=scaler, gen=gen, step=0, rng=args.rng)
    start = 0
    if args.resume:
        report = ckpt.restore("latest")
        start = report.values["step"]
        print(report)
        print(f"restored={','.join(report.restored)} rng_restored={report.rng_restored}")
    for step in range(start + 1, args.steps + 1):
        loss = step_once(model, opt, sched, scaler, gen)
        if step == args.save_at:
            ckpt.track(step=step)
            ckpt.save(step=step, metrics={"loss": loss})
            ckpt.wait()
            return
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
