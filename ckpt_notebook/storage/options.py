"""Storage options (fsspec's keyword arguments) for a URL: given, configured, or from the
environment.

- ``--storage-option KEY=VALUE`` (the CLI; repeatable): VALUE is read as JSON when it parses
  (``true``, ``1024``, ``{"region_name": "eu-west-1"}``), else taken as a string.
- A config file, ``$CKPT_NOTEBOOK_CONFIG`` or ``~/.config/ckpt_notebook/config.toml``, with a
  table per URL prefix; every table whose prefix the URL starts with (at a ``/`` boundary)
  applies, the longer prefix winning::

      [storage_options."s3://my-bucket"]
      key = "..."
      client_kwargs = { endpoint_url = "http://127.0.0.1:9000" }

- ``$S3_ENDPOINT_URL`` (the convention Composer and others document) for ``s3://`` URLs that
  name no endpoint; fsspec's own ``FSSPEC_S3_*`` variables are applied by fsspec itself and
  win over it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, StoreError

__all__ = ["CONFIG_ENV", "config_path", "inherited_options", "load_config", "options_for",
           "parse_storage_option"]

CONFIG_ENV = "CKPT_NOTEBOOK_CONFIG"
ENDPOINT_ENV = "S3_ENDPOINT_URL"
_S3 = ("s3", "s3a")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); VALUE is JSON when it parses, else the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InvalidArgumentError(f"storage option {text!r} is not KEY=VALUE (e.g. anon=true "
                                   "or client_kwargs='{\"region_name\": \"eu-west-1\"}')")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def config_path() -> Path:
    given = os.environ.get(CONFIG_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base, "ckpt_notebook", "config.toml")


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``[storage_options."PREFIX"]`` tables of the config file ({} when there is none)."""
    import tomllib

    where = Path(path) if path is not None else config_path()
    try:
        doc = tomllib.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise StoreError(f"cannot read the config file {where}: not valid TOML ({err}); fix "
                         f"it, or point ${CONFIG_ENV} at another file") from err
    tables = doc.get("storage_options", {})
    bad = [k for k, v in tables.items() if not isinstance(v, dict)]
    if not isinstance(tables, dict) or bad:
        raise StoreError(f"config file {where}: storage_options holds one table per URL "
                         '(e.g. [storage_options."s3://bucket"] then key = "..."), not '
                         f"{bad[0] if bad else 'a value'!r}")
    return tables


def _matches(url: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return url == prefix or url.startswith(prefix + "/")


def options_for(url: str, given: Mapping[str, Any] | None = None, *,
                config: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The storage options for ``url``: the matching ``config`` tables (shorter prefixes
    first), then ``given`` on top, then ``$S3_ENDPOINT_URL`` where no endpoint is named."""
    out: dict[str, Any] = {}
    for prefix in sorted((p for p in (config or {}) if _matches(url, p)), key=len):
        out.update((config or {})[prefix])
    out.update(given or {})
    return with_endpoint(url, out)


def with_endpoint(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` plus ``endpoint_url=$S3_ENDPOINT_URL`` for an ``s3://`` URL that names no
    endpoint (neither here nor in fsspec's own configuration)."""
    out = dict(options)
    endpoint = os.environ.get(ENDPOINT_ENV)
    if not endpoint or protocol_of(url) not in _S3:
        return out
    import fsspec.config

    named = [out, out.get("client_kwargs") or {}, fsspec.config.conf.get("s3", {}),
             fsspec.config.conf.get("s3", {}).get("client_kwargs") or {}]
    if not any("endpoint_url" in d for d in named):
        out["endpoint_url"] = endpoint
    return out


def inherited_options(url: str, store_url: str, store_options: Mapping[str, Any]) -> dict[str, Any]:
    """Options for another ``url`` a store's user names (a weights file, a copy source): the
    store's own when it speaks the same protocol (its credentials, endpoint...), else none."""
    same = protocol_of(url) == protocol_of(store_url)
    return with_endpoint(url, store_options if same else {})
