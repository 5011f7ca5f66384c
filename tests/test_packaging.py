"""Packaging: one ``pip install`` gives the JupyterLab extension and the server extension.

The dev venv (``pip install -e .``, as ``make`` does) must list ``ckpt-notebook`` as an
enabled prebuilt lab extension and ``ckpt_notebook`` as an enabled server extension. A wheel
built from this tree must carry both (``share/jupyter/labextensions/ckpt-notebook/`` and
``etc/jupyter/jupyter_server_config.d/ckpt_notebook.json``) and install them into a fresh
environment.

The fresh environment is a venv without dependencies (``--no-deps``): installing torch and
JupyterLab again would take minutes and test pip, not us. What this package adds to an
environment is its data files, so the test checks that they land under the new venv's
``share`` and ``etc``, then asks the dev venv's ``jupyter labextension list`` about that venv's
``share/jupyter`` (``JUPYTER_PATH``) and jupyter_server's config manager about its
``etc/jupyter``: the same lookups a JupyterLab installed there would make.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ckpt_notebook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LABEXT = "share/jupyter/labextensions/ckpt-notebook"
SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/ckpt_notebook.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the dev venv's ``jupyter``; its output (stdout and stderr) without colours."""
    done = subprocess.run([str(BIN / "jupyter"), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    return ANSI.sub("", done.stdout + done.stderr)


def sections(listing: str) -> dict[str, list[str]]:
    """``jupyter labextension list`` output by folder: {folder: [extension lines]}."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("/"):
            current = found.setdefault(line.strip(), [])
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            current.append(line.strip())
    return found


def test_extension_versions_agree() -> None:
    """The npm package and the Python package carry one version (the lab list shows it)."""
    package = json.loads((ROOT / "extension" / "package.json").read_text())
    assert package["name"] == "ckpt-notebook"
    assert package["version"] == ckpt_notebook.__version__
    assert package["jupyterlab"]["outputDir"] == "../ckpt_notebook/labextension"
    assert ckpt_notebook._jupyter_labextension_paths() == [
        {"src": "labextension", "dest": "ckpt-notebook"}]


def test_labextension_enabled_in_dev_venv() -> None:
    listing = jupyter("labextension", "list")
    lines = [line for lines in sections(listing).values() for line in lines]
    ours = [line for line in lines if line.startswith("ckpt-notebook ")]
    assert ours, listing
    assert re.match(rf"ckpt-notebook v{re.escape(ckpt_notebook.__version__)} enabled\s+OK",
                    ours[0]), listing
    assert "(python, ckpt_notebook)" in ours[0], "install.json missing from the build"


def test_server_extension_enabled_in_dev_venv() -> None:
    listing = jupyter("server", "extension", "list")
    assert re.search(r"^\s*ckpt_notebook enabled\s*$", listing, re.M), listing
    assert re.search(r"Validating ckpt_notebook\.\.\.\n\s*ckpt_notebook\s.*OK", listing), listing


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this tree, as ``pip wheel .`` builds it (isolated build env: the
    hook rebuilds the extension only when ckpt_notebook/labextension is missing or stale)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(out), str(ROOT)], check=True, timeout=600)
    (found,) = out.glob("ckpt_notebook-*.whl")
    return found


def test_wheel_carries_both_extensions(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = f"ckpt_notebook-{ckpt_notebook.__version__}.data/data/"
    assert data + f"{LABEXT}/package.json" in names
    assert data + f"{LABEXT}/install.json" in names
    assert any(re.fullmatch(re.escape(data + LABEXT) + r"/static/remoteEntry\.[0-9a-f]+\.js", n)
               for n in names), names
    assert data + SERVER_CONFIG in names
    config = json.loads(zipfile.ZipFile(wheel).read(data + SERVER_CONFIG))
    assert config == {"ServerApp": {"jpserver_extensions": {"ckpt_notebook": True}}}
    # The prebuilt extension is data, not a second copy inside the package; no sources.
    assert not [n for n in names if n.startswith(("ckpt_notebook/labextension/", "extension/",
                                                  "node_modules/"))]
    built = json.loads(zipfile.ZipFile(wheel).read(data + f"{LABEXT}/package.json"))
    assert built["name"] == "ckpt-notebook"
    assert built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")


def test_wheel_installs_into_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=300)
    labext = venv / LABEXT
    assert (labext / "package.json").is_file()
    assert list((labext / "static").glob("remoteEntry.*.js"))
    assert (venv / SERVER_CONFIG).is_file()

    env = dict(os.environ, JUPYTER_PATH=str(venv / "share" / "jupyter"))
    lab = sections(jupyter("labextension", "list", env=env))
    (ours,) = [lines for folder, lines in lab.items() if Path(folder) == labext.parent]
    assert any(re.match(r"ckpt-notebook v\S+ enabled\s+OK", line) for line in ours), lab
    # The server reads etc/jupyter/jupyter_server_config.d/*.json of every config folder.
    from jupyter_server.extension.config import ExtensionConfigManager

    config = ExtensionConfigManager(read_config_path=[str(venv / "etc" / "jupyter")])
    assert config.get_jpserver_extensions() == {"ckpt_notebook": True}


def test_copy_dialog_name_rule_is_ckpt_copys() -> None:
    """The copy dialog's check as you type (extension/src/names.ts, as built) accepts exactly
    the names ``ckpt copy`` accepts (ckpt_notebook.types.is_valid_name)."""
    import random

    from ckpt_notebook.types import is_valid_name

    names_js = ROOT / "extension" / "lib" / "names.js"
    assert names_js.is_file(), "extension/lib missing: the extension was not built"
    rng = random.Random(12)
    alphabet = "aZ09._-/ !é~:\\\t"
    names = ["a", "A.b_c-9", ".hidden", "latest", "last", "best", "best.", "best.loss",
             "Best.loss", "latest2", "x" * 128, "x" * 129, "", " ", "a b", "models/v1",
             "résumé", "-lead", "_lead", "trail.", "..", "a..b", "ckpt:ref"]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
              for _ in range(300)]
    script = ("import(process.argv[1]).then(m => { const names = JSON.parse(process.argv[2]); "
              "console.log(JSON.stringify(names.map(n => m.nameProblem(n) === null))); })")
    done = subprocess.run(["node", "--no-warnings", "--experimental-detect-module", "-e", script,
                           names_js.as_uri(), json.dumps(names)],
                          capture_output=True, text=True, timeout=60, check=True)
    accepted = json.loads(done.stdout)
    disagree = [(n, a) for n, a in zip(names, accepted, strict=True) if a != is_valid_name(n)]
    assert not disagree
