"""Resume continues bit-for-bit: save in one process, restore in a fresh one, keep training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from conftest import pythonpath_env
from safetensors.torch import load_file

PROGRAM = Path(__file__).parent / "programs" / "train_resume.py"


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(PROGRAM), *args], env=pythonpath_env(),
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_resume_in_new_process_is_bit_identical(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    straight = str(tmp_path / "straight.safetensors")
    resumed = str(tmp_path / "resumed.safetensors")
    run(store + "-unused", straight, "--steps", "40")
    run(store, "unused", "--steps", "40", "--save-at", "25")
    # Fresh objects built from another seed: only the restore can make them match.
    report = run(store, resumed, "--steps", "40", "--resume", "--seed", "7")
    assert "rng" in report and "restored" in report
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_without_rng_resume_diverges(tmp_path: Path) -> None:
    """The control: the same run resumed with different RNG state is not identical."""
    store = str(tmp_path / "store")
    straight, other = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    run(store + "-unused", straight, "--steps", "30")
    run(store + "-unused2", other, "--steps", "30", "--seed", "1")
    a, b = load_file(straight), load_file(other)
    assert any(not torch.equal(a[k], b[k]) for k in a)
