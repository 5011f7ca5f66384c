"""Widget: build it in a real kernel, drive its callbacks, check the store changed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pythonpath_env

from ckpt_notebook import Store

jupyter_client = pytest.importorskip("jupyter_client.manager")
pytest.importorskip("ipywidgets")

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

SETUP = """
%load_ext ckpt_notebook
import torch, ckpt_notebook
from ckpt_notebook.ui.widget import CheckpointWidget
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
step = 7
%checkpoint store {store}
w = CheckpointWidget(ckpt_notebook.session())
"""


class Kernel:
    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Execute ``code``; returns the execute_reply content and the iopub messages."""
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(code, output_hook=messages.append, timeout=60)
        content = reply["content"]
        if content["status"] != "ok":
            raise AssertionError(f"{content.get('ename')}: {content.get('evalue')}\n"
                                 + "\n".join(content.get("traceback", [])))
        return content, messages

    def value(self, expr: str) -> Any:
        """The JSON value of ``expr`` in the kernel (printed, then parsed here)."""
        _, messages = self.run(f"import json as _j; print(_j.dumps({expr}))")
        out = "".join(m["content"]["text"] for m in messages
                      if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kernel, Path]]:
    work = tmp_path_factory.mktemp("widget")
    env = pythonpath_env()
    env.pop("CKPT_NOTEBOOK_STORE", None)
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3", cwd=str(work), env=env,
                                             startup_timeout=60)
    try:
        k = Kernel(kc)
        assert k.value("__import__('sys').executable") == sys.executable
        store = work / "store"
        k.run(SETUP.format(store=store))
        yield k, store
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_widget_drives_the_store(kernel: tuple[Kernel, Path]) -> None:
    k, store_dir = kernel
    k.run("w.bar.observe(lambda c: seen.append((c.new, __import__('threading')"
          ".current_thread().name)), names='value'); seen = []")
    weight = "model[0].weight.sum().item()"
    before = k.value(weight)

    _, messages = k.run("w.save(); w.wait()")
    infos = Store(store_dir).list()
    assert len(infos) == 1 and infos[0].step == 7
    ckpt = infos[0].id
    assert k.value("w.bar.value") == 1.0
    assert k.value("w.session.progress is None")
    assert any(name.startswith("ckpt-save") for _, name in k.value("seen")), \
        "the bar follows the background write"
    bar = k.value("w.bar.model_id")
    sent = [m["content"]["data"]["state"] for m in messages if m["msg_type"] == "comm_msg"
            and m["content"]["comm_id"] == bar and m["content"]["data"].get("method") == "update"]
    assert {"value": 1.0} in sent, "the updates reach the frontend"
    assert k.value("w.selected") == ckpt
    assert ckpt in k.value("w.table.value")
    assert f"saved {ckpt}" in k.value("w.message.value")

    k.run("w.toggle_pin()")
    assert Store(store_dir).pins.ids() == {ckpt}
    assert k.value("w.buttons['Pin'].description") == "Unpin"
    assert "pinned" in k.value("w.table.value")
    k.run("w.toggle_pin()")
    assert Store(store_dir).pins.ids() == set()
    k.run("w.toggle_pin()")

    k.run("with torch.no_grad(): model[0].weight.add_(1.0)\nstep = 99")
    assert k.value(weight) != before
    k.run("w.restore()")
    assert k.value(weight) == before
    assert k.value("step") == 7
    assert f"restored {ckpt}" in k.value("w.message.value")

    k.run("w.verify()")
    assert "OK" in k.value("w.message.value")
    doc = Store(store_dir).manifest(ckpt)
    digest = max(doc.blobs, key=lambda d: int(doc.blobs[d]))
    blob = store_dir / "blobs" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    k.run("w.verify()")
    message = k.value("w.message.value")
    assert "failed" in message and digest[:16] in message
    assert "\n" not in message and "Traceback" not in message


def test_errors_are_one_line(kernel: tuple[Kernel, Path]) -> None:
    k, _ = kernel
    k.run("w.choice.options = [('missing', 'no-such-checkpoint')]; w.restore()")
    message = k.value("w.message.value")
    assert "restore failed" in message and "no-such-checkpoint" in message
    assert "\n" not in message and "Traceback" not in message
    k.run("w.refresh()")
    assert k.value("w.selected") != "no-such-checkpoint"


def test_magic_displays_widget(kernel: tuple[Kernel, Path]) -> None:
    k, _ = kernel
    reply, messages = k.run("%checkpoint widget")
    assert reply["status"] == "ok"
    shown = [m for m in messages if m["msg_type"] == "display_data"
             and WIDGET_MIME in m["content"]["data"]]
    assert len(shown) == 1
    reply, messages = k.run("ckpt_notebook.widget()")
    assert any(m["msg_type"] == "execute_result" and WIDGET_MIME in m["content"]["data"]
               for m in messages)


def test_widget_follows_a_store_switch(kernel: tuple[Kernel, Path]) -> None:
    k, store_dir = kernel
    other = store_dir.parent / "other"
    k.run(f"%checkpoint store {other}\nw.refresh()")
    assert "0 checkpoint(s)" in k.value("w.table.value")
    k.run("w.save(); w.wait()")
    assert len(Store(other).list()) == 1
    assert len(Store(store_dir).list()) == 1


def test_progress_is_throttled(store_dir: Path) -> None:
    from ckpt_notebook.ui.session import NotebookCheckpointer
    from ckpt_notebook.ui.widget import CheckpointWidget

    w = CheckpointWidget(NotebookCheckpointer(None, store_dir))
    values: list[float] = []
    w.bar.observe(lambda change: values.append(change.new), names="value")
    total = 10_000
    for done in range(1, total + 1):
        w.show_progress(done, total)
    assert values[-1] == 1.0
    assert len(values) <= 5, "a burst of callbacks sends a handful of updates, not thousands"
    assert "KiB" in w.progress_label.value


def test_buttons_show_a_click_at_once_and_say_a_busy_kernel_queues_it(
        kernel: tuple[Kernel, Path]) -> None:
    """A busy kernel cannot run a click's handler, so the buttons are toggle buttons: the
    browser shows one pressed the moment it is clicked (client-side state), and it stays down
    until the kernel has run it; the panel says so, and how to save during training."""
    k, _ = kernel
    assert k.value("all(type(b).__name__ == 'ToggleButton' for b in w.buttons.values())")
    hint = k.value("w.hint.value")
    assert "busy" in hint and "ckpt request-save" in hint
    count = "len(w.session.store.list())"  # an earlier test may have switched the store
    before = k.value(count)
    k.run("with torch.no_grad(): model[0].weight.add_(0.5)")
    k.run("w.buttons['Save'].value = True; w.wait()")  # what the browser sends on a click
    assert k.value("w.buttons['Save'].value") is False  # up again: the click was run
    assert k.value(count) == before + 1


def test_widget_save_of_an_unchanged_state_says_nothing_new(kernel: tuple[Kernel, Path]) -> None:
    k, _ = kernel
    k.run("w.save(); w.wait()")
    before = k.value("len(w.session.store.list())")
    k.run("w.save(); w.wait()")
    assert k.value("len(w.session.store.list())") == before
    assert "nothing new" in k.value("w.message.value")
