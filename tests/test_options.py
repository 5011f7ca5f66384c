"""Storage options reach every URL a store's user names (weights files, copy sources), the CLI
takes them as flags and from a config file, ``$S3_ENDPOINT_URL`` is honoured, and Hub uploads
take their target as flags as well as in the URL.

S3 is moto's server on 127.0.0.1; the Hub is the loopback stand-in of tests/servers_hf.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ipython_shell, mlp
from servers import HubServer, S3Server

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.manager.hub import parse_hf_url
from ckpt_notebook.manager.materializing import materialize
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.options import load_config, options_for, parse_storage_option


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes may reach s3fs: no AWS variables, no config file."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CKPT_NOTEBOOK_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def put(s3: S3Server, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


# -- the store's options reach weights URLs and copy sources ----------------------------------
def test_restore_weights_url_uses_store_storage_options(s3_server: S3Server) -> None:
    from safetensors.torch import save

    bucket = s3_server.make_bucket("weights")
    trained = mlp(seed=1)
    put(s3_server, bucket, "exports/model.safetensors", save(trained.state_dict()))
    model = mlp(seed=2)
    ck = Checkpointer(s3_server.url(bucket, "store"), storage_options=s3_server.storage_options,
                      model=model)
    report = ck.restore(s3_server.url(bucket, "exports/model.safetensors"))
    assert [r.name for r in report.objects] == ["model"]
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_copy_from_s3_uses_store_storage_options(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("source")
    put(s3_server, bucket, "models/a.bin", b"A" * 1000)
    put(s3_server, bucket, "models/sub/b.txt", b"b")
    store = Store(s3_server.url(bucket, "store"), **s3_server.storage_options)
    copy(s3_server.url(bucket, "models"), "imported", store=store)
    folder = materialize("imported", tmp_path / "out", store=store)
    assert (folder / "a.bin").read_bytes() == b"A" * 1000
    assert (folder / "sub" / "b.txt").read_bytes() == b"b"


# -- S3_ENDPOINT_URL ------------------------------------------------------------------------------
def test_s3_endpoint_url_variable_is_honoured(s3_server: S3Server,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.make_bucket("endpoint")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server.endpoint_url)
    options = {k: v for k, v in s3_server.storage_options.items() if k != "client_kwargs"}
    options["client_kwargs"] = {"region_name": "us-east-1"}
    ck = Checkpointer(s3_server.url(bucket, "store"), storage_options=options, model=mlp())
    ck.save(step=1)
    ck.wait()
    assert any(o["Key"].startswith("store/") for o in
               s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    # an endpoint given explicitly wins over the variable
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    again = Store(s3_server.url(bucket, "store"), **s3_server.storage_options)
    assert [i.step for i in again.list()] == [1]


def test_options_for_adds_endpoint_only_to_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert options_for("s3://b/x") == {"endpoint_url": "http://127.0.0.1:9000"}
    assert options_for("s3://b/x", {"endpoint_url": "http://e"}) == {"endpoint_url": "http://e"}
    assert options_for("s3://b/x", {"client_kwargs": {"endpoint_url": "http://e"}}) == {
        "client_kwargs": {"endpoint_url": "http://e"}}
    assert options_for("gs://b/x") == {}
    assert options_for("/tmp/store") == {}


# -- CLI: --storage-option and the config file ---------------------------------------------------
def test_parse_storage_option_values() -> None:
    assert parse_storage_option("anon=true") == ("anon", True)
    assert parse_storage_option("key=AKIA123") == ("key", "AKIA123")
    assert parse_storage_option("block_size=1024") == ("block_size", 1024)
    assert parse_storage_option('client_kwargs={"region_name": "eu"}') == (
        "client_kwargs", {"region_name": "eu"})
    assert parse_storage_option("token=a=b") == ("token", "a=b")
    for bad in ("noequals", "=value"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_storage_option(bad)


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_storage_option_flags(s3_server: S3Server, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("cli")
    url = s3_server.url(bucket, "store")
    saver = Checkpointer(url, storage_options=s3_server.storage_options, model=mlp())
    saver.save(step=3)
    saver.wait()
    flags = ["--storage-option", "key=testing", "--storage-option", "secret=testing",
             "--storage-option", "skip_instance_cache=true",
             "--storage-option", "client_kwargs=" + json.dumps(
                 {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"})]
    rc, out, err = cli([*flags, "--store", url, "ls", "--json"], capsys)
    assert rc == 0, err
    assert [row["step"] for row in json.loads(out)] == [3]
    # after the command name too, like --store
    rc, out, err = cli(["ls", "--store", url, "--json", *flags], capsys)
    assert rc == 0, err
    with pytest.raises(SystemExit) as exit_:
        main(["--storage-option", "oops", "ls"])
    assert exit_.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_config_file(s3_server: S3Server, capsys: pytest.CaptureFixture[str],
                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.make_bucket("cfg")
    url = s3_server.url(bucket, "store")
    saver = Checkpointer(url, storage_options=s3_server.storage_options, model=mlp())
    saver.save(step=5)
    saver.wait()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[storage_options."s3://{bucket}"]
key = "testing"
secret = "testing"
skip_instance_cache = true
client_kwargs = {{ endpoint_url = "{s3_server.endpoint_url}", region_name = "us-east-1" }}

[storage_options."s3://elsewhere"]
key = "wrong"
""")
    monkeypatch.setenv("CKPT_NOTEBOOK_CONFIG", str(config))
    rc, out, err = cli(["--store", url, "ls", "--json"], capsys)
    assert rc == 0, err
    assert [row["step"] for row in json.loads(out)] == [5]
    table = load_config()
    assert options_for(url, config=table)["key"] == "testing"
    assert options_for("s3://elsewhere/x", config=table) == {"key": "wrong"}
    assert options_for(f"s3://{bucket}-other/x", config=table) == {}  # a prefix of the bucket
    # a flag wins over the file
    assert options_for(url, {"key": "flag"}, config=table)["key"] == "flag"


def test_cli_config_file_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[storage_options\nkey = 1\n")
    monkeypatch.setenv("CKPT_NOTEBOOK_CONFIG", str(config))
    rc, _out, err = cli(["--store", str(tmp_path / "s"), "ls"], capsys)
    assert rc == 1
    assert str(config) in err and "TOML" in err and err.count("\n") == 1
    config.write_text('[storage_options]\nkey = "not a table"\n')
    rc, _out, err = cli(["--store", str(tmp_path / "s"), "ls"], capsys)
    assert rc == 1 and "storage_options" in err and err.count("\n") == 1


# -- hf:// spellings and Hub upload flags ---------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("hf://me/repo/sub@rev", ("me/repo", "rev", "model", "sub")),
    ("hf://me/repo@rev/sub", ("me/repo", "rev", "model", "sub")),
    ("hf://me/repo@rev/sub/dir", ("me/repo", "rev", "model", "sub/dir")),
    ("hf://datasets/me/data@v1/sub", ("me/data", "v1", "dataset", "sub")),
    ("hf://me/repo@refs/pr/1", ("me/repo", "refs/pr/1", "model", "")),
    ("hf://me/repo@refs/pr/1/sub", ("me/repo", "refs/pr/1", "model", "sub")),
    ("hf://me/repo/sub@refs/pr/1", ("me/repo", "refs/pr/1", "model", "sub")),
    ("hf://me/repo@refs%2Fpr%2F1/sub", ("me/repo", "refs/pr/1", "model", "sub")),
])
def test_parse_hf_url_both_revision_spellings(url: str,
                                              expected: tuple[str, str, str, str]) -> None:
    assert parse_hf_url(url) == expected


def test_parse_hf_url_two_revisions_is_an_error() -> None:
    with pytest.raises(ValueError, match="one @revision") as err:
        parse_hf_url("hf://me/repo@a/sub@b")
    assert "hf://me/repo/sub@REVISION" in str(err.value)


@pytest.fixture
def hub(hf_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    hf_hub.patch(monkeypatch, tmp_path / "hf")
    return hf_hub


def test_copy_from_hub_both_revision_spellings(hub: HubServer, tmp_path: Path) -> None:
    first = hub.add_files("owner/repo", {"w/a.bin": b"v1", "top.txt": b"t"})
    hub.create_branch("owner/repo", "stable", first)
    hub.add_files("owner/repo", {"w/a.bin": b"v2"})
    store = Store(tmp_path / "store")
    for i, url in enumerate(("hf://owner/repo/w@stable", "hf://owner/repo@stable/w")):
        copy(url, f"n{i}", store=store)
        folder = materialize(f"n{i}", tmp_path / f"out{i}", store=store)
        assert (folder / "a.bin").read_bytes() == b"v1"
        assert not (folder / "top.txt").exists()


def test_cli_upload_flags(hub: HubServer, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    hub.create_repo("owner/ds", repo_type="dataset")
    hub.create_branch("owner/ds", "dev", repo_type="dataset")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"A")
    store = ["--store", str(tmp_path / "store")]
    rc, out, err = cli(["copy", str(folder), "--to", "hf://owner/ds", "--repo-type", "dataset",
                        "--remote-dir", "exports/v1", *store], capsys)
    assert rc == 0, err
    assert "hf://datasets/owner/ds/exports/v1" in out
    assert hub.files("owner/ds", repo_type="dataset") == {"exports/v1/a.bin": b"A"}
    rc, out, err = cli(["copy", str(folder), "--to", "hf://datasets/owner/ds@main/x",
                        "--revision", "dev", *store], capsys)
    assert rc == 1 and err.count("\n") == 1
    assert "--revision dev" in err and "main" in err
    rc, out, err = cli(["copy", str(folder), "--to", "hf://owner/ds", "--repo-type", "space",
                        "--remote-dir", "a", "--dry-run", *store], capsys)
    assert rc == 0 and "hf://spaces/owner/ds/a" in out
    rc, out, err = cli(["copy", str(folder), "--to", "hf://datasets/owner/ds",
                        "--repo-type", "model", *store], capsys)
    assert rc == 1 and "--repo-type model" in err and "datasets/" in err
    rc, out, err = cli(["copy", str(folder), "--name", "x", "--revision", "dev", *store],
                       capsys)
    assert rc == 1 and "--revision" in err and "hf://" in err


def test_cli_copy_to_another_s3_store_gets_the_options(s3_server: S3Server, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    bucket = s3_server.make_bucket("copyto")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"W" * 100)
    endpoint = json.dumps({"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"})
    flags = ["--storage-option", "key=testing", "--storage-option", "secret=testing",
             "--storage-option", f"client_kwargs={endpoint}"]
    rc, _out, err = cli(["copy", str(folder), "--name", "m1", "--store", str(tmp_path / "here"),
                         "--to", s3_server.url(bucket, "there"), *flags], capsys)
    assert rc == 0, err
    there = Store(s3_server.url(bucket, "there"), **s3_server.storage_options)
    assert there.exists("m1")


def test_cli_repair_from_an_s3_store_gets_the_options(s3_server: S3Server, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    bucket = s3_server.make_bucket("mirror")
    mirror = Store(s3_server.url(bucket, "mirror"), **s3_server.storage_options)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"W" * 1000)
    copy(str(folder), "m1", store=mirror)
    local = Store(tmp_path / "local")
    copy("m1", "m1", store=mirror, to=local)
    blob = next(p for p in (tmp_path / "local" / "blobs").rglob("*") if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"X" * 1000)
    endpoint = json.dumps({"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"})
    rc, out, err = cli(["--store", str(tmp_path / "local"), "repair", "--from",
                        s3_server.url(bucket, "mirror"), "--storage-option", "key=testing",
                        "--storage-option", "secret=testing",
                        "--storage-option", f"client_kwargs={endpoint}"], capsys)
    assert rc == 0, err + out
    assert "1 fixed" in out
    assert not local.verify_all()


def test_magic_upload_flags(hub: HubServer, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """`%checkpoint copy` takes the Hub upload flags too, with the CLI's rules."""
    import shlex

    from IPython.core.error import UsageError

    from ckpt_notebook.ui import session as session_mod

    shell = ipython_shell()
    shell.run_line_magic("load_ext", "ckpt_notebook")
    session_mod._SESSIONS.pop(id(shell), None)
    shell.run_line_magic("checkpoint", f"store {shlex.quote(str(tmp_path / 'store'))} --create")
    hub.create_repo("owner/ds", repo_type="dataset")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"A")
    capsys.readouterr()
    said = shell.run_line_magic("checkpoint", f"copy {shlex.quote(str(folder))} --to "
                                "hf://owner/ds --repo-type dataset --remote-dir exports/v1")
    assert "hf://datasets/owner/ds/exports/v1" in f"{said} {capsys.readouterr().out}"
    assert hub.files("owner/ds", repo_type="dataset") == {"exports/v1/a.bin": b"A"}
    with pytest.raises(UsageError, match="--revision"):
        shell.run_line_magic("checkpoint", f"copy {shlex.quote(str(folder))} --name x "
                             "--revision dev")
    old = session_mod._SESSIONS.pop(id(shell), None)
    if old is not None:
        old.close()
