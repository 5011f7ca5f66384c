"""The error tree: each error is a :class:`CkptError` and the builtin a caller would catch;
the docstring's drawing names every class; errors raised by real calls carry their facts
(``ref``, ``url``, ``path``, ``hint``) while ``str()`` stays the one-line message; the REST
API answers the new classes as it answered their messages before; importing the module
loads nothing else."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ckpt_notebook import errors
from ckpt_notebook.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    CkptError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NeedsForceError,
    ProtectedCheckpointError,
    SourceError,
    SourceNotFoundError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    UnsupportedSourceError,
)
from ckpt_notebook.manager import copying, maintenance, resolve_ref
from ckpt_notebook.manager.hub import parse_hf_url
from ckpt_notebook.retention import Policy, parse_duration
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.backend import RetryPolicy
from ckpt_notebook.storage.presence import require_store

BUILTINS: dict[type[CkptError], tuple[type[BaseException], ...]] = {
    errors.StoreError: (OSError,),
    errors.StoreBusyError: (OSError,),
    errors.StoreNotFoundError: (FileNotFoundError,),
    errors.StorePermissionError: (PermissionError,),
    errors.SourceError: (OSError,),
    errors.SourceNotFoundError: (FileNotFoundError, LookupError),
    errors.UnsupportedSourceError: (OSError,),
    errors.HubError: (OSError,),
    errors.HubNotFoundError: (FileNotFoundError,),
    errors.HubAuthError: (PermissionError,),
    errors.CheckpointNotFoundError: (LookupError,),
    errors.CheckpointExistsError: (FileExistsError,),
    errors.ProtectedCheckpointError: (PermissionError,),
    errors.InvalidArgumentError: (ValueError,),
    errors.InvalidNameError: (ValueError,),
    errors.IntegrityError: (ValueError,),
    errors.FormatError: (ValueError,),
    errors.CaptureError: (TypeError,),
    errors.PickleRequiredError: (TypeError,),
    errors.RestoreError: (ValueError,),
    errors.UnsafeFileError: (ValueError,),
    errors.UnsafePathError: (ValueError,),
    errors.BackgroundSaveError: (RuntimeError,),
}


# -- the tree ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(BUILTINS), ids=lambda c: c.__name__)
def test_each_error_is_its_builtin(cls: type[CkptError]) -> None:
    err = cls("what went wrong")
    assert isinstance(err, CkptError)
    for builtin in BUILTINS[cls]:
        assert isinstance(err, builtin)
    assert str(err) == "what went wrong"


def test_every_exported_class_is_in_the_table_and_the_drawing() -> None:
    classes = {getattr(errors, n) for n in errors.__all__} - {CkptError}
    assert classes == set(BUILTINS)
    drawn = set(re.findall(r"[├└]── (\w+)", errors.__doc__ or ""))
    assert drawn == {c.__name__ for c in BUILTINS}


def test_the_old_name_is_the_new_class() -> None:
    assert NeedsForceError is ProtectedCheckpointError
    from ckpt_notebook.errors import NeedsForceError as imported

    assert imported is ProtectedCheckpointError


def test_source_not_found_is_also_checkpoint_not_found() -> None:
    # a bare name that is neither a file nor a REF: callers catching either keep working
    assert issubclass(SourceNotFoundError, CheckpointNotFoundError)
    assert issubclass(SourceNotFoundError, SourceError)
    assert issubclass(InvalidNameError, InvalidArgumentError)


def test_facts_are_keyword_only_and_default_to_none() -> None:
    plain = StoreError("no luck")
    assert (plain.ref, plain.url, plain.path, plain.hint) == (None, None, None, None)
    err = CheckpointNotFoundError("REF 'x' names no checkpoint in s3://b/c", ref="x",
                                  url="s3://b/c", hint="newest: a, b")
    assert err.message == "REF 'x' names no checkpoint in s3://b/c"
    assert str(err) == "REF 'x' names no checkpoint in s3://b/c; newest: a, b"
    assert err.args == ("REF 'x' names no checkpoint in s3://b/c",)
    assert str(CkptError()) == "CkptError"
    copied = pickle.loads(pickle.dumps(err))
    assert (type(copied), str(copied), copied.ref, copied.url) == (
        CheckpointNotFoundError, str(err), "x", "s3://b/c")


# -- facts carried by real errors ---------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Store:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"weights")
    store = Store(tmp_path / "store")
    copying.copy(folder, "resnet-v1", store=store)
    return store


def test_a_ref_not_found_carries_ref_url_and_hint(store: Store) -> None:
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve_ref(store, "resnet-v2")
    err = caught.value
    assert (err.ref, err.url) == ("resnet-v2", store.url)
    assert err.hint == "nearest: resnet-v1"
    assert str(err) == f"REF 'resnet-v2' names no checkpoint in {store.url}; nearest: resnet-v1"


def test_a_store_not_found_carries_url_and_hint(tmp_path: Path) -> None:
    missing = Store(tmp_path / "nothing-here")
    with pytest.raises(StoreNotFoundError) as caught:
        require_store(missing, fix="check --store")
    assert caught.value.url == missing.url and caught.value.hint == "check --store"
    assert isinstance(caught.value, FileNotFoundError)
    assert str(caught.value).endswith("nothing is there; check --store")


def test_a_bad_archive_carries_path_and_hint(store: Store, tmp_path: Path) -> None:
    notzip = tmp_path / "not.zip"
    notzip.write_bytes(b"this is not a zip file")
    with pytest.raises(SourceError) as caught:
        copying.copy(notzip, "notzip", store=store)
    err = caught.value
    assert isinstance(err, OSError) and err.path == str(notzip)
    assert err.hint is not None and str(err).endswith(f"; {err.hint}")
    assert "cannot read the archive" in err.message
    assert isinstance(err.__cause__, zipfile.BadZipFile)


def test_an_encrypted_member_is_unsupported(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "secret.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", b"x")
    raw = bytearray(path.read_bytes())  # mark the member encrypted in the central directory
    raw[raw.rindex(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedSourceError) as caught:
        copying.copy(path, "secret", store=store)
    assert caught.value.path == str(path) and caught.value.hint == "decrypt the archive first"


def test_a_missing_source_carries_path(store: Store, tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such" / "folder")
    with pytest.raises(SourceNotFoundError) as caught:
        copying.copy(missing, "nothing", store=store)
    assert caught.value.path == missing
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value.__cause__, CheckpointNotFoundError)


def test_an_empty_folder_is_a_source_error(store: Store, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="is an empty folder") as caught:
        copying.copy(tmp_path / "empty", "empty", store=store)
    assert caught.value.path == str(tmp_path / "empty")


def test_a_protected_checkpoint_carries_ref_and_the_fix(store: Store) -> None:
    with pytest.raises(NeedsForceError) as caught:  # the old name still catches it
        maintenance.delete(store, "resnet-v1")
    err = caught.value
    assert isinstance(err, ProtectedCheckpointError) and isinstance(err, PermissionError)
    assert (err.ref, err.url) == ("resnet-v1", store.url)
    assert err.hint == "delete it with force=True if you really mean to"
    assert str(err) == ("resnet-v1 is a named (immutable) checkpoint; delete it with "
                        "force=True if you really mean to")
    assert store.exists("resnet-v1")


def test_a_taken_name_carries_ref_and_hint(store: Store, tmp_path: Path) -> None:
    with pytest.raises(CheckpointExistsError) as caught:
        copying.copy(tmp_path / "models", "resnet-v1", store=store)
    assert (caught.value.ref, caught.value.url) == ("resnet-v1", store.url)
    assert caught.value.hint == "names are write-once: pick another (e.g. add -v2)"


@pytest.mark.parametrize("call", [
    lambda: parse_duration("3 fortnights"),
    lambda: Policy(keep_last=0),
    lambda: Policy(keep_best=2),
    lambda: Policy.from_json({"keep_lats": 3}),
    lambda: RetryPolicy(attempts=0),
    lambda: copying.copy(".", "x", archive_limits={"size": "-1"}),
], ids=["duration", "count", "keep_best-without-monitor", "policy-key", "retry", "limit"])
def test_bad_arguments_are_invalid_argument_errors(call: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        call()  # type: ignore[operator]
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_a_bad_hub_url_carries_url() -> None:
    with pytest.raises(InvalidArgumentError, match="hf://owner/repo") as caught:
        parse_hf_url("hf://justone")
    assert caught.value.url == "hf://justone"


def test_a_bad_duration_unit_has_the_forms_as_hint() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_duration("10 parsecs")
    assert caught.value.message == "bad duration '10 parsecs': unknown unit 'parsecs'"
    assert caught.value.hint is not None and caught.value.hint.startswith("use a number")


# -- the REST API's answers ---------------------------------------------------------------------
@pytest.mark.parametrize(("err", "status", "code"), [
    (SourceNotFoundError("nothing to copy at 'x'"), 404, "not_found"),
    (SourceError("nothing to copy: 'x' is an empty folder"), 400, "bad_request"),
    (UnsupportedSourceError("member 'a' is encrypted"), 400, "bad_request"),
    (HubError("upload to hf://o/r failed: boom"), 400, "bad_request"),
    (HubNotFoundError("upload to hf://o/r failed: no repo"), 400, "bad_request"),
    (HubAuthError("upload to hf://o/r failed: 401"), 400, "bad_request"),
    (ProtectedCheckpointError("x is pinned", hint="unpin it first"), 409, "needs_force"),
    (StorePermissionError("cannot write to store 'x': permission denied"), 502, "store_error"),
    (InvalidArgumentError("bad duration 'x'"), 400, "bad_request"),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_rest_codes_of_the_new_classes(err: CkptError, status: int, code: str) -> None:
    from ckpt_notebook.server.codes import failure

    answer = failure(err)
    assert (answer.status, answer.code, answer.message) == (status, code, str(err))


# -- light ------------------------------------------------------------------------------------
def test_import_errors_is_light() -> None:
    code = ("import sys; before = set(sys.modules); import ckpt_notebook.errors; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    ours = {m for m in out if m.split(".")[0] == "ckpt_notebook"}
    assert ours == {"ckpt_notebook", "ckpt_notebook._version", "ckpt_notebook.errors"}
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in set(out) - ours), out


# -- the command line's words -------------------------------------------------------------------
def test_a_named_keyword_is_said_as_the_commands_option() -> None:
    from ckpt_notebook.ui.commands import CLI, MAGIC, command, option_words

    refusal = ProtectedCheckpointError("x is pinned", hint="delete it with force=True",
                                       keyword="force=True")
    assert option_words(refusal, command("delete"), CLI) == "x is pinned; delete it with --force"
    assert option_words(refusal, command("delete"), MAGIC).endswith("with --force")
    # a command with no option for the keyword keeps the Python words; so does an error
    # that names no keyword, whatever its text holds
    assert option_words(refusal, command("pin"), CLI) == str(refusal)
    plain = CkptError("a folder named force=True")
    assert option_words(plain, command("delete"), CLI) == str(plain)


def test_the_cli_says_force_for_a_protected_checkpoint(store: Store,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ckpt_notebook.cli import main

    assert main(["delete", "resnet-v1", "--store", store.url]) == 1
    err = capsys.readouterr().err
    assert err == ("ckpt: error: resnet-v1 is a named (immutable) checkpoint; delete it with "
                   "--force if you really mean to\n")


def test_a_reserved_object_name_is_an_invalid_argument(tmp_path: Path) -> None:
    from ckpt_notebook import Checkpointer
    from ckpt_notebook.capture import RNG_NAME

    with pytest.raises(InvalidArgumentError) as caught:
        Checkpointer(tmp_path / "s").track(**{RNG_NAME: object()})
    assert caught.value.hint == "use another name" and isinstance(caught.value, ValueError)
