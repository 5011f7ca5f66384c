"""Retention policies, table by table: each rule alone, combined any-of, the guarantees
(named, pinned, newest), validation, JSON, descriptions and durations."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ckpt_notebook.retention import (
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepWithin,
    Policy,
    Status,
    best,
    format_duration,
    latest,
    parse_duration,
    prunable,
    statuses,
)
from ckpt_notebook.types import CheckpointInfo

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=5)


def ck(ckpt_id: str, minute: float, step: int | None = None, *, kind: str = "state",
       name: str | None = None, committed: bool = True, **metrics: Any) -> CheckpointInfo:
    created = (T0 + timedelta(minutes=minute)).isoformat(timespec="microseconds")
    return CheckpointInfo(id=ckpt_id, step=step, created=created, metrics=metrics,
                          kind=kind, name=name, committed=committed)  # type: ignore[arg-type]


# One run: c1 oldest ... c5 newest. Best val_loss: c2, c4, c3; best acc: c4, c2, c3.
RUN = [
    ck("c1", 1, 100, val_loss=0.9, acc=0.1),
    ck("c2", 2, 200, val_loss=0.5, acc=0.4),
    ck("c3", 3, 300, val_loss=0.7, acc=0.3),
    ck("c4", 4, 400, val_loss=0.6, acc=0.5),
    ck("c5", 5, 500, val_loss=0.8, acc=0.2),
]
P = "prunable"


def labels(infos: list[CheckpointInfo], policy: Policy, **kw: Any) -> dict[str, str]:
    return {k: s.label for k, s in statuses(infos, policy, **kw).items()}


def expect(**overrides: str) -> dict[str, str]:
    """Every RUN checkpoint prunable unless said otherwise."""
    return {info.id: overrides.get(info.id, P) for info in RUN}


# --- each rule alone, and combined -----------------------------------------------------------

POLICY_TABLE = [
    (Policy(), expect(**{f"c{i}": "kept: no policy" for i in range(1, 6)})),
    (Policy(keep_last=1), expect(c5="kept: latest 1/1")),
    (Policy(keep_last=2), expect(c4="kept: latest 2/2", c5="kept: latest 1/2")),
    (Policy(keep_last=9), {f"c{i}": f"kept: latest {6 - i}/9" for i in range(1, 6)}),
    (Policy(keep_best=2, monitor="val_loss"),
     expect(c2="kept: best val_loss #1", c4="kept: best val_loss #2", c5="kept: newest")),
    (Policy(keep_best=1, monitor="acc"), expect(c4="kept: best acc #1", c5="kept: newest")),
    (Policy(keep_best=1, monitor="val_loss", mode="max"),
     expect(c1="kept: best val_loss #1", c5="kept: newest")),
    (Policy(keep_best=2, monitor="acc", mode="min"),
     expect(c1="kept: best acc #1", c5="kept: best acc #2")),
    (Policy(keep_best=1, monitor="missing"), expect(c5="kept: newest")),
    (Policy(keep_every=200), expect(c2="kept: every 200 steps", c4="kept: every 200 steps",
                                    c5="kept: newest")),
    (Policy(keep_every=100), {f"c{i}": "kept: every 100 steps" for i in range(1, 6)}),
    (Policy(keep_every=1000), expect(c5="kept: newest")),
    (Policy(keep_within=150), expect(c3="kept: within 2m30s", c4="kept: within 2m30s",
                                     c5="kept: within 2m30s")),
    (Policy(keep_within=60), expect(c4="kept: within 1m", c5="kept: within 1m")),
    (Policy(keep_within=1), expect(c5="kept: within 1s")),
    (Policy(keep_last=1, keep_best=1, monitor="val_loss"),
     expect(c2="kept: best val_loss #1", c5="kept: latest 1/1")),
    (Policy(keep_last=2, keep_best=2, monitor="val_loss"),
     expect(c2="kept: best val_loss #1", c4="kept: best val_loss #2, latest 2/2",
            c5="kept: latest 1/2")),
    (Policy(keep_last=1, keep_every=200, keep_within=90),
     expect(c2="kept: every 200 steps", c4="kept: every 200 steps, within 1m30s",
            c5="kept: latest 1/1, within 1m30s")),
    (Policy(keep_last=1, keep_best=1, monitor="acc", keep_every=300, keep_within=60),
     expect(c3="kept: every 300 steps", c4="kept: best acc #1, within 1m",
            c5="kept: latest 1/1, within 1m")),
]


@pytest.mark.parametrize(("policy", "expected"), POLICY_TABLE, ids=lambda v: str(v)[:60])
def test_policy_table(policy: Policy, expected: dict[str, str]) -> None:
    assert labels(RUN, policy, now=NOW) == expected


@pytest.mark.parametrize(("policy", "expected"), POLICY_TABLE, ids=lambda v: str(v)[:60])
def test_prunable_matches_statuses_oldest_first(policy: Policy,
                                                expected: dict[str, str]) -> None:
    shuffled = RUN[::-1]
    doomed = prunable(shuffled, policy, now=NOW)
    assert [i.id for i in doomed] == [k for k in sorted(expected) if expected[k] == P]


def test_order_of_input_does_not_change_statuses() -> None:
    policy = Policy(keep_last=2, keep_best=1, monitor="val_loss")
    forward = statuses(RUN, policy)
    backward = statuses(RUN[::-1], policy)
    assert forward == backward
    assert list(backward) == [i.id for i in RUN[::-1]]  # result follows the input order


# --- the guarantees: pinned, named, newest ------------------------------------------------

PIN_TABLE = [
    (Policy(keep_last=1), {"c1"}, expect(c1="kept: pinned", c5="kept: latest 1/1")),
    (Policy(keep_last=1), {"c5"}, expect(c5="kept: pinned, latest 1/1")),
    (Policy(keep_best=1, monitor="val_loss"), {"c2", "c3"},
     expect(c2="kept: pinned, best val_loss #1", c3="kept: pinned", c5="kept: newest")),
    (Policy(keep_every=1000), {"c5"}, expect(c5="kept: pinned")),
    (Policy(), {"c1"}, expect(c1="kept: pinned", **{f"c{i}": "kept: no policy"
                                                    for i in range(2, 6)})),
    (Policy(keep_last=1), {"gone"}, expect(c5="kept: latest 1/1")),  # unknown pins: ignored
]


@pytest.mark.parametrize(("policy", "pins", "expected"), PIN_TABLE)
def test_pins(policy: Policy, pins: set[str], expected: dict[str, str]) -> None:
    result = statuses(RUN, policy, pinned=pins)
    assert {k: s.label for k, s in result.items()} == expected
    for ckpt_id in pins & set(result):
        assert result[ckpt_id].state == "pinned"
        assert result[ckpt_id].reasons[0] == "pinned"


NAMED_RUN = [
    ck("n0", 0, 0, name="baseline", val_loss=0.1),
    *RUN,
    ck("f1", 2.5, kind="files", name="models"),
    ck("f2", 2.7, kind="files"),
]

NAMED_TABLE = [
    # Named ones are outside the rules: they take no "latest" or "best" slot.
    (Policy(keep_last=2), {}, {"c4": "kept: latest 2/2", "c5": "kept: latest 1/2",
                               "f2": P}),
    (Policy(keep_best=1, monitor="val_loss"), {},
     {"c2": "kept: best val_loss #1", "c5": "kept: newest", "f2": P}),
    (Policy(keep_within=150), {}, {"c3": "kept: within 2m30s", "c4": "kept: within 2m30s",
                                   "c5": "kept: within 2m30s", "f2": "kept: within 2m30s"}),
    (Policy(keep_last=1), {"n0", "f2"}, {"c5": "kept: latest 1/1", "f2": "kept: pinned"}),
    (Policy(), {}, {**{f"c{i}": "kept: no policy" for i in range(1, 6)},
                    "f2": "kept: no policy"}),
]


@pytest.mark.parametrize(("policy", "pins", "kept"), NAMED_TABLE)
def test_named_and_files(policy: Policy, pins: set[str], kept: dict[str, str]) -> None:
    result = statuses(NAMED_RUN, policy, pinned=pins, now=NOW)
    assert result["n0"] == result["f1"] or "n0" in pins
    for ckpt_id in ("n0", "f1"):
        assert result[ckpt_id].state == "named"
        assert result[ckpt_id].label == "named (immutable)"
    assert result["n0"].reasons == (("named", "pinned") if "n0" in pins else ("named",))
    rest = {k: s.label for k, s in result.items() if k not in ("n0", "f1")}
    assert rest == {k: kept.get(k, P) for k in rest}


NEWEST_TABLE = [
    # (checkpoints, policy, expected labels): the newest state checkpoint always stays.
    ([ck("a", 1, 1, acc=0.9), ck("b", 2, 3, acc=0.1)], Policy(keep_best=1, monitor="acc"),
     {"a": "kept: best acc #1", "b": "kept: newest"}),
    ([ck("a", 1, 1), ck("b", 2, 3)], Policy(keep_every=2), {"a": P, "b": "kept: newest"}),
    ([ck("a", 1, 2), ck("b", 2, 3)], Policy(keep_every=2), {"a": "kept: every 2 steps",
                                                            "b": "kept: newest"}),
    # ties on created: the larger id is newest, as for latest()
    ([ck("a", 1, 1), ck("b", 1, 3)], Policy(keep_every=2), {"a": P, "b": "kept: newest"}),
    # a newer file copy does not make the state checkpoint any less the newest
    ([ck("a", 1, 1), ck("f", 2, kind="files")], Policy(keep_every=2),
     {"a": "kept: newest", "f": P}),
    # when the newest is named, it is the one guaranteed (by its name)
    ([ck("a", 1, 1), ck("n", 2, 3, name="final")], Policy(keep_every=2),
     {"a": P, "n": "named (immutable)"}),
    # one still being written is never pruned
    ([ck("a", 1, 1, committed=False), ck("b", 2, 3)], Policy(keep_every=2),
     {"a": "kept: saving", "b": "kept: newest"}),
    ([ck("only", 1, 1)], Policy(keep_every=2), {"only": "kept: newest"}),
    ([], Policy(keep_last=1), {}),
]


@pytest.mark.parametrize(("infos", "policy", "expected"), NEWEST_TABLE)
def test_newest_always_kept(infos: list[CheckpointInfo], policy: Policy,
                            expected: dict[str, str]) -> None:
    assert labels(infos, policy) == expected
    newest = latest(infos)
    assert newest is None or newest not in prunable(infos, policy)


# --- rule details ------------------------------------------------------------------------

BEST_TABLE = [
    # (metric values, oldest first; mode; n; expected ids best first)
    ([0.5, 0.5, 0.7], "min", 1, ["b"]),              # tie: the newer wins
    ([0.5, 0.5, 0.7], "max", 2, ["c", "b"]),
    ([float("nan"), 0.2, 0.1], "min", 2, ["c", "b"]),  # NaN is not a value
    ([float("inf"), 0.2, None], "max", 3, ["b"]),    # nor inf, nor None
    ([True, 0.2, "x"], "max", 3, ["b"]),             # nor bools and strings
    ([3, 2, 1], "max", 2, ["a", "b"]),               # ints count
    ([None, None, None], "min", 1, []),
]


@pytest.mark.parametrize(("values", "mode", "n", "expected"), BEST_TABLE)
def test_keep_best_rule(values: list[Any], mode: str, n: int, expected: list[str]) -> None:
    infos = [ck("abc"[i], i, i, m=v) for i, v in enumerate(values)]
    newest_first = infos[::-1]
    kept = KeepBest(n, "m", mode).keep(newest_first, None)  # type: ignore[arg-type]
    assert kept == {c: f"best m #{k}" for k, c in enumerate(expected, 1)}
    # the rule and best() agree on number one
    top = best(infos, "m", mode)  # type: ignore[arg-type]
    assert (top.id if top else None) == (expected[0] if expected else None)


@pytest.mark.parametrize(("steps", "every", "expected"), [
    ([0, 5, 10, 15, None], 5, ["a", "b", "c", "d"]),
    ([0, 5, 10, 15, None], 10, ["a", "c"]),
    ([1, 2, 3, None, 7], 1, ["a", "b", "c", "e"]),
    ([None, None], 1, []),
])
def test_keep_every_rule(steps: list[int | None], every: int, expected: list[str]) -> None:
    infos = [ck("abcde"[i], i, s) for i, s in enumerate(steps)]
    assert sorted(KeepEvery(every).keep(infos, None)) == expected


WITHIN_NOW = [
    NOW,
    NOW.timestamp(),
    int(NOW.timestamp()),
    NOW.astimezone(timezone(timedelta(hours=-5))),  # any zone: the same instant
    NOW.replace(tzinfo=None),                       # naive: read as UTC
]


@pytest.mark.parametrize("now", WITHIN_NOW, ids=repr)
def test_keep_within_accepts_every_form_of_now(now: datetime | float) -> None:
    assert sorted(KeepWithin(60).keep(RUN, _ts(now))) == ["c4", "c5"]
    assert labels(RUN, Policy(keep_within=60), now=now) == expect(c4="kept: within 1m",
                                                                  c5="kept: within 1m")


def _ts(now: datetime | float) -> float:
    if isinstance(now, datetime):
        return (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp()
    return float(now)


def test_keep_within_without_now_measures_from_the_newest() -> None:
    # Conservative: the newest checkpoint is never later than the wall clock, so this keeps
    # at least what a real `now` would.
    late = NOW + timedelta(days=30)
    assert labels(RUN, Policy(keep_within=60)) == expect(c4="kept: within 1m",
                                                         c5="kept: within 1m")
    assert labels(RUN, Policy(keep_within=60), now=late) == expect(c5="kept: newest")


def test_keep_within_edge_cases() -> None:
    infos = [
        ck("exact", 4, 1),                                   # exactly 60 s before now
        ck("future", 9, 2),                                  # clock skew: kept
        CheckpointInfo(id="garbled", created="yesterday-ish"),
        CheckpointInfo(id="undated"),
        CheckpointInfo(id="zulu", created="2026-11-23T07:04:30Z"),
        CheckpointInfo(id="other_zone", created="2026-11-23T02:04:30-05:00"),
    ]
    assert sorted(KeepWithin(60).keep(infos, NOW.timestamp())) == [
        "exact", "future", "other_zone", "zulu"]


def test_keep_last_counts_training_checkpoints_only() -> None:
    infos = [ck("a", 1), ck("f", 2, kind="files"), ck("b", 3)]
    assert KeepLast(2).keep(infos[::-1], None) == {"b": "latest 1/2", "a": "latest 2/2"}


def test_bad_now() -> None:
    with pytest.raises(ValueError, match="now must be a datetime or POSIX seconds"):
        statuses(RUN, Policy(keep_within=60), now="today")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be"):
        statuses(RUN, Policy(keep_within=60), now=math.nan)


def test_status_objects() -> None:
    result = statuses(RUN, Policy(keep_last=2, keep_best=1, monitor="val_loss"), pinned={"c1"})
    assert result["c4"] == Status("kept", ("latest 2/2",), "kept: latest 2/2")
    assert result["c1"] == Status("pinned", ("pinned",), "kept: pinned")
    assert result["c3"] == Status("prunable", (), "prunable")
    assert [s.kept for s in result.values()] == [True, True, False, True, True]
    assert str(result["c2"]) == "kept: best val_loss #1"


# --- the policy object -------------------------------------------------------------------

RULES_TABLE = [
    (Policy(), []),
    (Policy(keep_last=3), [KeepLast(3)]),
    (Policy(keep_best=2, monitor="acc"), [KeepBest(2, "acc")]),
    (Policy(monitor="acc", mode="min"), []),  # a metric alone keeps nothing
    (Policy(keep_last=3, keep_best=2, monitor="val_loss", mode="max", keep_every=1000,
            keep_within=3600),
     [KeepLast(3), KeepBest(2, "val_loss", "max"), KeepEvery(1000), KeepWithin(3600)]),
]


@pytest.mark.parametrize(("policy", "rules"), RULES_TABLE)
def test_rules(policy: Policy, rules: list[object]) -> None:
    assert policy.rules() == rules
    assert policy.is_empty == (not rules)


DESCRIBE_TABLE = [
    (Policy(), "keep everything (no policy)"),
    (Policy(monitor="val_loss"), "keep everything (no policy)"),
    (Policy(keep_last=3), "keep last 3"),
    (Policy(keep_best=2, monitor="val_loss"), "keep best 2 by val_loss (min)"),
    (Policy(keep_best=1, monitor="accuracy"), "keep best 1 by accuracy (max)"),
    (Policy(keep_best=1, monitor="val_loss", mode="max"), "keep best 1 by val_loss (max)"),
    (Policy(keep_every=500), "keep every 500 steps"),
    (Policy(keep_within=86400), "keep within 1d"),
    (Policy(keep_last=3, keep_best=2, monitor="val_loss", keep_every=1000, keep_within=3600),
     "keep last 3, best 2 by val_loss (min), every 1000 steps, within 1h"),
]


@pytest.mark.parametrize(("policy", "text"), DESCRIBE_TABLE)
def test_describe(policy: Policy, text: str) -> None:
    assert policy.describe() == text


VALIDATION_TABLE = [
    (Policy, {"keep_last": 0}, "keep_last must be a whole number >= 1"),
    (Policy, {"keep_last": -2}, "keep_last must be a whole number >= 1"),
    (Policy, {"keep_last": 2.5}, "keep_last must be a whole number >= 1"),
    (Policy, {"keep_last": "3"}, "keep_last must be a whole number >= 1"),
    (Policy, {"keep_last": True}, "keep_last must be a whole number >= 1"),
    (Policy, {"keep_every": 0}, "keep_every must be a whole number >= 1"),
    (Policy, {"keep_best": 0, "monitor": "acc"}, "keep_best must be a whole number >= 1"),
    (Policy, {"keep_best": 2}, "keep_best needs the metric to rank by: set monitor"),
    (Policy, {"keep_best": 2, "monitor": ""}, "monitor must name a metric"),
    (Policy, {"keep_best": 2, "monitor": "acc", "mode": "maximum"}, "mode must be 'min', 'max'"),
    (Policy, {"keep_within": 0}, "keep_within must be a number of seconds > 0"),
    (Policy, {"keep_within": -1.0}, "keep_within must be a number of seconds > 0"),
    (Policy, {"keep_within": math.inf}, "keep_within must be a number of seconds > 0"),
    (Policy, {"keep_within": "1d"}, "parse_duration"),
    (KeepLast, {"n": 0}, "n must be a whole number >= 1"),
    (KeepBest, {"n": 1, "monitor": ""}, "monitor must name a metric"),
    (KeepBest, {"n": 1, "monitor": "acc", "mode": "up"}, "mode must be"),
    (KeepEvery, {"steps": -5}, "steps must be a whole number >= 1"),
    (KeepWithin, {"seconds": math.nan}, "seconds must be a number of seconds > 0"),
    (Policy.from_json, {"data": [1, 2]}, "a retention policy is a JSON object"),
    (Policy.from_json, {"data": {"keep_last": "three"}}, "keep_last must be a whole number"),
    (Policy.from_json, {"data": {"keep_within": "soon"}}, "bad duration 'soon'"),
]


@pytest.mark.parametrize(("make", "kwargs", "message"), VALIDATION_TABLE)
def test_validation(make: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make(**kwargs)
    assert "\n" not in str(err.value)


JSON_TABLE = [
    (Policy(), {}),
    (Policy(keep_last=3), {"keep_last": 3}),
    (Policy(keep_best=2, monitor="val_loss"), {"keep_best": 2, "monitor": "val_loss"}),
    (Policy(keep_last=3, keep_best=2, monitor="acc", mode="min", keep_every=100,
            keep_within=5400.0),
     {"keep_last": 3, "keep_best": 2, "monitor": "acc", "mode": "min", "keep_every": 100,
      "keep_within": 5400.0}),
]


@pytest.mark.parametrize(("policy", "doc"), JSON_TABLE)
def test_json_round_trip(policy: Policy, doc: dict[str, Any]) -> None:
    assert policy.to_json() == doc
    assert Policy.from_json(doc) == policy


@pytest.mark.parametrize(("doc", "policy"), [
    ({"keep_within": "1h30m"}, Policy(keep_within=5400)),
    ({"keep_last": None, "monitor": None}, Policy()),
])
def test_from_json_is_lenient_where_harmless(doc: dict[str, Any], policy: Policy) -> None:
    assert Policy.from_json(doc) == policy


@pytest.mark.parametrize("doc", [
    {"keep_lasT": 3},  # one flipped bit: ignoring it would keep everything
    {"keep_last": 2, "unknown": {"x": 1}},
    {"keep_last": 2, "keep_hourly": 24},  # a newer rule: ignoring it would prune what it keeps
])
def test_from_json_refuses_unknown_keys(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown policy key"):
        Policy.from_json(doc)


# --- durations ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10min", 600), ("2h", 7200), ("1d", 86400), ("1w", 604800),
    ("1h30m", 5400), ("1h 30m", 5400), ("1H30M", 5400), ("3600", 3600), ("0.5", 0.5),
    ("1.5h", 5400), (".5m", 30), ("2 hours", 7200), ("1 day 2 hrs", 93600),
    ("10 minutes", 600), ("1d1h1m1s", 90061), ("  45 sec  ", 45), ("0s", 0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "   ", "abc", "h", "1x", "-5s", "1h30", "1ms", "1 month", "inf", "nan", "1e3",
    "1,5h", "5 s s", None, 3600,
])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match=r"bad duration .*'1h30m'"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (90, "1m30s"), (3600, "1h"),
    (5400, "1h30m"), (3601, "1h1s"), (86400, "1d"), (90061, "1d1h1m1s"), (604800, "7d"),
    (0.5, "0.5s"), (90.25, "1m30.25s"), (7200.0, "2h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan, "1h", None, True])
def test_format_duration_rejects(seconds: Any) -> None:
    with pytest.raises(ValueError, match="need seconds >= 0"):
        format_duration(seconds)


# --- properties over random stores ---------------------------------------------------------

def random_store(rng: random.Random) -> tuple[list[CheckpointInfo], Policy, set[str], float]:
    infos = []
    for i in range(rng.randint(0, 40)):
        metrics: dict[str, Any] = {}
        if rng.random() < 0.8:
            metrics["loss"] = rng.choice([rng.random(), rng.random(), math.nan, None, 0.5])
        infos.append(ck(
            f"c{i}", rng.choice([rng.uniform(0, 600), rng.randint(0, 5)]),
            rng.choice([None, rng.randint(0, 3000), rng.randrange(0, 3000, 100)]),
            kind=rng.choice(["state", "state", "state", "files"]),
            name=f"n{i}" if rng.random() < 0.15 else None,
            committed=rng.random() < 0.95, **metrics,
        ))
    policy = Policy(
        keep_last=rng.choice([None, rng.randint(1, 5)]),
        keep_best=rng.choice([None, rng.randint(1, 3)]),
        monitor="loss", mode=rng.choice([None, "min", "max"]),
        keep_every=rng.choice([None, 100, 500, rng.randint(1, 1000)]),
        keep_within=rng.choice([None, rng.uniform(1, 36000)]),
    )
    pins = {i.id for i in infos if rng.random() < 0.1}
    now = T0.timestamp() + rng.uniform(0, 36000)
    return infos, policy, pins, now


@pytest.mark.parametrize("seed", range(300))
def test_random_stores(seed: int) -> None:
    infos, policy, pins, now = random_store(random.Random(seed))
    result = statuses(infos, policy, pinned=pins, now=now)
    doomed = prunable(infos, policy, pinned=pins, now=now)
    newest = latest(infos)
    assert set(result) == {i.id for i in infos}
    assert {i.id for i in doomed} == {k for k, s in result.items() if not s.kept}
    assert [i.created for i in doomed] == sorted(i.created for i in doomed)
    for info in doomed:
        assert not info.named
        assert info.id not in pins
        assert info is not newest
        assert info.committed
    for ckpt_id, status in result.items():
        if status.kept:
            assert status.reasons, ckpt_id
            assert status.label in ("named (immutable)", "kept: " + ", ".join(status.reasons))
        else:
            assert status == Status("prunable", (), "prunable")
    if policy.is_empty:
        assert doomed == []
        return
    # any-of: adding a rule to a policy never prunes more
    wider = Policy.from_json({**policy.to_json(), "keep_last": 1000})
    assert {i.id for i in prunable(infos, wider, pinned=pins, now=now)} <= {
        i.id for i in doomed}
