"""The ``%checkpoint`` magic in a real in-process IPython shell: every subcommand's happy path,
and every kind of bad input giving a one-line ``UsageError``.

Each test gets a fresh user namespace, a fresh notebook session and its own store (switched
to with ``%checkpoint store DIR``, as a user would).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ipython_shell
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main as ckpt_main
from ckpt_notebook.retention import Policy
from ckpt_notebook.storage import Store
from ckpt_notebook.ui import session as session_mod
from ckpt_notebook.ui.magics import USAGE, _build_parsers

SUBCOMMANDS = ("save", "restore", "list", "show", "diff", "store", "verify", "prune",
               "delete", "pin", "unpin", "policy", "auto", "widget")


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "ckpt_notebook")
    return ip


def _drop_session(shell: InteractiveShell) -> None:
    old = session_mod._SESSIONS.pop(id(shell), None)
    if old is not None:
        old.close()


@pytest.fixture
def ip(shell: InteractiveShell, tmp_path: Path,
       capsys: pytest.CaptureFixture[str]) -> Iterator[InteractiveShell]:
    """The shell with an empty namespace and a new session on ``tmp_path/store``."""
    _drop_session(shell)
    shell.reset(new_session=False)
    magic(shell, f"store {shlex.quote(str(tmp_path / 'store'))}")
    capsys.readouterr()
    yield shell
    _drop_session(shell)


def magic(shell: InteractiveShell, line: str) -> Any:
    return shell.run_line_magic("checkpoint", line)


def usage_error(shell: InteractiveShell, line: str, *fragments: str) -> str:
    """Run a bad ``%checkpoint`` line: a UsageError with a one-line message."""
    with pytest.raises(UsageError) as caught:
        magic(shell, line)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("%checkpoint"), message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def sess(shell: InteractiveShell) -> session_mod.NotebookCheckpointer:
    return session_mod.get_session(shell)


def store_of(shell: InteractiveShell) -> Store:
    return Store(sess(shell).store.url)


def net(seed: int = 0, hidden: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 2))


def training_state(shell: InteractiveShell, **extra: Any) -> dict[str, Any]:
    """A model, an optimizer that has taken a step, and whatever else; pushed to the shell."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    names = {"model": model, "opt": opt, **extra}
    shell.push(names)
    return names


def bump(model: torch.nn.Module, by: float = 1.0) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- loading ----------------------------------------------------------------------------------
def test_load_ext_imports_nothing_heavy() -> None:
    code = ("import sys; from IPython.testing.globalipapp import start_ipython; "
            "ip=start_ipython(); ip.run_line_magic('load_ext','ckpt_notebook'); "
            "print(sorted({'torch','panel','ipywidgets'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_load_ext_twice_registers_one_hook(shell: InteractiveShell) -> None:
    before = len(shell.events.callbacks["post_run_cell"])
    shell.run_line_magic("load_ext", "ckpt_notebook")
    shell.run_line_magic("reload_ext", "ckpt_notebook")
    assert len(shell.events.callbacks["post_run_cell"]) == before


# -- help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["", "help", "-h", "--help"])
def test_help_lists_every_subcommand(ip: InteractiveShell, capsys: pytest.CaptureFixture[str],
                                     line: str) -> None:
    assert magic(ip, line) is None
    out = capsys.readouterr().out
    assert out.strip() == USAGE.strip()
    for name in SUBCOMMANDS:
        assert name in out
    assert "-h for one's options" in out


def test_every_subcommand_has_help(ip: InteractiveShell,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    parsers = _build_parsers()
    assert set(SUBCOMMANDS) <= set(parsers)
    for name in parsers:  # also subcommands added after these tests were written
        assert name in USAGE
        magic(ip, f"{name} -h")
        out = capsys.readouterr().out
        assert out.startswith(f"usage: %checkpoint {name}"), out


def test_save_help(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    magic(ip, "save -h")
    out = capsys.readouterr().out
    for fragment in ("usage: %checkpoint save", "--name NAME", "--step", "--metric KEY=VALUE",
                     "--tag T", "VAR", "also save these variables"):
        assert fragment in out
    assert not store_of(ip).list()  # help saved nothing
    magic(ip, "policy --help")
    out = capsys.readouterr().out
    for fragment in ("--keep-last N", "--keep-best N", "--monitor METRIC", "--keep-within",
                     "--clear"):
        assert fragment in out


# -- store ------------------------------------------------------------------------------------
def test_store_shows_and_switches(ip: InteractiveShell, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    magic(ip, "store")
    assert capsys.readouterr().out.strip() == f"store: {tmp_path / 'store'}"
    training_state(ip)
    magic(ip, "save")
    other = tmp_path / "other store"  # a space: the line is shell-quoted
    magic(ip, f"store '{other}'")
    assert capsys.readouterr().out.strip().endswith(f"store: {other}")
    assert sess(ip).store.url == str(other)
    magic(ip, "save --tag there")
    assert len(Store(str(other)).list()) == 1
    assert len(Store(str(tmp_path / "store")).list()) == 1


def test_store_that_cannot_open_keeps_the_current_one(ip: InteractiveShell,
                                                      capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    usage_error(ip, f"store {tmp_path / 'a-file'}", "a file, not a folder")
    usage_error(ip, "store nosuchproto://bucket", "nosuchproto")
    magic(ip, "store")
    assert capsys.readouterr().out.strip() == f"store: {tmp_path / 'store'}"
    training_state(ip)
    magic(ip, "save")  # the session still works
    assert len(Store(str(tmp_path / "store")).list()) == 1


# -- save -------------------------------------------------------------------------------------
def test_save_with_every_option(ip: InteractiveShell,
                                capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip, config={"lr": 0.1, "layers": [3, 4, 2]}, unrelated=[1, 2])
    assert magic(ip, "save --name first --step 7 --metric val_loss=0.25 --metric acc=0.9 "
                     "--tag warm --tag 'two words' config") is None
    out = capsys.readouterr().out
    assert out.startswith("Saved")
    assert "first" in out and "model, opt, config, rng" in out
    info = store_of(ip).info("first")
    assert (info.name, info.step) == ("first", 7)
    assert dict(info.metrics) == {"val_loss": 0.25, "acc": 0.9}
    assert list(info.tags) == ["warm", "two words"]
    assert list(info.objects) == ["model", "opt", "config", "rng"]
    assert info.committed  # the magic waits for the write


def test_save_default_step_and_counters(ip: InteractiveShell) -> None:
    training_state(ip, step=3, epoch=1)
    magic(ip, "save")
    info = store_of(ip).list()[-1]
    assert info.step == 3
    assert {"step", "epoch"} <= set(info.objects)
    ip.push({"global_step": 120, "step": 4})
    magic(ip, "save")
    assert store_of(ip).list()[-1].step == 120  # global_step wins over step
    magic(ip, "save --step 5")
    assert store_of(ip).list()[-1].step == 5


def test_save_remembers_named_variables(ip: InteractiveShell) -> None:
    training_state(ip, config={"a": 1})
    magic(ip, "save")
    assert "config" not in store_of(ip).list()[-1].objects  # a dict is not auto-discovered
    magic(ip, "save config")
    magic(ip, "save")
    assert "config" in store_of(ip).list()[-1].objects  # tracked from now on


def test_save_only_named_plain_values(ip: InteractiveShell) -> None:
    ip.push({"notes": "warmup done", "sizes": [1, 2, 3]})
    magic(ip, "save notes sizes")
    info = store_of(ip).list()[-1]
    assert list(info.objects) == ["notes", "sizes", "rng"]


# -- restore ----------------------------------------------------------------------------------
def test_restore_rebinds_values_and_counters(ip: InteractiveShell,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    state = training_state(ip, step=3, epoch=1, config={"lr": 0.1})
    magic(ip, "save config")
    saved_w = weights(state["model"])
    saved_opt = state["opt"].state_dict()["state"][0]["momentum_buffer"].clone()
    bump(state["model"])
    state["model"](torch.ones(1, 3)).sum().backward()
    state["opt"].step()
    ip.push({"step": 99, "epoch": 7, "config": {"lr": 1.0}})
    capsys.readouterr()
    magic(ip, "restore")
    out = capsys.readouterr().out
    assert "Restored" in out
    ns = ip.user_ns
    assert (ns["step"], ns["epoch"], ns["config"]) == (3, 1, {"lr": 0.1})
    assert ns["model"] is state["model"]  # loaded in place, not rebound
    assert same(weights(ns["model"]), saved_w)
    assert torch.equal(ns["opt"].state_dict()["state"][0]["momentum_buffer"], saved_opt)


def test_restore_an_older_ref(ip: InteractiveShell) -> None:
    state = training_state(ip, step=1)
    magic(ip, "save --name one --metric val_loss=0.1")
    first = weights(state["model"])
    bump(state["model"])
    ip.push({"step": 2})
    magic(ip, "save --metric val_loss=0.9")
    second_id = store_of(ip).list()[-1].id
    for ref in ("one", "best.val_loss", "best.val_loss:min"):  # a name, best. refs
        bump(state["model"])
        ip.push({"step": 50})
        magic(ip, f"restore {ref}")
        assert same(weights(state["model"]), first), ref
        assert ip.user_ns["step"] == 1
    magic(ip, f"restore {second_id[:-1]}")  # an id prefix
    assert ip.user_ns["step"] == 2
    magic(ip, "restore one")
    magic(ip, "restore latest")
    assert ip.user_ns["step"] == 2


def test_restore_weights_only(ip: InteractiveShell) -> None:
    state = training_state(ip, step=3)
    magic(ip, "save")
    saved_w = weights(state["model"])
    opt_before = state["opt"].state_dict()["state"][0]["momentum_buffer"].clone()
    bump(state["model"])
    state["opt"].state_dict()["state"][0]["momentum_buffer"].add_(5)
    opt_changed = state["opt"].state_dict()["state"][0]["momentum_buffer"].clone()
    ip.push({"step": 50})
    magic(ip, "restore --weights-only")
    assert same(weights(state["model"]), saved_w)
    assert ip.user_ns["step"] == 50  # plain values are not touched
    assert torch.equal(state["opt"].state_dict()["state"][0]["momentum_buffer"], opt_changed)
    assert not torch.equal(opt_changed, opt_before)


def test_restore_no_strict_loads_the_matching_keys(ip: InteractiveShell) -> None:
    torch.manual_seed(0)
    ip.push({"model": torch.nn.Linear(3, 2)})
    magic(ip, "save")
    saved = weights(ip.user_ns["model"])
    torch.manual_seed(1)
    smaller = torch.nn.Linear(3, 2, bias=False)  # the checkpoint has an extra key: bias
    ip.push({"model": smaller})
    usage_error(ip, "restore", "unexpected keys bias", "nothing was changed")
    assert not torch.equal(smaller.weight, saved["weight"])
    magic(ip, "restore --no-strict")
    assert torch.equal(smaller.weight, saved["weight"])


# -- list, show, diff, verify -----------------------------------------------------------------
def test_list_shows_retention_status(ip: InteractiveShell,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    magic(ip, "list")
    out = capsys.readouterr().out
    assert "0 checkpoint(s)" in out and "no checkpoints yet" in out
    state = training_state(ip, step=1)
    magic(ip, "save --name keep --metric val_loss=0.5")
    for step in (2, 3):
        ip.push({"step": step})
        bump(state["model"])
        magic(ip, f"save --metric val_loss={1 / step}")
    ids = [i.id for i in store_of(ip).list()]
    capsys.readouterr()
    magic(ip, "list")
    out = capsys.readouterr().out
    assert "3 checkpoint(s)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()
             and line.split()[0] in ids}
    assert set(lines) == set(ids)
    assert lines["keep"].endswith("named (immutable)")
    assert lines[ids[1]].endswith("kept: no policy")
    magic(ip, "policy --keep-last 1")
    magic(ip, f"pin {ids[1]}")
    capsys.readouterr()
    magic(ip, "list")
    out = capsys.readouterr().out
    assert "kept: pinned" in out and "kept: latest 1/1" in out
    assert "val_loss" in out.splitlines()[1]  # a metric column


def test_show(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip, step=4, config={"a": 1})
    magic(ip, "save --name shown --metric acc=0.75 --tag t1 config")
    capsys.readouterr()
    magic(ip, "show shown")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "shown (named)"
    objects = {line.split()[0]: line.split() for line in out.splitlines()[2:]
               if line.split() and line.split()[0] in ("model", "opt", "step", "config", "rng")}
    assert set(objects) == {"model", "opt", "step", "config", "rng"}
    assert objects["model"][1:4] == ["module", "torch.nn.modules.container.Sequential", "4"]
    assert objects["config"][1] == "value"
    assert "step 4" in out and "'acc': 0.75" in out and "['t1']" in out


def test_diff(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    state = training_state(ip)
    magic(ip, "save --name before")
    with torch.no_grad():
        state["model"][0].weight.add_(1)  # only the first layer's weight
    magic(ip, "save --name after")
    capsys.readouterr()
    magic(ip, "diff before after")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("before -> after: 1 changed, ")
    assert lines[2].split() == ["model", "0.weight", "changed", "F32[4,", "3]"]
    magic(ip, "diff after after")
    assert capsys.readouterr().out.startswith("after -> after: 0 changed")


def test_verify(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip)
    magic(ip, "save --name v")
    capsys.readouterr()
    magic(ip, "verify")
    assert capsys.readouterr().out.strip() == "v: all blobs verify"
    magic(ip, "verify v")
    assert capsys.readouterr().out.strip() == "v: all blobs verify"
    store = store_of(ip)
    digest = next(iter(store.manifest("v").blobs))
    blob = Path(store.url) / "blobs" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    usage_error(ip, "verify v", "%checkpoint verify: ", digest[:16], "corrupt")


# -- retention: prune, delete, pin, policy ----------------------------------------------------
def save_series(ip: InteractiveShell, steps: list[int]) -> list[str]:
    state = training_state(ip)
    for step in steps:
        ip.push({"step": step})
        bump(state["model"])
        magic(ip, f"save --metric val_loss={1 / step}")
    return [i.id for i in store_of(ip).list()]


def test_prune_dry_run_then_prune(ip: InteractiveShell,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip)
    magic(ip, "save --name named")
    ids = save_series(ip, [1, 2, 3, 4])
    magic(ip, "prune --dry-run")
    assert capsys.readouterr().out.strip().endswith("nothing to prune")  # no policy yet
    magic(ip, "policy --keep-last 1")
    capsys.readouterr()
    magic(ip, "prune --dry-run")
    out = capsys.readouterr().out.strip()
    assert out == f"would remove 3 checkpoint(s): {', '.join(ids[1:4])}"
    assert [i.id for i in store_of(ip).list()] == ids
    magic(ip, "prune")
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"removed 3 checkpoint(s): {', '.join(ids[1:4])}; removed ")
    assert [i.id for i in store_of(ip).list()] == ["named", ids[4]]
    assert Checkpointer(store_of(ip)).verify("latest") == []


def test_delete_and_force(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip)
    magic(ip, "save --name named")
    ids = save_series(ip, [1, 2])
    capsys.readouterr()
    magic(ip, f"delete {ids[1]}")
    assert capsys.readouterr().out.strip().startswith(f"deleted {ids[1]}")
    usage_error(ip, "delete named", "%checkpoint delete: ", "named", "--force")
    magic(ip, f"pin {ids[2]}")
    usage_error(ip, f"delete {ids[2]}", "pinned")
    assert [i.id for i in store_of(ip).list()] == ["named", ids[2]]
    magic(ip, "delete named --force")
    magic(ip, f"delete --force {ids[2]}")
    assert store_of(ip).list() == []


def test_pin_and_unpin(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ids = save_series(ip, [1, 2, 3])
    magic(ip, "policy --keep-last 1")
    magic(ip, f"pin {ids[0]}")
    assert capsys.readouterr().out.strip().endswith(f"pinned {ids[0]}")
    assert store_of(ip).pins.ids() == {ids[0]}
    magic(ip, "prune")
    assert [i.id for i in store_of(ip).list()] == [ids[0], ids[2]]
    magic(ip, f"unpin {ids[0]}")
    assert capsys.readouterr().out.strip().endswith(f"unpinned {ids[0]}")
    assert store_of(ip).pins.ids() == set()
    magic(ip, "prune")
    assert [i.id for i in store_of(ip).list()] == [ids[2]]


def test_policy_set_show_clear(ip: InteractiveShell, capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    magic(ip, "policy")
    assert capsys.readouterr().out.strip() == \
        f"retention policy of {root}: keep everything (no policy)"
    magic(ip, "policy --keep-last 3 --keep-best 2 --monitor val_loss --mode min "
              "--keep-every 100 --keep-within 1d")
    expected = Policy(keep_last=3, keep_best=2, monitor="val_loss", mode="min",
                      keep_every=100, keep_within=86400.0)
    assert capsys.readouterr().out.strip() == \
        f"retention policy of {root}: {expected.describe()}"
    assert Checkpointer(root).policy == expected  # stored with the store
    magic(ip, "policy")
    assert expected.describe() in capsys.readouterr().out
    # the CLI reads the same policy
    assert ckpt_main(["policy", "--store", root]) == 0
    assert capsys.readouterr().out.strip() == \
        f"retention policy of {root}: {expected.describe()}"
    magic(ip, "policy --keep-within 10min")  # rules given replace the policy
    assert Checkpointer(root).policy == Policy(keep_within=600.0)
    magic(ip, "policy --clear")
    assert capsys.readouterr().out.strip().endswith("keep everything (no policy)")
    assert Checkpointer(root).policy == Policy()


# -- auto -------------------------------------------------------------------------------------
def test_auto_settings(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    s = sess(ip)
    assert not s.auto_settings.enabled
    magic(ip, "auto --every 5")
    assert capsys.readouterr().out.strip() == ("auto-checkpointing on: after cells that change "
                                               "tracked state; session().step() saves every "
                                               "5 steps")
    assert (s.auto_settings.enabled, s.schedule.every_steps) == (True, 5)
    magic(ip, "auto --every 10min")
    assert "saves every 10m" in capsys.readouterr().out
    assert (s.schedule.every_steps, s.schedule.every_seconds) == (None, 600.0)
    magic(ip, "auto --on-interrupt")
    assert capsys.readouterr().out.strip().endswith("when a cell is interrupted")
    assert s.auto_settings.on_interrupt and s.schedule.every_seconds == 600.0  # kept
    magic(ip, "auto --off")
    assert capsys.readouterr().out.strip() == "auto-checkpointing off"
    assert not s.auto_settings.enabled and not s.auto_settings.on_interrupt
    assert not s.schedule.active
    magic(ip, "auto")
    out = capsys.readouterr().out.strip()
    assert out == "auto-checkpointing on: after cells that change tracked state"


def test_auto_saves_after_cells_that_train(ip: InteractiveShell) -> None:
    ip.run_cell("import torch")
    magic(ip, "auto")
    ip.run_cell("model = torch.nn.Linear(3, 2)")  # new objects: only the new baseline
    sess(ip).wait()
    assert store_of(ip).list() == []
    ip.run_cell("with torch.no_grad(): model.weight.add_(1)")  # trained in place: saved
    sess(ip).wait()
    assert [list(i.tags) for i in store_of(ip).list()] == [["auto"]]
    ip.run_cell("y = 2")  # tracked state unchanged: no save
    ip.run_cell("model = torch.nn.Linear(3, 2)")  # re-bound (a re-run setup cell): no save
    sess(ip).wait()
    assert len(store_of(ip).list()) == 1
    magic(ip, "auto --off")
    ip.run_cell("with torch.no_grad(): model.weight.add_(1)")
    sess(ip).wait()
    assert len(store_of(ip).list()) == 1


def test_auto_saves_the_first_training_cell(ip: InteractiveShell) -> None:
    training_state(ip)
    magic(ip, "auto")
    ip.run_cell("import torch\nwith torch.no_grad(): model[0].weight.add_(1)")
    sess(ip).wait()
    assert [list(i.tags) for i in store_of(ip).list()] == [["auto"]]


def test_auto_on_interrupt(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    training_state(ip, step=8)
    ip.run_cell("raise KeyboardInterrupt")
    assert store_of(ip).list() == []
    magic(ip, "auto --on-interrupt")
    capsys.readouterr()
    ip.run_cell("step = 9\nraise KeyboardInterrupt")
    infos = store_of(ip).list()
    assert [(list(i.tags), i.step) for i in infos] == [(["interrupted"], 9)]
    assert f"checkpoint {infos[0].id} saved after the interrupt (step 9)" in \
        capsys.readouterr().out


def test_session_step_schedule_and_save_requests(ip: InteractiveShell,
                                                 capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    training_state(ip)
    magic(ip, "auto --every 2")
    store_of(ip).ensure_writable()  # issue 13: request-save refuses a path that is no store
    assert ckpt_main(["request-save", "--store", str(tmp_path / "store")]) == 0
    s = session_mod.session()
    assert s is sess(ip)
    assert s.step(1) is not None  # the request
    assert s.step(2) is not None  # the schedule
    assert s.step(3) is None
    s.wait()
    assert [list(i.tags) for i in store_of(ip).list()] == [["requested"], []]


# -- bad input --------------------------------------------------------------------------------
BAD_INPUT = [
    # (line, fragments of the one-line message)
    ("frobnicate", ["unknown subcommand 'frobnicate'", "save", "restore", "policy"]),
    ("sav", ["unknown subcommand 'sav'"]),
    ("save --step ten", ["--step", "invalid int value: 'ten'", "usage: %checkpoint save"]),
    ("policy --keep-last zero", ["--keep-last", "expected a whole number, got 'zero'"]),
    ("policy --keep-last 0", ["--keep-last", "must be at least 1"]),
    ("policy --keep-every 2.5", ["--keep-every", "expected a whole number"]),
    ("save --metric val_loss", ["--metric", "expected KEY=NUMBER, got 'val_loss'"]),
    ("save --metric val_loss=low", ["expected KEY=NUMBER, got 'val_loss=low'"]),
    ("save --metric =0.3", ["expected KEY=NUMBER, got '=0.3'"]),
    ("show", ["the following arguments are required: REF", "usage: %checkpoint show REF"]),
    ("pin", ["required: REF"]),
    ("unpin", ["required: REF"]),
    ("delete", ["required: REF"]),
    ("diff latest", ["required: REF2"]),
    ("show nope", ["%checkpoint show: ", "'nope' names no checkpoint"]),
    ("restore nope", ["%checkpoint restore: ", "'nope' names no checkpoint"]),
    ("pin nope", ["'nope' names no checkpoint"]),
    ("delete nope", ["'nope' names no checkpoint"]),
    ("diff latest nope", ["'nope' names no checkpoint"]),
    ("verify nope", ["'nope' names no checkpoint"]),
    ("show best.nosuchmetric", ["nosuchmetric"]),
    ("restore best.val_loss:sideways", ["'min' or 'max'"]),
    ("policy --keep-within soon", ["--keep-within", "bad duration 'soon'", "10min"]),
    ("policy --keep-within '3 fortnights'", ["bad duration", "unknown unit 'fortnights'"]),
    ("auto --every soon", ["%checkpoint auto: ", "bad duration 'soon'"]),
    ("auto --every 0", ["at least 1"]),
    ("policy --keep-best 2", ["%checkpoint policy: ", "--keep-best needs", "--monitor"]),
    ("policy --mode sideways", ["--mode", "invalid choice: 'sideways'"]),
    ("save undefined_thing", ["%checkpoint save: ", "'undefined_thing' is not defined"]),
    ("save --name 'no/slash'", ["invalid checkpoint name 'no/slash'"]),
    ("save --name taken", ["taken"]),
    ('save --name "unbalanced', ["%checkpoint: ", "No closing quotation"]),
    ("show 'latest", ["No closing quotation"]),
    ("list --bogus", ["unrecognized arguments: --bogus"]),
    ("store a b", ["unrecognized arguments: b"]),
]


@pytest.mark.parametrize(("line", "fragments"), BAD_INPUT,
                         ids=[re.sub(r"\W+", "-", b[0]).strip("-") or "empty" for b in BAD_INPUT])
def test_bad_input_is_a_one_line_usage_error(ip: InteractiveShell, line: str,
                                             fragments: list[str]) -> None:
    training_state(ip, step=1)
    magic(ip, "save --name taken --metric val_loss=0.5")
    before = ([i.id for i in store_of(ip).list()], store_of(ip).policy.read(),
              store_of(ip).pins.ids())
    usage_error(ip, line, *fragments)
    after = ([i.id for i in store_of(ip).list()], store_of(ip).policy.read(),
             store_of(ip).pins.ids())
    assert after == before  # a bad line changes nothing


def test_save_with_nothing_to_save(ip: InteractiveShell) -> None:
    ip.push({"config": {"a": 1}, "name": "x"})  # plain values are not picked up by themselves
    usage_error(ip, "save", "%checkpoint save: nothing to save",
                "name variables to save")
    assert store_of(ip).list() == []


def test_refs_on_an_empty_store(ip: InteractiveShell) -> None:
    for line in ("restore", "verify", "show latest", "pin latest"):
        usage_error(ip, line, "no checkpoints of run", "yet")


def test_a_bad_line_in_a_cell_does_not_raise(ip: InteractiveShell) -> None:
    """In a notebook cell the UsageError is shown as one line, not a traceback."""
    result = ip.run_cell("%checkpoint save --step ten")
    assert isinstance(result.error_in_exec, UsageError)


# -- bugs fixed once (each test says the behaviour they lacked) -------------------------------
def test_a_failed_save_does_not_remember_its_vars(ip: InteractiveShell) -> None:
    training_state(ip, f=lambda: 1)
    usage_error(ip, "save f", "cannot save 'f'")
    magic(ip, "save")  # saves the tracked state without f: a refused VAR is not kept
    assert "f" not in store_of(ip).list()[-1].objects


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_restore_from_a_weights_file(ip: InteractiveShell, tmp_path: Path,
                                     suffix: str) -> None:
    from safetensors.torch import save_file

    source = net(seed=5)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    training_state(ip)
    magic(ip, "save")
    magic(ip, f"restore {path}")
    assert same(weights(ip.user_ns["model"]), weights(source))


def test_policy_clear_with_rules_is_a_usage_error(ip: InteractiveShell) -> None:
    magic(ip, "policy --keep-last 2")
    usage_error(ip, "policy --clear --keep-last 3", "--clear")
    assert store_of(ip).policy.read() == {"keep_last": 2}


def test_policy_monitor_without_keep_best_is_a_usage_error(ip: InteractiveShell) -> None:
    usage_error(ip, "policy --monitor val_loss", "--keep-best")
    assert store_of(ip).policy.read() == {}


MESSAGES_IN_PYTHON_TERMS = [
    pytest.param("policy --keep-best 2", "--monitor", id="keep-best-without-monitor"),
    pytest.param("policy --keep-within 0", "--keep-within", id="keep-within-0"),
    pytest.param("restore", "--no-strict", id="restore-strict"),
    pytest.param("delete best.val_loss", "--force", id="delete-pinned"),
]


@pytest.mark.parametrize(("line", "option"), MESSAGES_IN_PYTHON_TERMS)
def test_messages_name_the_magic_options(ip: InteractiveShell, line: str, option: str) -> None:
    torch.manual_seed(0)
    ip.push({"model": torch.nn.Linear(3, 2)})
    magic(ip, "save --metric val_loss=0.1")
    magic(ip, "pin latest")  # best.val_loss is pinned
    magic(ip, "save --metric val_loss=0.9")
    ip.push({"model": torch.nn.Linear(3, 2, bias=False)})  # strict restore fails: bias
    message = usage_error(ip, line)
    assert option in message
    assert "=True" not in message and "=False" not in message


def test_restore_shape_mismatch_strict_and_not(ip: InteractiveShell) -> None:
    torch.manual_seed(0)
    ip.push({"model": torch.nn.Linear(3, 2)})
    magic(ip, "save")
    bigger = torch.nn.Linear(3, 4)
    before = bigger.weight.clone()
    ip.push({"model": bigger})
    message = usage_error(ip, "restore", "shape (2, 3)", "(4, 3)")
    assert "--no-strict" in message and "strict=False" not in message
    ip.run_line_magic("checkpoint", "restore --no-strict")
    assert torch.equal(bigger.weight, before)  # the mismatched tensors were skipped


def test_dashboard_magic_displays_the_panel_app(ip: InteractiveShell,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import panel as pn

    ip.push({"model": torch.nn.Linear(3, 2)})
    magic(ip, "save --tag <b>x</b>")
    shown: list[object] = []
    monkeypatch.setattr("ckpt_notebook.ui.magics.display", shown.append)
    ip.run_line_magic("checkpoint", "dashboard")
    assert len(shown) == 1 and isinstance(shown[0], pn.viewable.Viewable)
