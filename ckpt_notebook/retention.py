"""Pure functions over checkpoint metadata: which checkpoint is latest, which is best, and
which ones a retention policy keeps.

A :class:`Policy` stands for a few small rules (:class:`KeepLast`, :class:`KeepBest`,
:class:`KeepEvery`, :class:`KeepWithin`) combined any-of: a checkpoint is kept when at
least one rule keeps it. On top of the rules, three guarantees hold whatever the policy:
named checkpoints are never touched, pinned ones are always kept, and so is the newest
training checkpoint (:func:`latest`). :func:`statuses` gives every checkpoint its state and
the reasons for it; :func:`prunable` lists what a prune may delete.

Imports only :mod:`ckpt_notebook.types` and :mod:`ckpt_notebook.errors` (bad arguments are
:class:`~ckpt_notebook.errors.InvalidArgumentError`, a ValueError); no I/O and no clock
(``now`` is passed in), so every rule is testable from a table.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, TypeGuard

from .errors import InvalidArgumentError
from .types import CheckpointInfo

__all__ = [
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "KeepWithin",
    "Mode",
    "Policy",
    "Rule",
    "Status",
    "best",
    "format_duration",
    "latest",
    "metric_mode",
    "parse_best_ref",
    "parse_duration",
    "prunable",
    "statuses",
]

Mode = Literal["min", "max"]
State = Literal["kept", "prunable", "named", "pinned"]
Scope = Literal["run", "store"]  # a policy's rules apply within each run, or across the store
_LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse")


def metric_mode(metric: str) -> Mode:
    """``min`` for metrics that read as losses or errors, else ``max``."""
    lowered = metric.lower()
    return "min" if any(word in lowered for word in _LOWER_IS_BETTER) else "max"


def parse_best_ref(ref: str) -> tuple[str, Mode] | None:
    """``best.val_loss`` -> ``("val_loss", "min")``; ``best.acc:max``; else ``None``."""
    if not ref.startswith("best.") or len(ref) <= len("best."):
        return None
    metric, _, mode = ref[len("best."):].partition(":")
    if mode not in ("", "min", "max"):
        raise InvalidArgumentError(f"bad REF {ref!r}: the mode after ':' must be 'min' or "
                                   "'max'", ref=ref)
    return metric, (mode or metric_mode(metric))  # type: ignore[return-value]


def _usable(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _order_key(info: CheckpointInfo) -> tuple[str, str]:
    """Oldest to newest, the order :func:`latest` uses (created is sortable ISO-8601 text)."""
    return info.created, info.id


def latest(infos: Iterable[CheckpointInfo]) -> CheckpointInfo | None:
    """The newest training-state checkpoint (named ones included, file copies not)."""
    states = [i for i in infos if i.kind == "state"]
    return max(states, key=_order_key, default=None)


def best(infos: Iterable[CheckpointInfo], metric: str, mode: Mode | None = None,
         ) -> CheckpointInfo | None:
    """The checkpoint with the best finite ``metric``; ties go to the newest."""
    mode = mode or metric_mode(metric)
    scored = [i for i in infos if _usable(i.metrics.get(metric))]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda i: (sign * float(i.metrics[metric] or 0.0), i.created, i.id))


# --- durations -----------------------------------------------------------------------------

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_RE = re.compile(rf"(?:\s*{_NUMBER}\s*[a-z]+)+\s*")
_PART_RE = re.compile(rf"({_NUMBER})\s*([a-z]+)")
DURATION_FORMS = ("a number of seconds ('3600') or amounts with units s, m/min, h, d, w "
                  "('90s', '10min', '2h', '1d', '1h30m')")


def parse_duration(text: str) -> float:
    """``'90s'`` -> 90, ``'10min'`` -> 600, ``'1h30m'`` -> 5400, ``'3600'`` -> 3600 (seconds)."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"bad duration {text!r}: use {DURATION_FORMS}")
    lowered = text.strip().lower()
    if re.fullmatch(_NUMBER, lowered):
        return float(lowered)
    if not _DURATION_RE.fullmatch(lowered):
        raise InvalidArgumentError(f"bad duration {text!r}: use {DURATION_FORMS}")
    total = 0.0
    for amount, unit in _PART_RE.findall(lowered):
        if unit not in _UNIT_SECONDS:
            raise InvalidArgumentError(f"bad duration {text!r}: unknown unit {unit!r}",
                                       hint=f"use {DURATION_FORMS}")
        total += float(amount) * _UNIT_SECONDS[unit]
    return total


def format_duration(seconds: float) -> str:
    """``3600`` -> ``'1h'``, ``5400`` -> ``'1h30m'``, ``90`` -> ``'1m30s'`` (inverse of
    :func:`parse_duration`)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgumentError(f"cannot format {seconds!r} as a duration: need seconds >= 0")
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = whole + (seconds - int(seconds))
    if rest or not parts:
        parts.append(f"{rest:.6f}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)


# --- rules ---------------------------------------------------------------------------------

def _check_count(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{field} must be a whole number >= 1 (e.g. {field}=3), got "
                                   f"{value!r}")


def _check_seconds(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{field} must be a number of seconds > 0 (e.g. "
                                   f"{field}=86400 for a day; parse_duration('1d') converts "
                                   f"text), got {value!r}")


def _check_monitor(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{field} must name a metric (e.g. {field}='val_loss'), got "
                                   f"{value!r}")


def _check_mode(field: str, value: object) -> None:
    if value not in (None, "min", "max"):
        raise InvalidArgumentError(f"{field} must be 'min', 'max' or None (None infers it "
                                   "from the metric name: losses and errors are 'min'), got "
                                   f"{value!r}")


def _timestamp(created: str) -> float | None:
    """POSIX seconds of an ISO-8601 ``created`` (naive means UTC); ``None`` if unreadable."""
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _now_timestamp(now: datetime | float | None) -> float | None:
    if now is None:
        return None
    if isinstance(now, datetime):
        return (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidArgumentError(f"now must be a datetime or POSIX seconds (time.time()), "
                                   f"got {now!r}")
    return float(now)


class Rule(Protocol):
    """One way to keep checkpoints. ``keep`` gets the candidates newest first (named ones
    already left out) and ``now`` in POSIX seconds (or None), and returns the ids it keeps,
    each with the reason shown to the user."""

    @property
    def name(self) -> str: ...

    def keep(self, infos: Sequence[CheckpointInfo], now: float | None) -> dict[str, str]: ...


@dataclass(frozen=True)
class KeepLast:
    """Keep the ``n`` newest training-state checkpoints (reason ``latest i/n``, 1 = newest)."""

    n: int

    def __post_init__(self) -> None:
        _check_count("n", self.n)

    @property
    def name(self) -> str:
        return f"last {self.n}"

    def keep(self, infos: Sequence[CheckpointInfo], now: float | None) -> dict[str, str]:
        newest = itertools.islice((i for i in infos if i.kind == "state"), self.n)
        return {info.id: f"latest {rank}/{self.n}" for rank, info in enumerate(newest, 1)}


@dataclass(frozen=True)
class KeepBest:
    """Keep the ``n`` best by a finite ``monitor`` metric (reason ``best <metric> #k``); ties
    go to the newer. Checkpoints without the metric are ignored."""

    n: int
    monitor: str
    mode: Mode | None = None

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        _check_monitor("monitor", self.monitor)
        _check_mode("mode", self.mode)

    @property
    def resolved_mode(self) -> Mode:
        return self.mode or metric_mode(self.monitor)

    @property
    def name(self) -> str:
        return f"best {self.n} by {self.monitor} ({self.resolved_mode})"

    def keep(self, infos: Sequence[CheckpointInfo], now: float | None) -> dict[str, str]:
        sign = 1.0 if self.resolved_mode == "max" else -1.0
        metric = self.monitor
        scored = [(sign * float(value), i.created, i.id) for i in infos
                  if _usable(value := i.metrics.get(metric))]
        top = heapq.nlargest(self.n, scored)
        return {ckpt_id: f"best {metric} #{rank}" for rank, (_, _, ckpt_id) in enumerate(top, 1)}


@dataclass(frozen=True)
class KeepEvery:
    """Keep checkpoints whose step is a multiple of ``steps`` (no step: not kept)."""

    steps: int

    def __post_init__(self) -> None:
        _check_count("steps", self.steps)

    @property
    def name(self) -> str:
        return f"every {self.steps} steps"

    def keep(self, infos: Sequence[CheckpointInfo], now: float | None) -> dict[str, str]:
        reason = f"every {self.steps} steps"
        return {i.id: reason for i in infos
                if isinstance(i.step, int) and i.step % self.steps == 0}


@dataclass(frozen=True)
class KeepWithin:
    """Keep checkpoints created at most ``seconds`` before ``now`` (and any dated after it,
    in case of clock skew). Without ``now`` the newest checkpoint's time stands in, which
    never keeps less than the wall clock would."""

    seconds: float

    def __post_init__(self) -> None:
        _check_seconds("seconds", self.seconds)

    @property
    def name(self) -> str:
        return f"within {format_duration(self.seconds)}"

    def keep(self, infos: Sequence[CheckpointInfo], now: float | None) -> dict[str, str]:
        times = {i.id: ts for i in infos if (ts := _timestamp(i.created)) is not None}
        if now is None:
            now = max(times.values(), default=0.0)
        oldest = now - self.seconds
        reason = self.name
        return {ckpt_id: reason for ckpt_id, ts in times.items() if ts >= oldest}


# --- policy --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """The store's retention policy: its rules combined any-of; every field is optional and
    an empty policy keeps everything. Stored with the store as :meth:`to_json`."""

    keep_last: int | None = None
    keep_best: int | None = None
    monitor: str | None = None
    mode: Mode | None = None
    keep_every: int | None = None
    keep_within: float | None = None  # seconds
    scope: Scope = "run"  # "run": one run's saves never make another's prunable

    def __post_init__(self) -> None:
        if self.scope not in ("run", "store"):
            raise InvalidArgumentError(f"scope must be 'run' (each run kept on its own) or "
                                       f"'store' (the rules span every run), got {self.scope!r}")
        for field in ("keep_last", "keep_best", "keep_every"):
            if getattr(self, field) is not None:
                _check_count(field, getattr(self, field))
        if self.keep_within is not None:
            _check_seconds("keep_within", self.keep_within)
        if self.monitor is not None:
            _check_monitor("monitor", self.monitor)
        _check_mode("mode", self.mode)
        if self.keep_best is not None and self.monitor is None:
            raise InvalidArgumentError("keep_best needs the metric to rank by: set monitor "
                                       "too (e.g. keep_best=2, monitor='val_loss')")

    @property
    def is_empty(self) -> bool:
        return not self.rules()

    def rules(self) -> list[Rule]:
        """The rule objects this policy stands for, in the order :meth:`describe` lists them."""
        rules: list[Rule] = []
        if self.keep_last is not None:
            rules.append(KeepLast(self.keep_last))
        if self.keep_best is not None and self.monitor is not None:
            rules.append(KeepBest(self.keep_best, self.monitor, self.mode))
        if self.keep_every is not None:
            rules.append(KeepEvery(self.keep_every))
        if self.keep_within is not None:
            rules.append(KeepWithin(self.keep_within))
        return rules

    def describe(self) -> str:
        """One line: ``keep last 3, best 2 by val_loss (min), every 1000 steps, within 1h``."""
        names = [rule.name for rule in self.rules()]
        if not names:
            return "keep everything (no policy)"
        return "keep " + ", ".join(names) + (" (store-wide: across runs)"
                                             if self.scope == "store" else "")

    def to_json(self) -> dict[str, Any]:
        """The set fields; ``scope`` only when it is not the default ``run`` (so a policy
        file stays what older versions wrote and read)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None
                and not (f.name == "scope" and self.scope == "run")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        """Inverse of :meth:`to_json`; ``keep_within`` may also be text such as ``"1d"``.
        Raises InvalidArgumentError (a ValueError) for values that are not a valid policy,
        unknown keys included (a misspelt rule silently ignored would keep everything)."""
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(f"a retention policy is a JSON object, got "
                                       f"{type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise InvalidArgumentError(f"unknown policy key {unknown[0]!r} (known: "
                                       f"{', '.join(sorted(names))})")
        known = {f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None}
        if isinstance(known.get("keep_within"), str):
            known["keep_within"] = parse_duration(known["keep_within"])
        return cls(**known)


# --- statuses ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    """A checkpoint's retention state, why, and the label list, the CLI and the dashboard
    show (``kept: best val_loss #1, latest 2/3``, ``named (immutable)``, ``prunable``)."""

    state: State
    reasons: tuple[str, ...]
    label: str

    @property
    def kept(self) -> bool:
        return self.state != "prunable"

    def __str__(self) -> str:
        return self.label


_NAMED = Status("named", ("named",), "named (immutable)")
_NAMED_PINNED = Status("named", ("named", "pinned"), "named (immutable)")
_PRUNABLE = Status("prunable", (), "prunable")


def statuses(infos: Iterable[CheckpointInfo], policy: Policy, *,
             pinned: Collection[str] = (), now: datetime | float | None = None,
             ) -> dict[str, Status]:
    """Every checkpoint's status, by id, in the order given.

    Named checkpoints are ``named``; pinned ones ``pinned`` (``kept: pinned, ...``); the rest
    are ``kept`` with the reasons of every rule that keeps them, or ``prunable``. The newest
    training checkpoint (of each run, with the default scope ``run``) is always kept
    (``newest``), as is one still being written
    (``saving``); with an empty policy everything is kept (``no policy``).
    """
    infos = list(infos)
    pins = set(pinned)
    kept_by, newest_ids = _kept_by_rules(infos, policy, _now_timestamp(now))
    no_policy = policy.is_empty
    made: dict[tuple[str, tuple[str, ...]], Status] = {}
    result: dict[str, Status] = {}
    for info in infos:
        if info.named:
            result[info.id] = _NAMED_PINNED if info.id in pins else _NAMED
            continue
        is_pinned = info.id in pins
        reasons = list(kept_by.get(info.id, ()))
        if is_pinned:
            reasons.insert(0, "pinned")
        if not reasons:
            if no_policy:
                reasons.append("no policy")
            elif info.id in newest_ids:
                reasons.append(newest_ids[info.id])
            elif not info.committed:
                reasons.append("saving")
            else:
                result[info.id] = _PRUNABLE
                continue
        state: State = "pinned" if is_pinned else "kept"
        key = (state, tuple(reasons))
        if key not in made:
            made[key] = Status(state, key[1], "kept: " + ", ".join(key[1]))
        result[info.id] = made[key]
    return result


def _kept_by_rules(infos: list[CheckpointInfo], policy: Policy, now_ts: float | None,
                  ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per id, the reasons the rules keep it; and the always-kept newest (id -> reason).

    With scope ``run`` the rules apply within each run, so one run's new checkpoints never
    push another's out; when the store holds several runs, the reasons name the run.
    """
    groups: dict[str | None, list[CheckpointInfo]] = {}
    for info in infos:
        groups.setdefault(info.run if policy.scope == "run" else None, []).append(info)
    # The most telling reason first: "kept: best val_loss #1, latest 2/3".
    rules = sorted(policy.rules(), key=lambda rule: not isinstance(rule, KeepBest))
    kept: dict[str, list[str]] = {}
    newest_ids: dict[str, str] = {}
    for run, members in groups.items():
        of_run = f" of run {run!r}" if len(groups) > 1 and run is not None else ""
        candidates = sorted((i for i in members if not i.named), key=_order_key, reverse=True)
        for rule in rules:
            for ckpt_id, reason in rule.keep(candidates, now_ts).items():
                kept.setdefault(ckpt_id, []).append(reason + of_run)
        newest = latest(members)
        if newest is not None:
            newest_ids[newest.id] = "newest" + of_run
    return kept, newest_ids


def prunable(infos: Iterable[CheckpointInfo], policy: Policy, *,
             pinned: Collection[str] = (), now: datetime | float | None = None,
             ) -> list[CheckpointInfo]:
    """The checkpoints ``policy`` does not keep, oldest first. Never a named or pinned one,
    nor the newest training checkpoint."""
    infos = list(infos)
    status = statuses(infos, policy, pinned=pinned, now=now)
    return sorted((i for i in infos if not status[i.id].kept), key=_order_key)
