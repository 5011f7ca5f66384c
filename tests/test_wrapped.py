"""Wrapped models and renamed keys (issue 15, sections 1 and 3): a checkpoint saved from
``DataParallel`` / DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) restores into the
plain model and the reverse, nested too, through every restore path (own checkpoints, the
in-place read of large tensors, plain weight files); ``key_map`` renames saved keys; a load
that matched nothing is refused, strict or not; the report says what was mapped."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ipython_shell

import ckpt_notebook as ckn
from ckpt_notebook.capture.keys import key_mapping, wrapper_prefix
from ckpt_notebook.manager import restoring
from ckpt_notebook.types import OWN_BLOB_MIN


def net(seed: int = 0, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, 2))


def plain_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of the innermost model, by its own keys."""
    while isinstance(model, torch.nn.DataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, torch.nn.DataParallel) else model._orig_mod
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def compiled(m: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(m)  # type: ignore[return-value]  # compiles lazily: no compiler run


WRAPS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
    "plain": lambda m: m,
    "dp": torch.nn.DataParallel,
    "compiled": compiled,
    "dp-compiled": lambda m: torch.nn.DataParallel(compiled(m)),
    "compiled-dp": lambda m: compiled(torch.nn.DataParallel(m)),
}
PREFIX = {"plain": "(none)", "dp": "module.", "compiled": "_orig_mod.",
          "dp-compiled": "module._orig_mod.", "compiled-dp": "_orig_mod.module."}


def test_the_wrappers_prefix_their_keys_as_expected() -> None:
    for wrap, prefix in PREFIX.items():
        keys = WRAPS[wrap](net()).state_dict().keys()
        assert wrapper_prefix(keys) == ("" if wrap == "plain" else prefix), wrap


@pytest.mark.parametrize(("saved_as", "restored_as"), [
    ("dp", "plain"), ("plain", "dp"), ("compiled", "plain"), ("plain", "compiled"),
    ("dp-compiled", "plain"), ("plain", "compiled-dp"), ("dp", "compiled"),
    ("compiled-dp", "dp-compiled"),
])
def test_a_wrapped_checkpoint_restores_into_another_wrapping(
        store_dir: Path, saved_as: str, restored_as: str) -> None:
    source = WRAPS[saved_as](net(seed=1))
    ckn.Checkpointer(store_dir, model=source, rng=False, async_save=False).save(step=1)
    target = WRAPS[restored_as](net(seed=2))
    report = ckn.Checkpointer(store_dir, model=target, rng=False).restore()
    assert same(plain_of(target), plain_of(source))
    assert report.mapped == {"model": f"{PREFIX[saved_as]} -> {PREFIX[restored_as]}"}
    assert str(report).splitlines()[-1] == (
        f"  keys of model mapped: {PREFIX[saved_as]} -> {PREFIX[restored_as]}")
    assert "keys of model mapped" in report._repr_html_()


def test_matching_keys_are_not_mapped_and_the_report_is_unchanged(store_dir: Path) -> None:
    ckn.Checkpointer(store_dir, model=net(1), rng=False, async_save=False).save(step=1)
    report = ckn.Checkpointer(store_dir, model=net(2), rng=False).restore()
    assert report.mapped == {}
    assert "mapped" not in str(report) and "mapped" not in report._repr_html_()


def test_a_model_whose_only_child_is_named_module_keeps_its_keys() -> None:
    keys = ["module.0.weight", "module.0.bias"]
    assert key_mapping("m", keys, keys) == (None, set())
    # saved from DataParallel(that model): one `module.` more, stripped
    keymap, _ = key_mapping("m", ["module." + k for k in keys], keys)
    assert keymap is not None and keymap.keys["module.module.0.bias"] == "module.0.bias"


def test_a_mapping_that_makes_nothing_agree_better_is_not_used() -> None:
    # the target's keys match the saved ones as they are better than after stripping
    saved = ["module.a", "module.b"]
    assert key_mapping("m", saved, ["module.a", "module.b", "a"])[0] is None


def test_wrapped_and_non_strict_loads_what_matches(store_dir: Path) -> None:
    source = torch.nn.DataParallel(net(seed=1))
    ckn.Checkpointer(store_dir, model=source, rng=False, async_save=False).save(step=1)
    bigger = torch.nn.Sequential(*net(seed=2), torch.nn.Linear(2, 2))
    with pytest.raises(ckn.RestoreError, match=r"missing keys 3\.weight, 3\.bias"):
        ckn.Checkpointer(store_dir, model=bigger, rng=False).restore()
    report = ckn.Checkpointer(store_dir, model=bigger, rng=False).restore(strict=False)
    assert report.objects[0].missing_keys == ["3.weight", "3.bias"]
    assert torch.equal(bigger[0].weight, source.module[0].weight)


# -- large tensors: read in place, addressed by the mapped keys ---------------------------------
def big(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.Linear(1024, 2))
    assert model[0].weight.nbytes >= OWN_BLOB_MIN  # alone in its blob: read in place
    return model


@pytest.mark.parametrize(("saved_as", "restored_as"), [("dp", "plain"), ("plain", "compiled"),
                                                       ("dp-compiled", "plain")])
def test_large_tensors_of_a_wrapped_model_are_read_in_place(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch, saved_as: str,
        restored_as: str) -> None:
    read_in_place: list[str] = []
    real = restoring.read_tensor_into

    def spy(*args: object, where: str, **kw: object) -> None:
        read_in_place.append(where)
        real(*args, where=where, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(restoring, "read_tensor_into", spy)
    source = WRAPS[saved_as](big(1))
    ckn.Checkpointer(store_dir, model=source, rng=False, async_save=False).save(step=1)
    target = WRAPS[restored_as](big(2))
    ckn.Checkpointer(store_dir, model=target, rng=False).restore()
    assert same(plain_of(target), plain_of(source))
    assert len(read_in_place) == 1 and "0.weight" in read_in_place[0]


# -- plain weight files -------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_weights_file_with_module_keys_restores_into_the_plain_model(
        tmp_path: Path, store_dir: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    source = torch.nn.DataParallel(net(seed=3))
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    assert all(k.startswith("module.") for k in state)
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    target = net(seed=4)
    report = ckn.Checkpointer(store_dir, model=target, rng=False).restore(str(path))
    assert same(plain_of(target), plain_of(source))
    assert report.mapped == {"model": "module. -> (none)"}


def test_a_plain_weights_file_restores_into_a_compiled_model(tmp_path: Path,
                                                            store_dir: Path) -> None:
    source = net(seed=3)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    target = compiled(net(seed=4))
    ckn.Checkpointer(store_dir, model=target, rng=False).restore(str(path))
    assert same(plain_of(target), plain_of(source))


# -- key_map ------------------------------------------------------------------------------------
class Classifier(torch.nn.Module):
    def __init__(self, head: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = torch.nn.Linear(3, 4)
        setattr(self, head, torch.nn.Linear(4, 2))


def test_key_map_renames_a_head(store_dir: Path) -> None:
    source = Classifier("head", seed=1)
    ckn.Checkpointer(store_dir, model=source, rng=False, async_save=False).save(step=1)
    target = Classifier("classifier", seed=2)
    with pytest.raises(ckn.RestoreError, match=r"missing keys classifier\.weight"):
        ckn.Checkpointer(store_dir, model=target, rng=False).restore()
    report = ckn.Checkpointer(store_dir, model=target, rng=False).restore(
        key_map={"head.": "classifier."})
    assert same(plain_of(target), {k.replace("head.", "classifier."): v
                                   for k, v in plain_of(source).items()})
    assert report.mapped == {"model": "head. -> classifier."}
    assert "  keys of model mapped: head. -> classifier." in str(report)


def test_key_map_full_keys_and_wrappers_together(store_dir: Path, tmp_path: Path) -> None:
    source = torch.nn.DataParallel(Classifier("head", seed=1))
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(dict(source.state_dict()), str(path))
    target = Classifier("fc", seed=2)
    report = ckn.Checkpointer(store_dir, model=target, rng=False).restore(
        str(path), key_map={"module.head.weight": "module.fc.weight",
                            "module.head.bias": "module.fc.bias"})
    assert torch.equal(target.fc.weight, source.module.head.weight)
    assert report.mapped["model"] == ("module.head.bias -> module.fc.bias, module.head.weight "
                                      "-> module.fc.weight, module. -> (none)")


def test_a_key_map_entry_that_matched_nothing_is_refused(store_dir: Path) -> None:
    ckn.Checkpointer(store_dir, model=Classifier("head", 1), rng=False,
                     async_save=False).save(step=1)
    target = Classifier("classifier", seed=2)
    before = target.backbone.weight.detach().clone()
    with pytest.raises(ckn.RestoreError, match=r"key_map entry 'head' matched no saved key"):
        ckn.Checkpointer(store_dir, model=target, rng=False).restore(
            key_map={"head.": "classifier.", "head": "classifier"})
    assert torch.equal(target.backbone.weight, before)


@pytest.mark.parametrize("bad", [
    ["head.", "classifier."], {"head.": "classifier"}, {"head.weight": ""}, {"head.": 3},
    "head.=classifier.",
])
def test_bad_key_map_is_a_one_line_invalid_argument(store_dir: Path, bad: object) -> None:
    ckn.Checkpointer(store_dir, model=net(1), rng=False, async_save=False).save(step=1)
    with pytest.raises(ckn.InvalidArgumentError) as caught:
        ckn.Checkpointer(store_dir, model=net(2), rng=False).restore(key_map=bad)  # type: ignore
    message = str(caught.value)
    assert "\n" not in message and '{"backbone.": "encoder."}' in message


def test_key_map_renaming_two_keys_onto_one_is_refused(store_dir: Path) -> None:
    ckn.Checkpointer(store_dir, model=Classifier("head", 1), rng=False,
                     async_save=False).save(step=1)
    with pytest.raises(ckn.RestoreError, match=r"would both become 'backbone\.weight'"):
        ckn.Checkpointer(store_dir, model=Classifier("head", 2), rng=False).restore(
            key_map={"head.": "backbone."})


# -- a load that matched nothing is refused, strict or not, on every path -----------------------
@pytest.mark.parametrize("strict", [True, False])
def test_a_checkpoint_that_matched_no_key_is_refused(store_dir: Path, strict: bool) -> None:
    ckn.Checkpointer(store_dir, model=Classifier("head", 1), rng=False,
                     async_save=False).save(step=1)
    other = net(seed=2)  # keys 0.weight, ...: none of the saved ones
    before = plain_of(other)
    with pytest.raises(ckn.RestoreError, match=r"matched no key of 'model'.*nothing was loaded"
                       r".*key_map"):
        ckn.Checkpointer(store_dir, model=other, rng=False).restore(strict=strict)
    assert same(plain_of(other), before)


@pytest.mark.parametrize("strict", [True, False])
def test_large_tensors_that_matched_no_key_are_refused(store_dir: Path, strict: bool) -> None:
    ckn.Checkpointer(store_dir, model=big(1), rng=False, async_save=False).save(step=1)
    other = torch.nn.ModuleDict({"enc": big(2)})  # keys enc.0.weight, ...: none match
    before = plain_of(other)
    with pytest.raises(ckn.RestoreError, match="matched no key of 'model'"):
        ckn.Checkpointer(store_dir, model=other, rng=False).restore(strict=strict)
    assert same(plain_of(other), before)


@pytest.mark.parametrize("strict", [True, False])
def test_a_weights_file_that_matched_no_key_is_refused(tmp_path: Path, store_dir: Path,
                                                       strict: bool) -> None:
    path = tmp_path / "w.pt"
    torch.save({"encoder.weight": torch.zeros(2, 3)}, path)
    with pytest.raises(ckn.RestoreError, match="matched no key of 'model'"):
        ckn.Checkpointer(store_dir, model=torch.nn.Linear(3, 2), rng=False).restore(
            str(path), strict=strict)


def test_non_strict_loads_what_matches_by_name_and_shape_from_a_weights_file(
        tmp_path: Path, store_dir: Path) -> None:
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(2, 3), "bias": torch.ones(5), "extra": torch.ones(1)},
              str(path))
    target = torch.nn.Linear(3, 2)
    report = ckn.Checkpointer(store_dir, model=target, rng=False).restore(str(path),
                                                                         strict=False)
    assert torch.equal(target.weight, torch.ones(2, 3)) and not torch.equal(
        target.bias, torch.ones(2))
    assert report.objects[0].unexpected_keys == ["extra", "bias (shape (5,), model (2,))"]


# -- the magic ----------------------------------------------------------------------------------
def test_percent_restore_key_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError

    from ckpt_notebook.ui import session as session_mod

    ip = ipython_shell()
    ip.run_line_magic("load_ext", "ckpt_notebook")
    try:
        ip.run_line_magic("checkpoint", f"store {shlex.quote(str(tmp_path / 'store'))}")
        source = Classifier("head", seed=1)
        ip.push({"model": source})
        ip.run_line_magic("checkpoint", "save")
        target = Classifier("classifier", seed=2)
        ip.push({"model": target})
        with pytest.raises(UsageError, match="expected OLD=NEW"):
            ip.run_line_magic("checkpoint", "restore --key-map head.=classifier")
        capsys.readouterr()
        ip.run_line_magic("checkpoint", "restore --key-map head.=classifier.")
        assert torch.equal(target.classifier.weight, source.head.weight)
        assert "keys of model mapped: head. -> classifier." in capsys.readouterr().out
        ip.push({"model": net()})
        with pytest.raises(UsageError, match=r"matched no key.*--key-map"):
            ip.run_line_magic("checkpoint", "restore")
    finally:
        old = session_mod._SESSIONS.pop(id(ip), None)
        if old is not None:
            old.close()
