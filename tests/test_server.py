"""The Jupyter server extension's REST API (docs/rest-api.md) and dashboard, through a real
Jupyter server (pytest-jupyter's ``jp_fetch``) on real stores on disk."""

from __future__ import annotations

import asyncio
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tornado
from tornado.httpclient import HTTPClientError

from ckpt_notebook.manager import Checkpointer, copying
from ckpt_notebook.storage import Store

pytest_plugins = ["pytest_jupyter.jupyter_server"]

API = ("ckpt-notebook", "api")


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"ckpt_notebook": True}}}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the copy hash cache


@pytest.fixture
def root(jp_root_dir: Path) -> Path:
    (jp_root_dir / "models").mkdir()
    (jp_root_dir / "models" / "weights.bin").write_bytes(os.urandom(3 << 20))
    (jp_root_dir / "models" / "config.json").write_text('{"width": 64}')
    return jp_root_dir


def trained(store: Path | str, steps: int = 3) -> list[str]:
    """Unnamed training checkpoints (no torch needed: plain values only)."""
    ckpt = Checkpointer(str(store), rng=False, async_save=False, run="demo")
    return [ckpt.save(step=s, metrics={"loss": 1.0 / (s + 1)}).id for s in range(steps)]


async def call(jp_fetch: Any, route: str, body: dict[str, Any] | None = None,
               params: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON) of one API call; errors are answers, not exceptions."""
    method = "GET" if body is None else "POST"
    try:
        answer = await jp_fetch(*API, *route.split("/"), method=method, params=params,
                                body=None if body is None else json.dumps(body), **kwargs)
    except HTTPClientError as err:
        assert err.response is not None, err
        answer = err.response
    text = answer.body.decode() if answer.body else ""
    return answer.code, json.loads(text) if text else None


def assert_error(answer: tuple[int, Any], status: int, code: str) -> str:
    got_status, doc = answer
    assert (got_status, doc.get("code")) == (status, code), doc
    assert isinstance(doc["message"], str) and "\n" not in doc["message"]
    return str(doc["message"])


async def wait_job(jp_fetch: Any, job: str, *, timeout: float = 60) -> dict[str, Any]:
    seen = []
    for _ in range(int(timeout * 20)):
        status, doc = await call(jp_fetch, f"copies/{job}")
        assert status == 200, doc
        seen.append((doc["done"], doc["total"]))
        if doc["state"] != "running":
            doc["seen"] = seen
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} still running: {doc}")


# -- every handler is authenticated --------------------------------------------------------
def _auth_wrappers() -> set[Any]:
    from jupyter_server.auth.decorator import ws_authenticated

    def sample(self: Any) -> None:
        pass
    return {tornado.web.authenticated(sample).__code__, ws_authenticated(sample).__code__}


def _rules(router: Any) -> Any:
    for rule in getattr(router, "rules", ()):
        if hasattr(rule.target, "rules"):  # add_handlers nests a router per host pattern
            yield from _rules(rule.target)
        else:
            yield rule


def test_every_handler_is_authenticated(jp_serverapp: Any) -> None:
    """As the extension template's check_auth: every verb of every ckpt-notebook route is
    wrapped by tornado.web.authenticated (websockets: jupyter_server's ws_authenticated)."""
    wrappers = _auth_wrappers()
    app = jp_serverapp.web_app
    routes = [r for router in (app.wildcard_router, app.default_router) for r in _rules(router)
              if "ckpt-notebook" in getattr(getattr(r.matcher, "regex", None), "pattern", "")]
    assert len(routes) == 13
    checked = 0
    for rule in routes:
        handler = rule.target
        for verb in ("get", "head", "post", "put", "patch", "delete", "options"):
            method = next((c.__dict__[verb] for c in handler.__mro__ if verb in c.__dict__
                           and c.__module__.startswith("ckpt_notebook")), None)
            if method is None:
                continue
            assert method.__code__ in wrappers, f"{handler.__name__}.{verb} is not authenticated"
            checked += 1
    assert checked == 13


@pytest.mark.parametrize(("method", "route", "body"), [
    ("GET", "config", None), ("GET", "checkpoints", None), ("GET", "copies/abcd", None),
    ("POST", "copies", {"src": "models", "name": "stolen"}), ("POST", "requests", {}),
    ("GET", "requests/1-abcdef", None),
    ("POST", "verify", {"ref": "latest"}), ("POST", "pin", {"ref": "latest"}),
    ("POST", "unpin", {"ref": "latest"}), ("POST", "delete", {"ref": "latest", "force": True}),
])
async def test_no_token_is_403_and_touches_nothing(jp_fetch: Any, root: Path, method: str,
                                                   route: str, body: Any) -> None:
    ids = trained(root / "checkpoints", 2)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, *route.split("/"), method=method, headers={"Authorization": ""},
                       body=None if body is None else json.dumps(body))
    assert err.value.code == 403
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert [i.id for i in Store(str(root / "checkpoints")).list()] == ids


async def test_dashboard_needs_auth(jp_fetch: Any, jp_serverapp: Any, root: Path) -> None:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("ckpt-notebook", "dashboard", headers={"Authorization": ""},
                       follow_redirects=False)
    assert err.value.code in (302, 403)  # the login page, never the dashboard
    assert jp_serverapp.web_app.settings["ckpt_notebook_dashboards"].urls == {}  # none started


# -- config and listing --------------------------------------------------------------------
async def test_config(jp_fetch: Any, root: Path, jp_base_url: str) -> None:
    status, doc = await call(jp_fetch, "config")
    assert status == 200
    assert doc["default_store"] == "checkpoints"
    assert os.path.samefile(doc["root"], root)
    assert doc["dashboard_url"] == f"{jp_base_url}ckpt-notebook/dashboard?store=checkpoints"
    status, doc = await call(jp_fetch, "config", params={"path": "models"})
    assert doc["default_store"] == "models/checkpoints"
    assert_error(await call(jp_fetch, "config", params={"path": "../.."}), 403, "forbidden_path")


async def test_config_follows_the_environment(jp_fetch: Any, root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPT_NOTEBOOK_STORE", "s3://bucket/ckpts")
    assert (await call(jp_fetch, "config"))[1]["default_store"] == "s3://bucket/ckpts"
    monkeypatch.setenv("CKPT_NOTEBOOK_STORE", str(root / "shared"))
    assert (await call(jp_fetch, "config"))[1]["default_store"] == "shared"


async def test_listing_newest_first_with_etag(jp_fetch: Any, root: Path) -> None:
    ids = trained(root / "checkpoints", 3)
    Store(str(root / "checkpoints")).pins.add(ids[0])
    answer = await jp_fetch(*API, "checkpoints")
    doc = json.loads(answer.body)
    assert doc["store"] == "checkpoints"
    assert [e["id"] for e in doc["checkpoints"]] == ids[::-1]
    first = doc["checkpoints"][0]
    assert set(first) == {"id", "name", "run", "step", "epoch", "created", "metrics", "status",
                          "pinned", "named", "kind", "size", "new_bytes", "tags"}
    assert (first["step"], first["run"], first["status"]["state"]) == (2, "demo", "kept")
    assert doc["checkpoints"][-1]["pinned"] is True
    etag = answer.headers["Etag"]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "checkpoints", headers={"If-None-Match": etag})
    assert err.value.code == 304
    trained(root / "checkpoints", 1)
    changed = await jp_fetch(*API, "checkpoints", headers={"If-None-Match": etag})
    assert changed.code == 200 and changed.headers["Etag"] != etag


async def test_listing_of_an_empty_and_an_unreachable_store(jp_fetch: Any, root: Path) -> None:
    status, doc = await call(jp_fetch, "checkpoints", params={"store": "nowhere"})
    assert (status, doc["checkpoints"], doc["store"]) == (200, [], "nowhere")
    assert not (root / "nowhere").exists()
    message = assert_error(await call(jp_fetch, "checkpoints",
                                      params={"store": "http://127.0.0.1:9/store"}),
                           502, "store_error")
    assert "127.0.0.1:9" in message


# -- copies --------------------------------------------------------------------------------
async def test_copy_a_folder_to_completion(jp_fetch: Any, root: Path) -> None:
    status, doc = await call(jp_fetch, "copies", {"src": "models", "name": "resnet-v1"})
    assert status == 202, doc
    job = await wait_job(jp_fetch, doc["job"])
    assert job["state"] == "done", job
    assert (job["src"], job["name"], job["to"]) == ("models", "resnet-v1", "checkpoints")
    total = (3 << 20) + len('{"width": 64}')
    assert job["done"] == job["total"] == total
    assert all(d <= t for d, t in job["seen"])
    assert job["checkpoint"]["id"] == "resnet-v1" and job["checkpoint"]["named"] is True
    assert job["checkpoint"]["kind"] == "files"
    assert Store(str(root / "checkpoints")).info("resnet-v1").logical_bytes == total


async def test_copy_a_checkpoint_by_ref_to_another_store(jp_fetch: Any, root: Path,
                                                         tmp_path: Path) -> None:
    ids = trained(root / "checkpoints", 2)
    other = tmp_path / "elsewhere"
    status, doc = await call(jp_fetch, "copies", {"src": "latest", "name": "baseline",
                                                  "store": "checkpoints", "to": str(other)})
    assert status == 202, doc
    job = await wait_job(jp_fetch, doc["job"])
    assert job["state"] == "done", job
    assert job["to"] == str(other)
    assert Store(str(other)).info("baseline").parent == ids[-1]


async def test_copy_from_a_file_and_into_a_relative_store(jp_fetch: Any, root: Path) -> None:
    _, doc = await call(jp_fetch, "copies", {"src": "models/config.json", "name": "cfg",
                                             "to": "models/store"})
    job = await wait_job(jp_fetch, doc["job"])
    assert job["state"] == "done", job
    assert Store(str(root / "models" / "store")).exists("cfg")


@pytest.mark.parametrize("src", [
    "../outside", "models/../../outside", "/etc", "~/secret", "file:///etc/passwd",
    "escape", "escape/passwd", "models/escape-file", "s3://bucket/key",
])
async def test_traversal_is_refused(jp_fetch: Any, root: Path, tmp_path: Path,
                                    src: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "passwd").write_text("secret")
    (root / "escape").symlink_to(outside)
    (root / "models" / "escape-file").symlink_to(outside / "passwd")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in str(p))
    message = assert_error(await call(jp_fetch, "copies", {"src": src, "name": "x"}), 403,
                           "forbidden_path")
    assert repr(src) in message
    assert not (root / "checkpoints").exists()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in str(p))
    assert after == before


@pytest.mark.parametrize("name", ["latest", "best.loss", "has space", ".hidden", "a/b", "",
                                  "x" * 129])
async def test_bad_names(jp_fetch: Any, root: Path, name: str) -> None:
    code = "bad_request" if name == "" else "invalid_name"
    message = assert_error(await call(jp_fetch, "copies", {"src": "models", "name": name}),
                           400, code)
    if name:
        assert message.startswith(f"invalid checkpoint name {name!r}: names are ")
    assert not (root / "checkpoints").exists()


async def test_an_existing_name_is_409(jp_fetch: Any, root: Path) -> None:
    copying.copy(str(root / "models"), "taken", to=str(root / "checkpoints"))
    message = assert_error(await call(jp_fetch, "copies", {"src": "models", "name": "taken"}),
                           409, "exists")
    assert "'taken' already exists" in message and "write-once" in message


async def test_unknown_ref_and_missing_fields(jp_fetch: Any, root: Path) -> None:
    trained(root / "checkpoints", 1)
    message = assert_error(await call(jp_fetch, "copies", {"src": "nosuch", "name": "n"}),
                           404, "not_found")
    assert "'nosuch'" in message
    assert_error(await call(jp_fetch, "copies", {"src": "models/nofile", "name": "n"}),
                 404, "not_found")
    assert_error(await call(jp_fetch, "copies", {"name": "n"}), 400, "bad_request")
    assert_error(await call(jp_fetch, "copies", {"src": 3, "name": "n"}), 400, "bad_request")
    status, doc = await call(jp_fetch, "copies/ffff")
    assert_error((status, doc), 404, "not_found")
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "copies", method="POST", body="not json")
    assert err.value.code == 400 and json.loads(err.value.response.body)["code"] == "bad_request"


def _broken_zip(path: Path) -> None:
    """A zip whose second member's bytes do not match its CRC: found only while copying."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.bin", os.urandom(1 << 20))
        z.writestr("b.bin", b"B" * (1 << 20))
    data = bytearray(path.read_bytes())
    at = data.index(b"B" * 64)
    data[at + 1000] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_failing_copy_commits_nothing(jp_fetch: Any, root: Path) -> None:
    _broken_zip(root / "models.zip")
    status, doc = await call(jp_fetch, "copies", {"src": "models.zip", "name": "broken"})
    assert status == 202, doc
    job = await wait_job(jp_fetch, doc["job"])
    assert job["state"] == "failed", job
    assert job["error"]["code"] in ("bad_request", "integrity")
    assert "nothing was committed" in job["error"]["message"] or "b.bin" in job["error"]["message"]
    assert "checkpoint" not in job
    store = Store(str(root / "checkpoints"))
    assert store.list() == [] and not store.exists("broken")


async def test_copies_do_not_block_other_requests(jp_fetch: Any, root: Path) -> None:
    """A copy waiting for the store's lock (held here, as gc would) leaves the server
    answering; once the lock is free the copy completes."""
    store = Store(str(root / "checkpoints"))
    store.ensure_writable()
    with store.lock(exclusive=True):
        status, doc = await call(jp_fetch, "copies", {"src": "models", "name": "waits"})
        assert status == 202
        await asyncio.sleep(0.3)
        for _ in range(3):
            assert (await call(jp_fetch, "config"))[0] == 200
            assert (await call(jp_fetch, f"copies/{doc['job']}"))[1]["state"] == "running"
    assert (await wait_job(jp_fetch, doc["job"]))["state"] == "done"


# -- requests, verify, pin, unpin, delete --------------------------------------------------
async def test_request_a_save(jp_fetch: Any, root: Path) -> None:
    status, doc = await call(jp_fetch, "requests", {"store": "checkpoints"})
    assert status == 201
    pending = Store(str(root / "checkpoints")).requests.take("save")
    assert [r["id"] for r in pending] == [doc["request"]]
    (root / "notastore").mkdir()
    (root / "notastore" / "data.txt").write_text("x")
    assert_error(await call(jp_fetch, "requests", {"store": "notastore"}), 502, "store_error")


async def test_a_request_says_whether_a_loop_took_it(jp_fetch: Any, root: Path) -> None:
    """The UI can tell the user whether a training loop took the save request, or whether it
    expired unsaved (issue 13: 'the UI says whether a loop took it')."""
    store = Store(str(root / "checkpoints"))
    store.ensure_writable()
    status, doc = await call(jp_fetch, "requests", {"store": "checkpoints"})
    assert status == 201
    route = f"requests/{doc['request']}"
    assert await call(jp_fetch, route, params={"store": "checkpoints"}) == (
        200, {"request": doc["request"], "state": "pending"})
    assert [r["id"] for r in store.requests.take("save")] == [doc["request"]]  # a loop's step()
    assert (await call(jp_fetch, route, params={"store": "checkpoints"}))[1]["state"] == "taken"
    old = store.requests.put("save", lifetime_s=0.0)  # no loop ran within its lifetime
    answer = await call(jp_fetch, f"requests/{old}", params={"store": "checkpoints"})
    assert answer[1]["state"] == "expired"
    store.requests.take("save")  # a loop that comes later drops it, and it stays expired
    answer = await call(jp_fetch, f"requests/{old}", params={"store": "checkpoints"})
    assert answer[1]["state"] == "expired"


async def test_verify(jp_fetch: Any, root: Path) -> None:
    trained(root / "checkpoints", 2)
    store = Store(str(root / "checkpoints"))
    copying.copy(str(root / "models"), "v1", to=store)
    status, doc = await call(jp_fetch, "verify", {"store": "checkpoints", "ref": "v1"})
    assert (status, doc) == (200, {"checkpoint": "v1", "ok": True, "problems": []})
    digest = max(store.manifest("v1").blobs.items(), key=lambda kv: kv[1])[0]
    blob = root / "checkpoints" / store.blob_path(digest)
    blob.chmod(0o644)
    blob.write_bytes(b"rotten" + blob.read_bytes()[6:])
    status, doc = await call(jp_fetch, "verify", {"ref": "v1"})
    assert status == 200 and doc["ok"] is False and digest[:16] in doc["problems"][0]
    assert_error(await call(jp_fetch, "verify", {"ref": "best.accuracy"}), 404, "not_found")


async def test_pin_unpin_delete(jp_fetch: Any, root: Path) -> None:
    ids = trained(root / "checkpoints", 3)
    store = Store(str(root / "checkpoints"))
    status, doc = await call(jp_fetch, "pin", {"ref": ids[0]})
    assert status == 200 and doc["checkpoint"]["id"] == ids[0] and doc["checkpoint"]["pinned"]
    assert ids[0] in store.pins.ids()
    message = assert_error(await call(jp_fetch, "delete", {"ref": ids[0]}), 409, "needs_force")
    assert "pinned" in message and store.exists(ids[0])
    status, doc = await call(jp_fetch, "unpin", {"ref": ids[0]})
    assert status == 200 and doc["checkpoint"]["pinned"] is False
    assert (await call(jp_fetch, "delete", {"ref": ids[0]})) == (200, {"deleted": ids[0]})
    assert not store.exists(ids[0])
    copying.copy(str(root / "models"), "named", to=store)
    assert_error(await call(jp_fetch, "delete", {"ref": "named"}), 409, "needs_force")
    assert (await call(jp_fetch, "delete", {"ref": "named", "force": True}))[1] == {
        "deleted": "named"}
    assert_error(await call(jp_fetch, "delete", {"ref": ids[1], "force": "yes"}), 400,
                 "bad_request")
    assert_error(await call(jp_fetch, "pin", {"ref": "nope-nope"}), 404, "not_found")


async def test_busy_store_is_409(jp_fetch: Any, root: Path) -> None:
    """gc holds the store; a copy that cannot get it in time fails as busy (short timeout:
    the store's own 30 s is too long for a test, so this checks the mapping only)."""
    from ckpt_notebook.errors import StoreBusyError
    from ckpt_notebook.server.codes import failure

    assert (failure(StoreBusyError("busy")).status, failure(StoreBusyError("b")).code) == (
        409, "busy")


# -- the dashboard -------------------------------------------------------------------------
async def test_dashboard_served_through_jupyter(jp_fetch: Any, jp_serverapp: Any, root: Path,
                                                jp_base_url: str, jp_ws_fetch: Any) -> None:
    trained(root / "checkpoints", 2)
    dashboards = jp_serverapp.web_app.settings["ckpt_notebook_dashboards"]
    try:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("ckpt-notebook", "dashboard", params={"store": "checkpoints"},
                           follow_redirects=False, request_timeout=150)
        assert err.value.code == 302
        location = err.value.response.headers["Location"]
        key = re.fullmatch(rf"{re.escape(jp_base_url)}ckpt-notebook/dashboard/([0-9a-f]{{16}})/",
                           location)
        assert key is not None, location
        page = await jp_fetch("ckpt-notebook", "dashboard", key.group(1) + "/")
        html = page.body.decode()
        assert "bokeh" in html.lower() and "cdn." not in html
        assert not re.search(r"""(src|href)=["']https?://""", html)
        scripts = re.findall(r'src="(static/[^"?]+)', html)
        assert scripts
        for script in scripts[:3]:
            js = await jp_fetch("ckpt-notebook", "dashboard", key.group(1), *script.split("/"))
            assert js.code == 200 and len(js.body) > 100
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("ckpt-notebook", "dashboard", key.group(1) + "/", headers={
                "Authorization": ""}, follow_redirects=False)
        assert err.value.code in (302, 403)
        token = re.search(r'"token":"([^"]+)"', html)
        assert token is not None
        ws = await jp_ws_fetch("ckpt-notebook", "dashboard", key.group(1), "ws",
                               subprotocols=["bokeh", token.group(1)])
        first = await asyncio.wait_for(ws.read_message(), 30)
        assert first is not None and "ACK" in str(first)
        ws.close()
    finally:
        await dashboards.close()


def test_loading_the_extension_imports_neither_torch_nor_panel() -> None:
    import subprocess
    import sys

    code = ("import sys, ckpt_notebook.server as s; from ckpt_notebook.server import handlers, "
            "dashboard; print(sorted(m for m in ('torch', 'panel', 'bokeh') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
