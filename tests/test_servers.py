"""The test servers themselves work with the real clients (s3fs, fsspec HTTP, huggingface_hub)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from http.client import HTTPConnection
from pathlib import Path

import fsspec
import pytest
from botocore.exceptions import BotoCoreError
from servers import (
    FaultyProxy,
    HTTPFileServer,
    HubServer,
    S3Server,
    faulty_s3,
    hf_hub,
    http_files,
    lfs_pointer,
    s3_server,
)

# Importing the fixtures registers them for this module; naming them once keeps ruff from
# reading each test's argument as a redefinition (F811) of an unused import.
FIXTURES = (s3_server, faulty_s3, http_files, hf_hub)

MiB = 2**20


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------- S3 (moto)


def test_s3_put_get_ls_rm(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("basic")
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    data = blob(3 * MiB)
    (tmp_path / "in.bin").write_bytes(data)
    fs.put_file(str(tmp_path / "in.bin"), f"{bucket}/dir/a.bin")
    fs.pipe_file(f"{bucket}/dir/b.txt", b"hello")
    assert sorted(fs.ls(f"{bucket}/dir", detail=False)) == [f"{bucket}/dir/a.bin",
                                                            f"{bucket}/dir/b.txt"]
    assert fs.info(f"{bucket}/dir/a.bin")["size"] == len(data)
    fs.get_file(f"{bucket}/dir/a.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data
    with fs.open(f"{bucket}/dir/a.bin", "rb", block_size=MiB) as f:
        f.seek(2 * MiB + 5)
        assert f.read(10) == data[2 * MiB + 5:2 * MiB + 15]
    fs.rm(f"{bucket}/dir/b.txt")
    assert not fs.exists(f"{bucket}/dir/b.txt")
    # the URL helper and url_to_fs agree
    fs2, path = fsspec.core.url_to_fs(s3_server.url(bucket, "dir/a.bin"),
                                      **s3_server.storage_options)
    assert fs2 is not fs and fs2.cat_file(path) == data


def test_s3_multipart_and_conditional_create(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("mpu")
    fs = s3_server.fs()
    part = blob(5 * MiB + 7, seed=1)
    with fs.open(f"{bucket}/big.bin", "wb", block_size=5 * MiB) as f:
        for _ in range(3):
            f.write(part)
    head = s3_server.client().head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # really a 3-part multipart upload
    assert fs.cat_file(f"{bucket}/big.bin") == part * 3
    # moto honours If-None-Match: exclusive create raises FileExistsError (via s3fs).
    fs.pipe_file(f"{bucket}/once", b"1", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/once", b"2", mode="create")
    assert fs.cat_file(f"{bucket}/once") == b"1"


# --------------------------------------------------------------------------- faulty proxy


def _round_trip(fs: fsspec.AbstractFileSystem, bucket: str) -> None:
    small, big = blob(2 * MiB, seed=2), blob(11 * MiB, seed=3)
    fs.pipe_file(f"{bucket}/small.bin", small)
    with fs.open(f"{bucket}/big.bin", "wb", block_size=5 * MiB) as f:
        f.write(big[: 6 * MiB])
        f.write(big[6 * MiB:])
    assert sorted(fs.ls(bucket, detail=False, refresh=True)) == [f"{bucket}/big.bin",
                                                                 f"{bucket}/small.bin"]
    assert fs.cat_file(f"{bucket}/small.bin") == small
    assert fs.cat_file(f"{bucket}/big.bin") == big
    fs.rm(f"{bucket}/small.bin")
    assert not fs.exists(f"{bucket}/small.bin")


def test_proxy_forwards_everything_when_healthy(faulty_s3: FaultyProxy) -> None:
    bucket = faulty_s3.make_bucket("proxy")
    _round_trip(faulty_s3.fs(), bucket)
    assert faulty_s3.requests > 5 and faulty_s3.faults == 0
    assert faulty_s3.forwarded == faulty_s3.requests
    assert all(r.outcome.startswith("forwarded 2") or r.outcome == "forwarded 404"
               for r in faulty_s3.log), faulty_s3.log
    # a chunked request body (no Content-Length) is de-chunked and forwarded
    conn = HTTPConnection("127.0.0.1", faulty_s3.port, timeout=10)
    conn.request("PUT", f"/{bucket}/chunked.bin", body=iter([b"abc", b"defg"]),
                 encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert faulty_s3.fs().cat_file(f"{bucket}/chunked.bin") == b"abcdefg"


@pytest.mark.parametrize("mode", ["500", "mixed"])
def test_proxy_faults_are_survived_by_retries(faulty_s3: FaultyProxy, mode: str) -> None:
    bucket = faulty_s3.make_bucket("flaky")
    faulty_s3.fail_rate, faulty_s3.mode = 0.3, mode
    faulty_s3.max_consecutive = 2  # botocore's 5 attempts then always get through
    _round_trip(faulty_s3.fs(), bucket)
    assert faulty_s3.faults > 0
    kinds = {r.outcome for r in faulty_s3.log if r.outcome.startswith("fault")}
    assert kinds <= {"fault 500", "fault drop", "fault reset"}


@pytest.mark.parametrize("mode", ["500", "drop", "reset"])
def test_proxy_fail_all_raises(faulty_s3: FaultyProxy, mode: str) -> None:
    bucket = faulty_s3.make_bucket("down")
    fs = faulty_s3.fs(max_attempts=1)
    faulty_s3.fail_all, faulty_s3.mode = True, mode
    # a 5xx becomes OSError; a dropped connection surfaces as botocore's own error type
    expected = OSError if mode == "500" else BotoCoreError
    with pytest.raises(expected):
        fs.pipe_file(f"{bucket}/x", b"data")
    with pytest.raises(expected):
        fs.cat_file(f"{bucket}/x")
    assert faulty_s3.forwarded == 0 and faulty_s3.faults == faulty_s3.requests
    faulty_s3.heal()
    fs.pipe_file(f"{bucket}/x", b"data")
    assert fs.cat_file(f"{bucket}/x") == b"data"


def test_proxy_match_and_lost_answer(faulty_s3: FaultyProxy) -> None:
    """A PUT that succeeds upstream but whose answer is lost is retried by the client; with an
    exclusive create, the retry then meets its own object and fails."""
    bucket = faulty_s3.make_bucket("lost")
    fs = faulty_s3.fs(max_attempts=2)
    faulty_s3.mode = "drop_after"
    faulty_s3.match = lambda method, path: method == "PUT" and "/manifest" in path
    faulty_s3.fail_next(1)
    fs.pipe_file(f"{bucket}/blob", b"b")  # not matched: goes through
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/manifest", b"m", mode="create")
    assert fs.cat_file(f"{bucket}/manifest") == b"m"  # the first attempt did land
    assert [r.outcome for r in faulty_s3.log if "/manifest" in r.path][:2] == [
        "fault drop_after", "forwarded 412"]


# --------------------------------------------------------------------------- plain HTTP


def test_http_files_with_fsspec(http_files: HTTPFileServer) -> None:
    data = blob(300_000, seed=4)
    http_files.write("models/w.bin", data)
    http_files.write("models/sub/c.json", b"{}")
    ptr = http_files.write_lfs_pointer("models/lfs.bin", data)
    assert ptr.read_bytes() == lfs_pointer(data)
    assert ptr.read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert fs.info(http_files.url("models/w.bin"))["size"] == len(data)
    assert fs.cat_file(http_files.url("models/w.bin")) == data
    assert fs.cat_file(http_files.url("models/w.bin"), start=1000, end=1010) == data[1000:1010]
    with fs.open(http_files.url("models/w.bin"), "rb", block_size=4096) as f:
        f.seek(-5, 2)
        assert f.read() == data[-5:]
    assert any(r[2] for r in http_files.requests)  # ranged GETs were made
    listing = fs.ls(http_files.url("models/"), detail=False)
    assert set(listing) == {http_files.url("models/w.bin"), http_files.url("models/lfs.bin"),
                            http_files.url("models/sub/")}
    with pytest.raises(FileNotFoundError):
        fs.cat_file(http_files.url("models/missing.bin"))


# --------------------------------------------------------------------------- Hugging Face Hub


def test_hub_read_with_hffilesystem(hf_hub: HubServer) -> None:
    first = hf_hub.add_files("owner/repo", {"config.json": b'{"a": 1}', "w/model.bin": b"v1"})
    hf_hub.add_file("owner/repo", "w/model.bin", b"v2" * 1000)
    hf_hub.add_file("owner/repo", "w/big.safetensors", blob(200_000), lfs=True)
    fs = hf_hub.fs()
    assert sorted(fs.ls("hf://owner/repo", detail=False)) == ["owner/repo/config.json",
                                                              "owner/repo/w"]
    assert sorted(fs.find("owner/repo")) == ["owner/repo/config.json",
                                             "owner/repo/w/big.safetensors",
                                             "owner/repo/w/model.bin"]
    assert fs.info("owner/repo/w/model.bin")["size"] == 2000
    assert fs.isdir("owner/repo/w") and not fs.exists("owner/repo/nope")
    assert not fs.exists("owner/missing-repo/x")
    assert fs.cat("hf://owner/repo/w/model.bin") == b"v2" * 1000
    with fs.open("owner/repo/w/big.safetensors", "rb", block_size=4096) as f:
        f.seek(100_000)
        assert f.read(16) == blob(200_000)[100_000:100_016]
    # @revision: a commit sha sees the old content; detail has lfs metadata for LFS files
    assert fs.cat(f"hf://owner/repo@{first}/w/model.bin") == b"v1"
    assert fs.ls(f"owner/repo@{first}/w", detail=False) == [f"owner/repo@{first}/w/model.bin"]
    lfs = fs.ls("owner/repo/w/big.safetensors", detail=True)[0]["lfs"]
    assert lfs["size"] == 200_000
    hf_hub.create_branch("owner/repo", "dev", first)
    assert fs.cat("owner/repo@dev/w/model.bin") == b"v1"
    assert fs.info("owner/repo@dev/w/model.bin", expand_info=True)["last_commit"].oid == first
    assert hf_hub.unhandled == []


def test_hub_download_and_pointer(hf_hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    sha = hf_hub.add_files("owner/dl", {"a/x.bin": b"x" * 100})
    hf_hub.add_file("owner/dl", "w.safetensors", blob(50_000), lfs=True)
    kw = {"endpoint": hf_hub.endpoint, "token": hf_hub.token, "cache_dir": tmp_path / "cache"}
    path = hf_hub_download("owner/dl", "a/x.bin", **kw)
    assert Path(path).read_bytes() == b"x" * 100
    assert f"snapshots/{hf_hub.head('owner/dl')}/a/x.bin" in path
    assert Path(hf_hub_download("owner/dl", "w.safetensors", **kw)).read_bytes() == blob(50_000)
    assert Path(hf_hub_download("owner/dl", "a/x.bin", revision=sha, **kw)).read_bytes() == (
        b"x" * 100)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("owner/dl", "missing.bin", **kw)
    snap = Path(snapshot_download("owner/dl", local_dir=tmp_path / "snap", **kw))
    assert (snap / "a/x.bin").read_bytes() == b"x" * 100
    assert (snap / "w.safetensors").read_bytes() == blob(50_000)
    # A resolve URL that answers the LFS pointer instead of the bytes (broken mirror). A fresh
    # cache: the client would otherwise reuse the bytes it cached for this same commit.
    hf_hub.serve_as_pointer("owner/dl", "w.safetensors")
    kw["cache_dir"] = tmp_path / "cache2"
    got = Path(hf_hub_download("owner/dl", "w.safetensors", **kw)).read_bytes()
    assert got == lfs_pointer(blob(50_000))
    assert hf_hub.unhandled == []


def test_hub_upload_folder_and_commits(hf_hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    api = hf_hub.api()
    url = api.create_repo("owner/up")
    assert url.repo_id == "owner/up"
    api.create_repo("owner/up", exist_ok=True)
    src = tmp_path / "ckpt"
    (src / "blobs").mkdir(parents=True)
    (src / "manifest.json").write_bytes(b'{"step": 1}')
    (src / "blobs" / "t.safetensors").write_bytes(blob(1 * MiB, seed=5))
    info = api.upload_folder(repo_id="owner/up", folder_path=src, path_in_repo="ckpt/1",
                             commit_message="save step 1")
    assert info.oid == hf_hub.head("owner/up")
    assert hf_hub.files("owner/up") == {"ckpt/1/manifest.json": b'{"step": 1}',
                                        "ckpt/1/blobs/t.safetensors": blob(1 * MiB, seed=5)}
    assert hf_hub.commits("owner/up")[0].title == "save step 1"
    # unchanged upload: no new commit
    again = api.upload_folder(repo_id="owner/up", folder_path=src, path_in_repo="ckpt/1")
    assert again.oid == info.oid
    # create_commit: add + delete, guarded by parent_commit
    api.create_commit("owner/up", operations=[
        CommitOperationAdd("ckpt/2/manifest.json", b'{"step": 2}'),
        CommitOperationDelete("ckpt/1/", is_folder=True)],
        commit_message="rotate", parent_commit=info.oid)
    assert set(hf_hub.files("owner/up")) == {"ckpt/2/manifest.json"}
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("owner/up", operations=[CommitOperationAdd("z", b"z")],
                          commit_message="stale", parent_commit=info.oid)
    assert err.value.response.status_code == 412
    # writes through HfFileSystem, and branches
    fs = hf_hub.fs()
    fs.pipe_file("owner/up/notes.txt", b"hi")
    api.create_branch("owner/up", branch="exp")
    api.upload_file(path_or_fileobj=b"e", path_in_repo="e.txt", repo_id="owner/up",
                    revision="exp")
    assert "e.txt" in hf_hub.files("owner/up", "exp") and "e.txt" not in hf_hub.files("owner/up")
    assert [b.name for b in api.list_repo_refs("owner/up").branches] == ["exp", "main"]
    with pytest.raises(HfHubHTTPError):
        hf_hub.api().__class__(endpoint=hf_hub.endpoint, token="hf_wrong").upload_file(
            path_or_fileobj=b"x", path_in_repo="x", repo_id="owner/up")
    assert hf_hub.unhandled == []


def test_hub_patch_points_default_clients(hf_hub: HubServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    hf_hub.add_file("owner/env", "f.txt", b"from env")
    hf_hub.patch(monkeypatch, tmp_path)
    assert HfApi().model_info("owner/env").sha == hf_hub.head("owner/env")
    assert Path(hf_hub_download("owner/env", "f.txt")).read_bytes() == b"from env"
    assert str(tmp_path) in hf_hub_download("owner/env", "f.txt")
    with fsspec.open("hf://owner/env/f.txt", "rb") as f:
        assert f.read() == b"from env"
    HfApi().upload_file(path_or_fileobj=b"up", path_in_repo="g.txt", repo_id="owner/env")
    assert hf_hub.files("owner/env")["g.txt"] == b"up"


def test_hub_from_a_subprocess(hf_hub: HubServer, tmp_path: Path) -> None:
    hf_hub.add_file("owner/sub", "f.txt", b"child")
    code = textwrap.dedent("""
        from huggingface_hub import HfFileSystem, HfApi
        print(HfFileSystem().cat("owner/sub/f.txt").decode())
        HfApi().upload_file(path_or_fileobj=b"c", path_in_repo="c.txt", repo_id="owner/sub")
    """)
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **hf_hub.env(tmp_path)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child"
    assert hf_hub.files("owner/sub")["c.txt"] == b"c"
