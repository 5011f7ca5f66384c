"""Argument types shared by ``ckpt`` and ``%checkpoint``: one wording for one mistake."""

from __future__ import annotations

import argparse

from .. import retention
from ..types import NAME_RULE, is_valid_name

__all__ = ["archive_limit", "checkpoint_name", "count", "duration", "key_rename", "metric_name",
           "metric_pair", "seconds"]


def count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def seconds(text: str) -> float:
    """A number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text!r}")
    return value


def duration(text: str) -> float:
    """``3600``, ``90s``, ``10min``, ``2h``, ``1d``, ``1h30m`` -> seconds (more than zero)."""
    try:
        seconds = retention.parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {text!r}")
    return seconds


def checkpoint_name(text: str) -> str:
    if not is_valid_name(text):
        raise argparse.ArgumentTypeError(f"invalid checkpoint name {text!r}: names are "
                                         f"{NAME_RULE}")
    return text


def archive_limit(text: str) -> tuple[str, str]:
    """``size=200G`` -> ``("size", "200G")``: raises a limit on what an archive may extract
    (``size``, ``ratio``, ``entries``); checked here, applied by the copy."""
    from ..manager.archives import parse_limit  # on first use: keeps `ckpt --help` fast

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (size=200G, ratio=1000 or "
                                         f"entries=1000000), got {text!r}")
    try:
        parse_limit(key, value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return key, value


def metric_name(text: str) -> str:
    """A metric's name, such as ``val_loss``: not blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a metric name such as val_loss")
    return text


def metric_pair(text: str) -> tuple[str, float]:
    """``val_loss=0.31`` -> ``("val_loss", 0.31)``."""
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def key_rename(text: str) -> tuple[str, str]:
    """``backbone.=encoder.`` -> ``("backbone.", "encoder.")``: one ``key_map`` entry."""
    from ..capture.keys import rename_problem

    old, sep, new = text.partition("=")
    problem = "no '='" if not sep else rename_problem(old, new)
    if problem:
        raise argparse.ArgumentTypeError(
            f"expected OLD=NEW, as backbone.=encoder. (a prefix, ending in '.', renames every "
            f"key it starts) or head.weight=fc.weight (one key); {text!r}: {problem}")
    return old, new
