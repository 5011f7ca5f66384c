"""How long ``import ckpt_notebook`` and ``%load_ext ckpt_notebook`` take (target < 0.3 s).

Each sample runs in a fresh interpreter (imports are cached per process), with IPython
already imported, as it is in a kernel; only the extension's own cost is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import Options, Timing, check, format_table, machine_info

TARGET_S = 0.3
PROBE = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
import ckpt_notebook
t1 = time.perf_counter()
shell.run_line_magic("load_ext", "ckpt_notebook")
t2 = time.perf_counter()
heavy = sorted({"torch", "panel", "ipywidgets", "huggingface_hub", "numpy"} & set(sys.modules))
print(json.dumps({"import": t1 - t0, "load_ext": t2 - t1, "heavy": heavy}))
"""


def run(options: Options) -> dict[str, Any]:
    repeats = max(3, options.repeats)
    imports, loads = Timing(), Timing()
    heavy: list[str] = []
    for i in range(repeats):
        options.log(f"fresh interpreter {i + 1} of {repeats}")
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1])
        sample = json.loads(out.stdout.strip().splitlines()[-1])
        imports.samples.append(sample["import"])
        loads.samples.append(sample["import"] + sample["load_ext"])
        heavy = sample["heavy"]
    ratio = check("load_ext_vs_target", loads.median / TARGET_S, "<=", 1.0,
                  f"import + %load_ext time / {TARGET_S} s", best=loads.best / TARGET_S)
    print(format_table(["measurement", "median s", "best s"],
                       [["import ckpt_notebook", f"{imports.median:.4f}", f"{imports.best:.4f}"],
                        ["import + %load_ext", f"{loads.median:.4f}", f"{loads.best:.4f}"]]))
    print(f"heavy modules loaded: {heavy or 'none'};  target < {TARGET_S} s: "
          f"{'PASS' if ratio.passed else 'MISS'}")
    return {
        "benchmark": "load",
        "machine": machine_info(Path(__file__).resolve().parent),
        "measurements": {"import": imports.to_json(), "load_ext": loads.to_json()},
        "heavy_modules_after_load": heavy,
        "checks": {ratio.name: ratio.to_json()},
        "pass": ratio.passed,
    }
