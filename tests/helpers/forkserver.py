"""Drive ``saver.py serve`` from a test: fork saving processes, read them, kill and reap them.

Imported by path (see ``load_helper`` in the tests), so it needs no package around it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SAVER_PATH = Path(__file__).resolve().parent / "saver.py"


class Child:
    """One forked process; its lines (without the ``@pid`` prefix) arrive on ``lines``."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.lines: queue.Queue[str] = server._queue_of(pid)
        self.seen: list[str] = []
        self.exit_code: int | None = None
        self.reaped = False

    def next_line(self, timeout: float = 120) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"process {self.pid} said nothing for {timeout}s; stderr:\n"
                                 f"{self.server.stderr()}") from None
        self.seen.append(line)
        if line.startswith("EXIT"):
            self.exit_code = int(line.split()[1])
        return line

    def expect(self, prefix: str, timeout: float = 120) -> list[str]:
        """Read lines until one starts with ``prefix``; fail if the process ends first."""
        while True:
            line = self.next_line(timeout)
            if line.split()[0] == prefix:
                return line.split()
            if line.startswith("EXIT"):
                raise AssertionError(f"process {self.pid} ended ({line}) before {prefix!r}; "
                                     f"stderr:\n{self.server.stderr()}")

    def wait_ready(self) -> None:
        self.expect("READY")

    def running(self) -> bool:
        return self.exit_code is None

    def finish(self, timeout: float = 180) -> list[str]:
        """Wait for the process to end by itself; every line it printed (EXIT 0 checked)."""
        deadline = time.monotonic() + timeout
        while self.exit_code is None:
            self.next_line(max(deadline - time.monotonic(), 0.001))
        self.reap()
        assert self.exit_code == 0, (f"process {self.pid} exited {self.exit_code}; stderr:\n"
                                     f"{self.server.stderr()}")
        return [ln for ln in self.seen if ln != "READY" and not ln.startswith("EXIT")]

    def drain(self) -> None:
        """Read every line already queued."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            self.seen.append(line)
            if line.startswith("EXIT"):
                self.exit_code = int(line.split()[1])

    def saved(self) -> list[tuple[str, str]]:
        """``(id, step)`` of each ``SAVED`` line printed so far."""
        self.drain()
        return [(p[1], p[2]) for p in (ln.split() for ln in self.seen) if p[0] == "SAVED"]

    def kill(self) -> tuple[int, int]:
        """SIGKILL it and reap it: ``(signal, exit code)`` it ended with."""
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.reap()

    def reap(self) -> tuple[int, int]:
        if not self.reaped:
            self.server.send(f"reap {self.pid}")
            _, _, sig, code = self.server.expect(f"REAPED {self.pid}")
            self.reaped = True
            self.server.children.pop(self.pid, None)
            self.signal, self.code = int(sig), int(code)
        return self.signal, self.code


class ForkServer:
    """``saver.py serve`` in a subprocess, and the children it forks."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(SAVER_PATH), "serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        self._control: queue.Queue[str] = queue.Queue()
        self._queues: dict[int, queue.Queue[str]] = {}
        self._queues_lock = threading.Lock()
        self.children: dict[int, Child] = {}
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("READY", timeout=180)

    def _queue_of(self, pid: int) -> queue.Queue[str]:
        with self._queues_lock:
            return self._queues.setdefault(pid, queue.Queue())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line.startswith("@"):
                pid, _, rest = line[1:].partition(" ")
                self._queue_of(int(pid)).put(rest)
            else:
                self._control.put(line)
        self._control.put("EOF")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def expect(self, prefix: str, timeout: float = 60) -> list[str]:
        """The next line of the server itself that starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._control.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"the fork server sent no {prefix!r} in {timeout}s; "
                                     f"stderr:\n{self.stderr()}") from None
            if line == "EOF":
                raise AssertionError(f"the fork server ended; stderr:\n{self.stderr()}")
            if line.startswith(prefix):
                return line.split()

    def fork(self, *args: object) -> Child:
        """Fork a child running ``saver.py ARGS...`` (no spaces inside an argument)."""
        words = [str(a) for a in args]
        assert all(w and " " not in w for w in words), words
        self.send("fork " + " ".join(words))
        pid = int(self.expect("PID")[1])
        child = Child(self, pid)
        self.children[pid] = child
        return child

    def close(self) -> None:
        for child in list(self.children.values()):
            with contextlib.suppress(AssertionError):
                child.kill()
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
