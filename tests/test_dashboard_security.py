"""Who may use the dashboard, and what it may do: ``ckpt dashboard`` served on 127.0.0.1 in a
subprocess and spoken to with plain HTTP and websocket clients (the token, the Host and Origin
checks), the model's destructive actions under the CLI's rules, and the permissions of what a
copy writes. Issue 11 part 5: another local user deleted a pinned checkpoint, pruned, and
copied a checkpoint into a world-readable folder through an open dashboard."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import pwd
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import pythonpath_env
from helpers.dashboard import Dashboard

from ckpt_notebook import Checkpointer, Store
from ckpt_notebook.ui.dashboard import access, app
from ckpt_notebook.ui.dashboard.model import DashboardModel

START_S = 90


def make_store(root: Path) -> dict[str, str]:
    """Run ``a`` saves at steps 1..4 (keep only the newest); step 1 is pinned, step 2 copied to
    the named checkpoint ``keeper``. Returns ids by step, and ``keeper``."""
    model = torch.nn.Linear(4, 2)
    ck = Checkpointer(root, run="a", model=model, rng=False, async_save=False)
    ids = {}
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.add_(1.0)
        ids[str(step)] = ck.save(step=step, metrics={"loss": 1.0 / step}).id
    ck.set_policy(keep_last=1)
    store = Store(str(root))
    store.pins.add(ids["1"])
    from ckpt_notebook.manager.copying import copy

    ids["keeper"] = copy(ids["2"], "keeper", store=store).id
    return ids


def request(port: int, path: str = "/", headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def websocket(port: int, headers: dict[str, str], subprotocols: list[str] | None = None,
              ) -> str:
    """Open Bokeh's websocket; returns ``"open: <first message>"`` or ``"refused: <why>"``."""
    from tornado import httpclient
    from tornado import websocket as ws

    async def run() -> str:
        req = httpclient.HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers,
                                     request_timeout=60)
        try:
            conn = await ws.websocket_connect(req, subprotocols=subprotocols)
        except Exception as err:
            return f"refused: {err}"
        message = await conn.read_message()
        conn.close()
        return f"open: {message}"
    return asyncio.run(run())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dash-security") / "store"
    return root, make_store(root)


@pytest.fixture(scope="module")
def server(store: tuple[Path, dict[str, str]]) -> Iterator[Dashboard]:
    srv = Dashboard(store[0], start_s=START_S)
    yield srv
    srv.stop()


def login(server: Dashboard) -> str:
    """The cookie header a browser gets from opening the printed URL."""
    status, headers, body = request(server.port, f"/?token={server.token}")
    assert status == 200, body
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    return cookie.split(";", 1)[0]


def this_host(server: Dashboard) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{server.port}"}


# -- the token --------------------------------------------------------------------------------
def test_the_printed_url_carries_a_random_token(server: Dashboard) -> None:
    assert len(server.token) >= 40 and server.token.replace("-", "").replace("_", "").isalnum()
    assert "WARNING" not in "".join(server.lines)


def test_no_token_is_refused(server: Dashboard) -> None:
    for path in ("/", "/static/js/bokeh.min.js", "/favicon.ico", "/nothing-here"):
        status, _, body = request(server.port, path)
        assert status == 403, (path, status)
        assert body.count("\n") == 1 and "token" in body, body
    assert request(server.port, "/", method="POST")[0] == 403


def test_a_wrong_token_is_refused(server: Dashboard) -> None:
    assert request(server.port, "/?token=wrong")[0] == 403
    assert request(server.port, f"/?token={server.token[:-1]}")[0] == 403
    name = f"ckpt-dashboard-{server.port}"
    assert request(server.port, "/", {"Cookie": f"{name}={server.token}"})[0] == 403
    assert request(server.port, "/", {"Authorization": "token nope"})[0] == 403


def test_the_token_in_the_url_sets_a_cookie_and_leads_to_the_clean_url(server: Dashboard) -> None:
    status, headers, body = request(server.port, f"/?token={server.token}&theme=dark")
    assert status == 200 and server.token not in body
    assert 'location.replace("/?theme=dark")' in body  # the token leaves the address bar
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
    cookie = login(server)
    assert server.token not in cookie  # the cookie is derived from the token, not the token
    status, _, page = request(server.port, "/", {"Cookie": cookie})
    assert status == 200 and "ckpt dashboard" in page
    assert request(server.port, "/static/js/bokeh.min.js", {"Cookie": cookie})[0] == 200
    # scripts may send the token as a header instead
    assert request(server.port, "/", {"Authorization": f"token {server.token}"})[0] == 200


def test_the_websocket_needs_the_cookie(server: Dashboard) -> None:
    cookie = login(server)
    _, _, page = request(server.port, "/", {"Cookie": cookie})
    session = re.search(r'"token":\s*"([^"]+)"', page)
    assert session, "no Bokeh session token in the page"
    protocols = ["bokeh", session.group(1)]
    origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert websocket(server.port, origin, protocols).startswith("refused: HTTP 403")
    opened = websocket(server.port, {**origin, "Cookie": cookie}, protocols)
    assert opened.startswith("open:") and "ACK" in opened, opened


# -- Host and Origin --------------------------------------------------------------------------
def test_a_foreign_host_is_refused(server: Dashboard) -> None:
    """DNS rebinding: a page of evil.example, its name now resolving to 127.0.0.1, would
    reach the dashboard with ``Host: evil.example:PORT``."""
    cookie = login(server)
    port = server.port
    assert request(port, "/", {"Cookie": cookie, **this_host(server)})[0] == 200
    assert request(port, "/", {"Cookie": cookie, "Host": f"localhost:{port}"})[0] == 200
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}",
                 f"127.0.0.1.evil.example:{port}"):
        status, _, body = request(port, "/", {"Cookie": cookie, "Host": host})
        assert status == 403 and "Host" in body, (host, status)
        assert request(port, f"/?token={server.token}", {"Host": host})[0] == 403
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert websocket(port, {**rebound, "Cookie": cookie}).startswith("refused: HTTP 403")
    same_origin = {"Host": f"evil.example:{port}", "Origin": f"http://127.0.0.1:{port}"}
    assert websocket(port, {**same_origin, "Cookie": cookie}).startswith("refused: HTTP 403")


def test_a_foreign_origin_is_refused(server: Dashboard) -> None:
    cookie = login(server)
    port = server.port
    for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null",
                   f"https://127.0.0.1:{port}"):
        headers = {"Cookie": cookie, "Origin": origin}
        assert websocket(port, headers).startswith("refused: HTTP 403"), origin
        status, _, body = request(port, "/", headers, method="POST")
        assert status == 403 and "Origin" in body, (origin, status)
        assert request(port, "/", headers)[0] == 403, origin


def test_another_local_user_without_the_token_is_refused(server: Dashboard) -> None:
    """What uid nobody did: open the dashboard's port (the URL is in ``ss -ltn``; the token
    is not)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as uid nobody")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n urllib.request.urlopen(sys.argv[1], timeout=60); print(200)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n")

    def become_nobody() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    out = subprocess.run([python, "-I", "-c", code, f"http://127.0.0.1:{server.port}/"],
                         capture_output=True, text=True, cwd="/", timeout=120,
                         preexec_fn=become_nobody, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["403"], out.stderr


# -- options ----------------------------------------------------------------------------------
def test_token_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       ) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(app, "serve", lambda store, **kw: seen.append(kw["token"]))
    monkeypatch.delenv(access.TOKEN_ENV, raising=False)
    assert app.main(["--store", "s3://b/p"]) == 0
    assert isinstance(seen[-1], str) and len(seen[-1]) >= 40
    assert app.main(["--store", "s3://b/p"]) == 0 and seen[-1] != seen[-2]  # new each time
    assert app.main(["--store", "s3://b/p", "--token", "my-secret"]) == 0
    assert seen[-1] == "my-secret"
    monkeypatch.setenv(access.TOKEN_ENV, "from-env")
    assert app.main(["--store", "s3://b/p"]) == 0 and seen[-1] == "from-env"
    assert app.main(["--store", "s3://b/p", "--no-token"]) == 0 and seen[-1] is False
    assert app.main(["--store", "s3://b/p", "--token", " "]) == 1
    assert "--no-token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        app.main(["--token", "x", "--no-token"])
    args = argparse.Namespace(token=None, no_token=False)
    monkeypatch.delenv(access.TOKEN_ENV)
    assert access.token_from_args(args) != access.token_from_args(args)


def test_no_token_warns_and_still_checks_the_host(store: tuple[Path, dict[str, str]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    port = app.free_port()
    server = app.serve(str(store[0]), port=port, threaded=True, token=False)
    try:
        out = capsys.readouterr()
        assert "WARNING" in out.err and "without a token" in out.err
        assert f"at http://127.0.0.1:{port}/ " in out.out  # no ?token=
        assert request(port, "/")[0] == 200
        assert request(port, "/", {"Host": f"evil.example:{port}"})[0] == 403
    finally:
        server.stop()


def test_the_login_page_never_leads_to_another_host() -> None:
    rules = access.Access.for_server("t", ["127.0.0.1:1"], 1)
    for path in ("//evil.example/", "/\\evil.example", "///evil.example"):
        verdict = rules.verdict("GET", path, {"token": [b"t"]}, _Headers({"Host": "127.0.0.1:1"}))
        assert isinstance(verdict, access.Login) and verdict.clean_url == "/evil.example" + (
            "/" if path.endswith("/") else ""), (path, verdict)


class _Headers(dict[str, str]):
    def get_list(self, name: str) -> list[str]:
        return [self[name]] if name in self else []


# -- what the page may do ---------------------------------------------------------------------
@pytest.fixture
def model(store: tuple[Path, dict[str, str]], tmp_path: Path) -> DashboardModel:
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store[0], root)
    return DashboardModel(str(root))


def test_deleting_a_pinned_or_named_checkpoint_needs_force(model: DashboardModel,
                                                            store: tuple[Path, dict[str, str]],
                                                            ) -> None:
    ids = store[1]
    out = model.delete(ids["1"])
    assert not out.ok and "pinned" in out.message and "force" in out.message
    out = model.delete("keeper")
    assert not out.ok and "named" in out.message and "force" in out.message
    assert model.store.exists(ids["1"]) and model.store.exists("keeper")
    assert model.needs_force(ids["1"]) and model.needs_force(ids["keeper"])
    assert not model.needs_force(ids["3"])
    assert model.delete(ids["3"]).ok  # neither: no force needed
    assert model.delete(ids["1"], force=True).ok
    assert model.delete("keeper", force=True).ok
    assert not model.store.exists(ids["1"]) and not model.store.exists("keeper")


def test_the_page_deletes_a_pinned_checkpoint_only_with_force_ticked(
        model: DashboardModel, store: tuple[Path, dict[str, str]]) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    pinned, plain = store[1]["1"], store[1]["3"]
    view = DashboardView(model)
    model.selected = plain
    view._on_delete_ask()
    assert view.delete_confirm.visible and not view.delete_force.visible
    model.selected = pinned
    view._on_delete_ask()
    assert view.delete_force.visible and "tick force" in view.delete_question.object
    view._on_delete()  # force not ticked
    assert model.store.exists(pinned) and view.actions_note.kind == "error"
    assert "pinned" in view.actions_note.text and view.delete_confirm.visible
    view.delete_force.value = True
    view._on_delete()
    assert not model.store.exists(pinned) and not view.delete_confirm.visible
    assert view.delete_force.value is False  # ticked for one delete only


def test_prune_never_removes_pinned_named_or_newest(model: DashboardModel,
                                                    store: tuple[Path, dict[str, str]]) -> None:
    ids = store[1]
    assert model.prune().ok
    left = {i.id for i in model.store.list()}
    assert left == {ids["1"], ids["keeper"], ids["4"]}  # pinned, named, newest


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("store_mode", [0o700, 0o750])
def test_a_copy_is_no_more_open_than_its_store(model: DashboardModel, tmp_path: Path,
                                               store: tuple[Path, dict[str, str]],
                                               store_mode: int) -> None:
    os.chmod(model.store.backend.root, store_mode)
    dest = tmp_path / "shared" / "copy"
    out = model.copy(store[1]["4"], "exported", str(dest))
    assert out.ok, out.message
    assert Store(str(dest)).exists("exported")
    modes = _modes(dest)
    assert len(modes) > 3
    too_open = {p: oct(m) for p, m in modes.items() if m & 0o077 & ~store_mode}
    assert too_open == {}


def test_a_copy_into_a_more_open_folder_is_refused(model: DashboardModel, tmp_path: Path,
                                                   store: tuple[Path, dict[str, str]]) -> None:
    os.chmod(model.store.backend.root, 0o700)
    dest = tmp_path / "public"
    dest.mkdir()
    os.chmod(dest, 0o755)
    out = model.copy(store[1]["4"], "exported", str(dest))
    assert not out.ok and "chmod" in out.message and str(dest) in out.message
    assert list(dest.iterdir()) == []
    os.chmod(dest, 0o700)
    assert model.copy(store[1]["4"], "exported", str(dest)).ok


def test_the_served_process_writes_nothing_more_open_than_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)
    code = ("import os, sys; from ckpt_notebook import Store; "
            "from ckpt_notebook.ui.dashboard.app import _restrict_umask; os.umask(0o002); "
            "_restrict_umask(Store(sys.argv[1])); print(oct(os.umask(0)))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                         text=True, env=pythonpath_env(), check=True)
    assert out.stdout.split() == ["0o27"]
