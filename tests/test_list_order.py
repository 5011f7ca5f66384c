"""Every list a person reads shows checkpoints in one order, newest first: ``ckpt ls`` (text and
JSON), the table of ``%checkpoint list`` and the widget, the widget's chooser and the
dashboard. (``Store.list()`` and ``Checkpointer.list()``, the Python API, stay oldest first.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.storage import Store
from ckpt_notebook.ui.render import checkpoint_table


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    root = str(tmp_path_factory.mktemp("order") / "store")
    model = torch.nn.Linear(2, 2)
    ck = Checkpointer(root, run="r", model=model)
    ids = []
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ids.append(ck.save(step=step, wait=True).id)
    ck.close()
    return root, ids[::-1]  # newest first


def test_ckpt_ls_lists_newest_first(capsys: pytest.CaptureFixture[str],
                                    saved: tuple[str, list[str]]) -> None:
    root, newest_first = saved
    assert main(["ls", "--store", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == newest_first
    assert main(["ls", "--json", "--store", root]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == newest_first


def test_tables_list_newest_first(saved: tuple[str, list[str]]) -> None:
    root, newest_first = saved
    table = checkpoint_table(Store(root).list())
    assert [row[0] for row in table.rows] == newest_first


def test_dashboard_rows_newest_first(saved: tuple[str, list[str]]) -> None:
    from ckpt_notebook.ui.dashboard.model import DashboardModel

    model = DashboardModel(saved[0])
    model.refresh()
    assert [r["id"] for r in model.rows()] == saved[1]


def test_store_list_stays_oldest_first(saved: tuple[str, list[str]]) -> None:
    assert [i.id for i in Store(saved[0]).list()] == saved[1][::-1]


def test_cli_help_says_newest_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["ls", "--help"])
    assert "newest first" in capsys.readouterr().out
