"""One declaration per subcommand (``ui/commands.py``) serves ``ckpt`` and ``%checkpoint``:
both parsers and the magic's usage text are built from it, the policy options are checked
once, and the manager routes every copy (store or Hub) for the CLI, the magic and the API."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import pythonpath_env

from ckpt_notebook import cli
from ckpt_notebook.manager.hub import CopyTerms, hub_target, plan_copy
from ckpt_notebook.retention import Policy
from ckpt_notebook.ui import commands, magics
from ckpt_notebook.ui.commands import CLI, COMMANDS, MAGIC, arg, commands_of, policy_of


def cli_help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def cli_choices() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# -- every declared command reaches the interfaces it is declared for -------------------------
def test_each_interface_has_exactly_its_declared_commands(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert list(cli_choices()) == [c.name for c in commands_of(CLI)]
    assert list(magics._build_parsers()) == [c.name for c in commands_of(MAGIC)]
    both = {c.name for c in COMMANDS if c.only is None}
    assert {"show", "diff", "verify", "policy", "prune", "pin", "unpin", "delete", "copy",
            "dashboard"} <= both
    top = cli_help(capsys)
    for cmd in commands_of(CLI):
        assert f"    {cmd.name} " in top, cmd.name
    for cmd in commands_of(MAGIC):
        assert f"\n  {cmd.name}" in magics.USAGE, cmd.name
    for cmd in COMMANDS:  # a command declared for one interface only stays out of the other
        if cmd.only == MAGIC:
            assert cmd.name not in cli_choices()
        if cmd.only == CLI:
            assert cmd.name not in magics._build_parsers()


def test_every_declared_command_has_a_handler() -> None:
    assert set(cli.HANDLERS) == {c.name for c in commands_of(CLI)}
    shell: Any = None
    assert set(magics.CheckpointMagics(shell).handlers) == {c.name for c in commands_of(MAGIC)}


def test_arguments_declared_once_reach_both(capsys: pytest.CaptureFixture[str]) -> None:
    """An option of a command both have is in ``ckpt CMD --help`` and ``%checkpoint CMD -h``,
    with the same help; one declared for one interface is in that one only."""
    parsers = magics._build_parsers()
    for cmd in COMMANDS:
        if cmd.only is not None:
            continue
        cli_text = " ".join(cli_help(capsys, cmd.name).split())
        magic_text = " ".join(parsers[cmd.name].format_help().split())
        for a in cmd.args:
            flag = a.flags[0]
            if not flag.startswith("-"):
                continue
            help_text = " ".join(str(a.options.get("help", "")).split())
            assert (flag in cli_text) == (a.only in (None, CLI)), (cmd.name, flag)
            assert (flag in magic_text) == (a.only in (None, MAGIC)), (cmd.name, flag)
            if a.only is None:
                assert help_text in cli_text and help_text in magic_text, (cmd.name, flag)


def test_the_magic_usage_and_docstring_are_generated() -> None:
    for cmd in commands_of(MAGIC):
        assert commands.synopsis(cmd, MAGIC, indent="  ") in magics.USAGE
        assert commands.synopsis(cmd, MAGIC, indent="%checkpoint ") in \
            (magics.CheckpointMagics.checkpoint.__doc__ or "")


def test_a_new_option_shows_in_both(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    prune = commands.command("prune")
    grown = dataclasses.replace(prune, args=(*prune.args, arg(
        "--older-than", metavar="DURATION", help="only checkpoints older than DURATION")))
    monkeypatch.setattr(commands, "COMMANDS",
                        tuple(grown if c is prune else c for c in COMMANDS))
    assert "--older-than DURATION" in cli_help(capsys, "prune")
    assert "only checkpoints older than DURATION" in magics._build_parsers()["prune"].format_help()
    assert "prune [--dry-run] [--older-than DURATION]" in magics._synopses("  ")
    args = magics._build_parsers()["prune"].parse_args(["--older-than", "2d"])
    assert args.older_than == "2d"


def test_synopsis_wraps_between_arguments_and_shows_groups() -> None:
    text = commands.synopsis(commands.command("policy"), MAGIC, width=40, indent="  ")
    lines = text.splitlines()
    assert lines[0].startswith("  policy [--keep-last N]")
    assert all(len(line) <= 40 for line in lines)
    assert all(line.startswith("         [") for line in lines[1:])
    assert commands.synopsis(commands.command("verify"), CLI) == "verify [REF | --all]"
    assert commands.synopsis(commands.command("verify"), MAGIC) == "verify [REF]"


def test_the_declarations_import_nothing_heavy() -> None:
    code = ("import sys, ckpt_notebook.ui.commands; "
            "print([m for m in ('torch', 'panel', 'ipywidgets', 'huggingface_hub', 'IPython', "
            "'ckpt_notebook.manager') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=pythonpath_env()).stdout
    assert out.strip() == "[]"


# -- the policy options, checked once ---------------------------------------------------------
def policy_args(**given: Any) -> argparse.Namespace:
    values: dict[str, Any] = {**dict.fromkeys(commands.POLICY_RULES), "clear": False, **given}
    return argparse.Namespace(**values)


@pytest.mark.parametrize(("given", "expected"), [
    ({}, None),
    ({"clear": True}, Policy()),
    ({"keep_last": 3}, Policy(keep_last=3)),
    ({"keep_best": 2, "monitor": "val_loss", "mode": "max"},
     Policy(keep_best=2, monitor="val_loss", mode="max")),
    ({"keep_within": 60.0, "scope": "store"}, Policy(keep_within=60.0, scope="store")),
])
def test_policy_of(given: dict[str, Any], expected: Policy | None) -> None:
    assert policy_of(policy_args(**given)) == expected


@pytest.mark.parametrize(("given", "fragment"), [
    ({"clear": True, "keep_last": 2}, "--clear removes every rule"),
    ({"keep_best": 2}, "--keep-best needs --monitor"),
    ({"monitor": "loss"}, "give --keep-best N too"),
    ({"mode": "min", "keep_last": 1}, "give --keep-best N too"),
])
def test_policy_of_refuses(given: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        policy_of(policy_args(**given))


# -- copies are routed by the manager ---------------------------------------------------------
OPTIONS = commands.copy_terms()


@pytest.mark.parametrize(("terms", "kwargs", "fragment"), [
    (CopyTerms(), {"patterns": ["*.bin"]}, "patterns is for Hub uploads only (to='hf://"),
    (OPTIONS, {"patterns": ["*.bin"], "dry_run": True},
     "--pattern, --dry-run are for Hub uploads only (--to hf://"),
    (OPTIONS, {"revision": "dev"}, "--revision is for Hub uploads only"),
    (CopyTerms(), {"name": None}, "copy needs a name"),
    (OPTIONS, {"name": None}, "copy needs --name NAME"),
    (OPTIONS, {"to": "hf://me/repo"}, "a Hub upload takes no name (--name is not used)"),
    (CopyTerms(), {"to": "hf://me/repo"}, "(name is not used)"),
    (OPTIONS, {"to": "hf://datasets/me/d", "name": None, "repo_type": "model"},
     "--repo-type model disagrees"),
])
def test_plan_copy_refuses_before_reading(tmp_path: Path, terms: CopyTerms,
                                          kwargs: dict[str, Any], fragment: str) -> None:
    kwargs = {"name": "x", **kwargs}
    with pytest.raises(ValueError) as caught:
        plan_copy(tmp_path / "nothing-here", kwargs.pop("to", None), store=tmp_path / "s",
                  terms=terms, **kwargs)
    assert fragment in str(caught.value)
    assert not (tmp_path / "s").exists()


def test_plan_copy_routes(tmp_path: Path) -> None:
    opened: list[str] = []

    def open_to(url: str) -> Any:
        opened.append(url)
        return url

    store_copy = plan_copy("models", str(tmp_path / "other"), name="m", open_to=open_to)
    assert (store_copy.upload, store_copy.label) == (False, "copy m")
    assert opened == [str(tmp_path / "other")]
    upload = plan_copy("models", "hf://me/repo", dry_run=True, open_to=open_to)
    assert (upload.upload, upload.dry_run, upload.label) == (True, True, "upload models")
    assert opened == [str(tmp_path / "other")]  # a Hub URL is no store to open


@pytest.mark.parametrize(("url", "flags", "expected"), [
    ("hf://me/repo", {}, "hf://me/repo"),
    ("hf://me/repo", {"repo_type": "dataset", "remote_dir": "a/b", "revision": "dev"},
     "hf://datasets/me/repo/a/b@dev"),
    ("hf://datasets/me/d@v1/sub", {"repo_type": "dataset", "remote_dir": "/sub/"},
     "hf://datasets/me/d/sub@v1"),
])
def test_hub_target_folds_the_flags_in(url: str, flags: dict[str, str], expected: str) -> None:
    assert hub_target(url, **flags) == expected
