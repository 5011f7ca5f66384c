"""Who may use a served dashboard: its token, and the Host and Origin each request carries.

``ckpt dashboard`` binds 127.0.0.1, but every local user can reach 127.0.0.1, and so can any
web page the user's browser opens (DNS rebinding: ``evil.example`` resolves to 127.0.0.1
once its page has loaded). So every request - the page, static files, Bokeh's websocket -
passes :class:`Access` first, as Jupyter's do:

- Host must be a name this server is reached by (``127.0.0.1:PORT``, ``localhost:PORT``,
  the bound address); a rebound name is refused.
- Origin, wherever a browser sends one (the websocket, fetches, forms), must be one of
  those hosts too.
- The token: ``?token=T`` once (the URL ``ckpt dashboard`` prints) sets an HttpOnly,
  SameSite=Strict cookie and sends the browser on to the clean URL; after that the cookie
  (or an ``Authorization: token T`` header, for scripts) is the key. Comparisons are
  constant-time.

Refused requests get 403 and one line saying why. The gate is one tornado rule placed before
Bokeh's and Panel's routes (``Application.add_handlers``), so no route escapes it. Bokeh's
own ``auth_provider`` hook was not enough: it guards Bokeh's page and websocket handlers but
not static files, Panel's extra routes or the Host header.

The cookie is named after the port because browsers send 127.0.0.1 cookies to every port;
its value is derived from the token, not the token itself. A page the redirect sends on is
used instead of an HTTP redirect because a SameSite=Strict cookie set during a redirect
chain that another site (or a ``file://`` page, as ``--show`` opens) started is not sent on
the redirect's second hop; a navigation the dashboard's own page starts is same-site.

This module imports only the standard library; tornado is imported when a server is gated.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit

from ...errors import InvalidArgumentError

__all__ = ["TOKEN_ENV", "Access", "gate", "token_from_args"]

TOKEN_ENV = "CKPT_NOTEBOOK_DASHBOARD_TOKEN"  # noqa: S105 - a variable's name
_SAFE_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused (403), in one line."""

    message: str


@dataclass(frozen=True)
class Login:
    """A valid ``?token=``: set the cookie and go on to ``clean_url``."""

    clean_url: str


@dataclass(frozen=True)
class Access:
    """The rules one served dashboard applies to every request.

    ``token``: the secret (``None``: no token; anyone who can reach the port may use it).
    ``hosts``: the ``host:port`` names requests may be addressed to (lower case).
    """

    token: str | None
    hosts: frozenset[str]
    port: int

    @classmethod
    def for_server(cls, token: str | None, hosts: Iterable[str], port: int) -> Access:
        return cls(token, frozenset(h.lower() for h in hosts), port)

    @property
    def cookie_name(self) -> str:
        return f"ckpt-dashboard-{self.port}"

    def cookie_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"ckpt-dashboard-cookie",
                        hashlib.sha256).hexdigest()

    def url(self, base: str) -> str:
        """``base`` (``http://host:port/``) with the token the browser logs in with."""
        return f"{base}?{urlencode({'token': self.token})}" if self.token else base

    # -- the checks ---------------------------------------------------------------------------
    def verdict(self, method: str, path: str, query: dict[str, list[bytes]],
                headers: Any) -> Refusal | Login | None:
        """``None``: let the request through; else refuse it or log the browser in."""
        host = _with_port(headers.get("Host") or "")
        if host not in self.hosts:
            return Refusal(f"Host {_quote(host)} is not an address of this dashboard; open the "
                           f"URL `ckpt dashboard` printed (http://127.0.0.1:{self.port}/...)")
        origin = headers.get("Origin")
        if origin is not None and _origin_host(origin) not in self.hosts:
            return Refusal(f"Origin {_quote(origin)} may not use this dashboard; open it from "
                           "the URL `ckpt dashboard` printed")
        if self.token is None or self._has_key(headers):
            return None
        given = query.get("token")
        if given and _same(given[-1].decode("utf-8", "replace"), self.token):
            upgrade = (headers.get("Upgrade") or "").lower() == "websocket"
            return Login(_clean_url(path, query)) if method in _SAFE_METHODS and not upgrade \
                else None
        why = "a wrong token" if given else "no token"
        return Refusal(f"this dashboard needs its token ({why} given): open the URL "
                       "`ckpt dashboard` printed, which ends in ?token=...")

    def _has_key(self, headers: Any) -> bool:
        assert self.token is not None
        auth = (headers.get("Authorization") or "").split(None, 1)
        if len(auth) == 2 and auth[0].lower() in ("token", "bearer") \
                and _same(auth[1].strip(), self.token):
            return True
        cookies: SimpleCookie = SimpleCookie()
        try:
            for line in headers.get_list("Cookie"):
                cookies.load(line)
        except CookieError:
            return False
        morsel = cookies.get(self.cookie_name)
        return morsel is not None and _same(morsel.value, self.cookie_value())


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _with_port(host: str, default: int = 80) -> str:
    host = host.strip().lower()
    has_port = ":" in host.rsplit("]", 1)[-1]
    return host if has_port or not host else f"{host}:{default}"


def _origin_host(origin: str) -> str:
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return ""
    if parts.scheme != "http" or not parts.netloc:
        return ""  # served over http only; "null" (a file:// page, a sandbox) included
    return _with_port(parts.netloc)


def _quote(text: str) -> str:
    return repr(text[:80])


def _clean_url(path: str, query: dict[str, list[bytes]]) -> str:
    """The same page without the token (a relative URL: never another host)."""
    rest = [(k, v.decode("utf-8", "replace")) for k, vs in query.items() if k != "token"
            for v in vs]
    path = "/" + path.lstrip("/\\")  # "//evil.example" (or "/\\evil...") is another host
    return path + (f"?{urlencode(rest)}" if rest else "")


def _login_page(url: str) -> str:
    target = html.escape(url, quote=True)
    return ("<!doctype html><meta charset='utf-8'><title>ckpt dashboard</title>"
            f"<meta http-equiv='refresh' content='0;url={target}'>"
            f"<script>location.replace({html.escape(json.dumps(url), quote=False)})</script>"
            f"<a href='{target}'>Open the dashboard</a>\n")


# -- the tornado side ----------------------------------------------------------------------------
def gate(app: Any, access: Access) -> None:
    """Put ``access`` in front of every route of the tornado application ``app``."""
    from tornado.routing import Matcher, Rule
    from tornado.web import RequestHandler

    class Gate(Matcher):
        def match(self, request: Any) -> dict[str, Any] | None:
            verdict = access.verdict(request.method or "GET", request.path,
                                     request.query_arguments, request.headers)
            return None if verdict is None else {"target_kwargs": {"verdict": verdict}}

    class Answer(RequestHandler):
        def initialize(self, verdict: Refusal | Login) -> None:
            self.verdict = verdict

        def prepare(self) -> None:
            self.set_header("Cache-Control", "no-store")
            self.set_header("Referrer-Policy", "no-referrer")
            self.set_header("X-Content-Type-Options", "nosniff")
            if isinstance(self.verdict, Login):
                self.set_cookie(access.cookie_name, access.cookie_value(), path="/",
                                httponly=True, samesite="Strict")
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.finish(_login_page(self.verdict.clean_url))
                return
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"403: {self.verdict.message}\n")

        def check_xsrf_cookie(self) -> None:
            pass

    app.add_handlers(r".*", [Rule(Gate(), Answer)])


# -- options ------------------------------------------------------------------------------------
def token_from_args(args: argparse.Namespace) -> str | None:
    """The token to serve with: --token, else $CKPT_NOTEBOOK_DASHBOARD_TOKEN, else a random
    one; ``None`` with --no-token."""
    if getattr(args, "no_token", False):
        return None
    token = getattr(args, "token", None)
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        return new_token()
    if not token.strip():
        raise InvalidArgumentError("--token is empty",
                                   hint="pass a token, or --no-token to serve without one")
    return str(token)


def new_token() -> str:
    return secrets.token_urlsafe(32)
