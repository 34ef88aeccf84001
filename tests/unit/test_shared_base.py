"""The base loaded once before the workers are forked, and taken by each worker's torch backend."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from langadapt.inference import shared as shared_module
from langadapt.inference.backends import TorchBackend
from langadapt.inference.shared import ENCODER, TOKENIZER, share_base, take_shared
from langadapt.models.base import resolve_base_model
from langadapt.serve.shared_base import SHARED_BASE_ENV, load_shared_base


@pytest.fixture(autouse=True)
def _no_shared_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_module, "_SHARED", {})
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the test process keeps its threads


def test_a_cpu_backend_takes_the_shared_base_once(tiny_xlmr_dir: Path) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    share_base(info)
    shared = shared_module._SHARED[(ENCODER, str(info.path))]
    assert take_shared(TOKENIZER, info) is not None and take_shared(TOKENIZER, info) is None
    first = TorchBackend(info, torch.device("cpu"))
    second = TorchBackend(info, torch.device("cpu"))
    assert first.model is shared  # the forked worker's copy-on-write pages, not a second load
    assert second.model is not shared  # taken once: another backend in one process loads its own
    ids = torch.tensor([[0, 5, 6, 2]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        assert torch.equal(first.model(ids, mask).last_hidden_state, second.model(ids, mask).last_hidden_state)


def test_the_fork_server_loads_the_base_named_in_the_environment(
    tiny_xlmr_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SHARED_BASE_ENV, raising=False)
    assert load_shared_base() is False and not shared_module._SHARED
    monkeypatch.setenv(SHARED_BASE_ENV, str(tiny_xlmr_dir))
    assert load_shared_base() is True
    path = str(resolve_base_model(str(tiny_xlmr_dir)).path)
    assert set(shared_module._SHARED) == {(ENCODER, path), (TOKENIZER, path)}


def test_a_base_that_cannot_load_is_left_to_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(SHARED_BASE_ENV, str(tmp_path / "no-such-model"))
    with caplog.at_level(logging.WARNING):
        assert load_shared_base() is False  # the fork server lives on; each worker reports the error itself
    assert not shared_module._SHARED and "could not load the base" in caplog.text


def test_the_server_names_the_base_to_share_only_for_torch_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from langadapt.serve.settings import ServerSettings
    from langadapt.serve.supervisor import share_base_with_workers

    for settings, shared in (
        (ServerSettings(device="cpu"), "embedded"),
        (ServerSettings(device="cuda"), None),  # a GPU worker moves its own copy to its device
        (ServerSettings(device="cpu", backend="onnx-swappable"), None),  # no torch base in the worker
    ):
        monkeypatch.delenv(SHARED_BASE_ENV, raising=False)
        share_base_with_workers(SimpleNamespace(settings=settings))
        assert os.environ.get(SHARED_BASE_ENV) == shared, settings
