"""Copy jobs: each runs on a worker thread, off the event loop, and reports the copy's own
byte meter (``done``/``total``) as it goes.

Jobs live in memory: finished ones are forgotten ``ttl`` seconds after they end, and at most
``keep`` are remembered (the oldest finished ones go first). A failed copy commits nothing
(``copying.copy`` writes the manifest last); its job keeps the ``{code, message}``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ..types import Progress
from .codes import failure

__all__ = ["Job", "Jobs"]

Work = Callable[[Progress], dict[str, Any]]


@dataclass
class Job:
    id: str
    src: str
    name: str
    to: str
    state: Literal["running", "done", "failed"] = "running"
    done: int = 0
    total: int = 0
    checkpoint: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    ended: float | None = field(default=None, repr=False)

    def progress(self, done: int, total: int) -> None:
        self.total, self.done = total, done

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"job": self.id, "state": self.state, "done": self.done,
                               "total": self.total, "src": self.src, "name": self.name,
                               "to": self.to}
        if self.checkpoint is not None:
            doc["checkpoint"] = self.checkpoint
        if self.error is not None:
            doc["error"] = self.error
        return doc


class Jobs:
    """The server's copy jobs (``workers`` run at once; more wait their turn)."""

    def __init__(self, workers: int = 2, keep: int = 200, ttl: float = 3600.0) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ckpt-server-copy")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.keep, self.ttl = keep, ttl

    def start(self, work: Work, *, src: str, name: str, to: str) -> Job:
        job = Job(secrets.token_hex(8), src, name, to)
        with self._lock:
            self._expire()
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._expire()
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _run(job: Job, work: Work) -> None:
        try:
            checkpoint = work(job.progress)
        except BaseException as err:  # every failure is the job's, reported, never raised
            job.error = failure(err).to_json()
            job.state = "failed"
        else:
            job.checkpoint = checkpoint
            job.done = max(job.done, job.total)
            job.state = "done"
        job.ended = time.monotonic()

    def _expire(self) -> None:
        now = time.monotonic()
        ended = sorted((j.ended, j.id) for j in self._jobs.values() if j.ended is not None)
        for when, job_id in ended:
            if now - when > self.ttl or len(self._jobs) > self.keep:
                del self._jobs[job_id]
