"""The REST API under ``{base_url}ckpt-notebook/api/`` (docs/rest-api.md is the contract).

Thin handlers in the jupyterlab-git / extension-template shape: every verb is
``@tornado.web.authenticated`` on an ``APIHandler`` (a request without Jupyter's token or
login cookie gets 403 and touches nothing); each parses its JSON, calls the manager on a
worker thread (store I/O never blocks the event loop) and maps errors to
``{"code", "message"}`` (:mod:`.codes`). Copies are jobs (:mod:`.jobs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import tornado
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .._version import __version__
from ..errors import CheckpointNotFoundError, InvalidArgumentError
from ..manager import copying, listing, maintenance, resolve_ref
from ..manager.committing import name_taken
from ..storage import Store
from ..types import CheckpointInfo, Progress, validate_name
from .codes import failure
from .jobs import Jobs
from .paths import copy_source, default_store, shown, store_url

__all__ = ["JOBS_SETTING", "api_handlers"]

JOBS_SETTING = "ckpt_notebook_jobs"


class _Api(APIHandler):
    """Shared plumbing: the root, the JSON body, stores, and answering off the event loop."""

    @property
    def root(self) -> str:
        return os.path.abspath(os.path.expanduser(self.settings["server_root_dir"]))

    @property
    def jobs(self) -> Jobs:
        jobs: Jobs = self.settings[JOBS_SETTING]
        return jobs

    def body(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.request.body or b"{}")
        except ValueError as err:
            raise InvalidArgumentError(f"the request body is not JSON: {err}") from err
        if not isinstance(doc, dict):
            raise InvalidArgumentError("the request body must be a JSON object")
        return doc

    def field(self, doc: dict[str, Any], key: str, *, required: bool = True) -> str:
        value = doc.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgumentError(f"{key!r} is required: a non-empty string")
        return value

    def store(self, value: str | None, default: str | None = None) -> Store:
        return Store(store_url(self.root, value, default or default_store(self.root)))

    async def answer(self, work: Callable[[], Any], status: int = 200) -> None:
        """Run ``work`` on a worker thread and answer its JSON, or its error."""
        loop = tornado.ioloop.IOLoop.current()
        try:
            result = await loop.run_in_executor(None, work)
        except Exception as err:
            bad = failure(err)
            if bad.status >= 500:
                self.log.warning("ckpt_notebook: %s %s: %s", self.request.method,
                                 self.request.path, bad.message)
            self.set_status(bad.status)
            self.finish(json.dumps(bad.to_json()))
            return
        self.set_status(status)
        self.finish(json.dumps(result))


class ConfigHandler(_Api):
    @tornado.web.authenticated
    async def get(self) -> None:
        folder = self.get_argument("path", "")
        await self.answer(lambda: self._config(folder))

    def _config(self, folder: str) -> dict[str, Any]:
        store = default_store(self.root, folder)
        url = url_path_join(self.base_url, "ckpt-notebook", "dashboard")
        return {"version": __version__, "root": self.root, "default_store": store,
                "dashboard_url": f"{url}?{urlencode({'store': store})}"}


class CheckpointsHandler(_Api):
    """The listing; tornado answers its ETag and 304 on a matching If-None-Match."""

    @tornado.web.authenticated
    async def get(self) -> None:
        store = self.get_argument("store", "")
        await self.answer(lambda: self._listing(store))

    def _listing(self, value: str) -> dict[str, Any]:
        store = self.store(value)
        doc = listing.listing(store)
        doc["store"] = shown(self.root, store.url)
        return doc


class CopiesHandler(_Api):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.answer(self._start, 202)

    def _start(self) -> dict[str, Any]:
        doc = self.body()
        src, name = self.field(doc, "src"), self.field(doc, "name")
        validate_name(name)
        dest = self.store(self.field(doc, "to", required=False))
        lookup = self.field(doc, "store", required=False)
        source_store = dest if not lookup else self.store(lookup)
        source = copy_source(self.root, src)  # refuses paths leading outside the root
        if dest.exists(name):
            raise name_taken(name, dest)
        if source.startswith("ckpt:"):
            resolve_ref(source_store, source)  # an unknown REF is refused now, not later

        def work(progress: Progress) -> dict[str, Any]:
            info = copying.copy(source, name, to=dest, store=source_store, progress=progress)
            return listing.entry_of(dest, info.id)

        job = self.jobs.start(work, src=src, name=name, to=shown(self.root, dest.url))
        return {"job": job.id}


class CopyHandler(_Api):
    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            await self.answer(lambda: _no_job(job_id))
            return
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(job.to_json()))


def _no_job(job_id: str) -> None:
    raise CheckpointNotFoundError(f"no copy job {job_id!r} on this server (finished jobs are "
                                  "forgotten an hour after they end, and at a server restart)")


class RequestsHandler(_Api):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.answer(self._request, 201)

    def _request(self) -> dict[str, Any]:
        store = self.store(self.field(self.body(), "store", required=False))
        store.ensure_writable()  # refuses a folder that is not a store, as `ckpt` does
        return {"request": maintenance.request_save(store)}


class RequestHandler(_Api):
    @tornado.web.authenticated
    async def get(self, req_id: str) -> None:
        self.set_header("Cache-Control", "no-store")
        await self.answer(lambda: self._state(req_id))

    def _state(self, req_id: str) -> dict[str, Any]:
        store = self.store(self.get_query_argument("store", None))
        return {"request": req_id, "state": maintenance.request_state(store, req_id)}


class VerifyHandler(_Api):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.answer(self._verify)

    def _verify(self) -> dict[str, Any]:
        doc = self.body()
        store = self.store(self.field(doc, "store", required=False))
        info = resolve_ref(store, self.field(doc, "ref"))
        problems = [str(p) for p in store.verify(info.id)]
        return {"checkpoint": info.id, "ok": not problems, "problems": problems}


class _RefAction(_Api):
    """``{"store", "ref"}`` -> one manager call on that checkpoint."""

    def act(self, store: Store, ref: str, doc: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @tornado.web.authenticated
    async def post(self) -> None:
        await self.answer(self._act)

    def _act(self) -> dict[str, Any]:
        doc = self.body()
        store = self.store(self.field(doc, "store", required=False))
        return self.act(store, self.field(doc, "ref"), doc)


def _entry(store: Store, info: CheckpointInfo) -> dict[str, Any]:
    return {"checkpoint": listing.entry_of(store, info.id)}


class PinHandler(_RefAction):
    def act(self, store: Store, ref: str, doc: dict[str, Any]) -> dict[str, Any]:
        return _entry(store, maintenance.pin(store, ref))


class UnpinHandler(_RefAction):
    def act(self, store: Store, ref: str, doc: dict[str, Any]) -> dict[str, Any]:
        return _entry(store, maintenance.unpin(store, ref))


class DeleteHandler(_RefAction):
    def act(self, store: Store, ref: str, doc: dict[str, Any]) -> dict[str, Any]:
        force = doc.get("force", False)
        if not isinstance(force, bool):
            raise InvalidArgumentError("'force' must be true or false")
        return {"deleted": maintenance.delete(store, ref, force=force).id}


def api_handlers() -> list[tuple[str, type[APIHandler]]]:
    """(route below ``{base_url}ckpt-notebook/api/``, handler) pairs."""
    return [
        ("config", ConfigHandler),
        ("checkpoints", CheckpointsHandler),
        ("copies", CopiesHandler),
        ("copies/([0-9a-f]{1,64})", CopyHandler),
        ("requests", RequestsHandler),
        ("requests/([0-9]{1,20}-[0-9a-f]{6})", RequestHandler),
        ("verify", VerifyHandler),
        ("pin", PinHandler),
        ("unpin", UnpinHandler),
        ("delete", DeleteHandler),
    ]
