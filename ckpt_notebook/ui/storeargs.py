"""The CLI's ``--storage-option KEY=VALUE`` (with the config file behind it, see
:mod:`ckpt_notebook.storage.options`), and the stores it opens with them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..storage import Store

__all__ = ["add_storage_option_arguments", "cli_store"]

STORAGE_OPTION_HELP = ("an fsspec storage option for the store (and other URLs of its kind): "
                       "KEY=VALUE, VALUE read as JSON when it parses (repeatable; also "
                       "[storage_options.\"URL\"] tables in $CKPT_NOTEBOOK_CONFIG or "
                       "~/.config/ckpt_notebook/config.toml)")


def _storage_option(text: str) -> tuple[str, Any]:
    from ..storage.options import parse_storage_option

    try:
        return parse_storage_option(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_storage_option_arguments(parser: argparse.ArgumentParser,
                                 common: argparse.ArgumentParser) -> None:
    """``--storage-option`` before the command (``parser``) and after it (``common``)."""
    parser.add_argument("--storage-option", dest="storage_option", action="append",
                        default=[], type=_storage_option, metavar="KEY=VALUE",
                        help=STORAGE_OPTION_HELP)
    common.add_argument("--storage-option", dest="storage_option_after", action="append",
                        default=argparse.SUPPRESS, type=_storage_option, metavar="KEY=VALUE",
                        help=STORAGE_OPTION_HELP)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [*getattr(args, "storage_option", []), *getattr(args, "storage_option_after", [])]
    return dict(pairs)


def cli_store(url: str | None, args: argparse.Namespace) -> Store:
    """The store at ``url`` (``--store``, ``--to``) with the options the flags and the
    config file give it."""
    from ..storage import Store
    from ..storage.backend import resolve_url
    from ..storage.options import load_config, options_for

    resolved = resolve_url(url)
    return Store(resolved, **options_for(resolved, given_options(args), config=load_config()))
