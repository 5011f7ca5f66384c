"""A real IPython kernel for tests (jupyter_client), with just what the tests need."""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from typing import Any

from jupyter_client.manager import KernelManager


class KernelError(AssertionError):
    pass


class Kernel:
    """Start a kernel on this interpreter; run cells; kill or interrupt it like a user would."""

    def __init__(self, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f",
                              "{connection_file}"]
        extra_env = dict(os.environ)
        extra_env.update(env or {})
        extra_env.pop("CKPT_NOTEBOOK_STORE", None)
        self.km.start_kernel(cwd=cwd, env=extra_env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def start(self, code: str) -> str:
        return str(self.kc.execute(code, store_history=True))

    def wait(self, msg_id: str, timeout: float = 120) -> tuple[dict[str, Any], str]:
        """Wait for a cell's reply; returns (reply content, collected stdout/stderr text)."""
        deadline = time.monotonic() + timeout
        out: list[str] = []
        reply = None
        idle = False
        while reply is None or not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                so_far = "".join(out)
                raise KernelError(f"cell did not finish in {timeout}s; output so far: {so_far}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.2))
                if msg["parent_header"].get("msg_id") == msg_id:
                    kind, content = msg["msg_type"], msg["content"]
                    if kind == "stream":
                        out.append(content["text"])
                    elif kind in ("execute_result", "display_data"):
                        out.append(content["data"].get("text/plain", "") + "\n")
                    elif kind == "error":
                        out.append("\n".join(content["traceback"]))
                    elif kind == "status" and content["execution_state"] == "idle":
                        idle = True
            except queue.Empty:
                pass
            if reply is None:
                try:
                    msg = self.kc.get_shell_msg(timeout=0)
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg["content"]
                except queue.Empty:
                    pass
        return reply, "".join(out)

    def run(self, code: str, timeout: float = 120) -> str:
        reply, out = self.wait(self.start(code), timeout)
        if reply["status"] != "ok":
            raise KernelError(f"cell failed: {reply.get('ename')}: {reply.get('evalue')}\n{out}")
        return out

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.km.provisioner.process.wait()  # type: ignore[union-attr]

    def interrupt(self) -> None:
        self.km.interrupt_kernel()
