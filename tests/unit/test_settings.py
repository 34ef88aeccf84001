"""The settings models: one set of defaults for the engine, `serve` and `label`; values as flags and files give them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import typer

from langadapt.console import settings_from
from langadapt.errors import LangadaptError, SettingsError
from langadapt.inference.settings import InferenceSettings
from langadapt.label.cli_label import register as register_label
from langadapt.label.job import LabelSettings
from langadapt.models.store_view import PACKAGED
from langadapt.serve.cli_serve import register as register_serve
from langadapt.serve.settings import ServerSettings, available_cores


def command(register: object, name: str) -> Any:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the main CLI."""

    register(app)  # type: ignore[operator]
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("register", "name", "model"), [(register_serve, "serve", ServerSettings), (register_label, "label", LabelSettings)]
)
def test_every_flag_takes_its_default_and_help_from_the_model(register: object, name: str, model: type) -> None:
    defaults = model.model_construct()  # the declared defaults (required fields left out)
    checked = 0
    for param in command(register, name).params:
        if param.name not in model.model_fields:
            assert param.name in ("as_json", "help"), param.name
            continue
        field = model.model_fields[param.name]
        assert param.help == field.description, param.name
        if field.is_required():
            assert param.required, param.name
            continue
        want = getattr(defaults, param.name)
        got = param.default
        if isinstance(want, tuple):
            want = ",".join(want)
        if param.name == "defaults":
            want = want == PACKAGED
        assert got == (want or None if isinstance(want, dict) else want), param.name
        checked += 1
    assert checked >= 18


def test_values_are_read_as_command_lines_and_config_files_give_them() -> None:
    settings = InferenceSettings(tasks=" ner, topic ", defaults="false", fallback="kin=swh; ibo=yor")
    assert settings.tasks == ("ner", "topic") and settings.defaults is None
    assert settings.fallback == {"kin_Latn": ("swh_Latn",), "ibo_Latn": ("yor_Latn",)}
    assert InferenceSettings(fallback=["kin=swh", "ibo=yor"]).fallback == settings.fallback
    assert InferenceSettings(defaults=True).defaults == InferenceSettings(defaults="yes").defaults == PACKAGED
    assert InferenceSettings(defaults="/srv/defaults").defaults_dir() == Path("/srv/defaults")
    assert InferenceSettings.model_validate(settings.model_dump()) == settings


@pytest.mark.parametrize(
    ("values", "message", "hint"),
    [
        ({"backend": "tensorrt"}, "unknown backend", "onnx-fused"),
        ({"device": "tpu"}, "unknown device", "cuda:N"),
        ({"tasks": "ner,pos"}, "bad task list", "ner, sentiment, topic"),
        ({"tasks": "ner,ner"}, "bad task list", "each once"),
        ({"tasks": ""}, "no task given", "ner"),
        ({"host": "10.0.0.1"}, "cannot listen", "127.0.0.1"),
        ({"fallback": ["ibo"]}, "not LANGUAGE=RELATED", "--fallback"),
        ({"max_batch_size": 0}, "max_batch_size", "--help"),
        ({"lid_threshold": 1.5}, "lid_threshold", "--help"),
    ],
)
def test_refused_values_say_how_to_fix_them(values: dict[str, object], message: str, hint: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings.model_validate(values)
    with pytest.raises(LangadaptError, match=message) as raised:
        settings_from(ServerSettings, {**values, "not_a_field": 1})  # a command's other parameters are ignored
    assert hint in raised.value.hint


def test_a_worker_gets_its_device_and_its_share_of_the_cores() -> None:
    settings = ServerSettings(workers=2, runtime_dir=Path("/tmp/x"))
    worker = settings.for_worker("cuda:1")
    assert worker.device == "cuda:1" and worker.threads == max(1, (os.cpu_count() or 1) // 2)
    assert settings.accelerator == "auto" and ServerSettings(device="cuda:0").accelerator == "cuda"
    pinned = ServerSettings(device="cpu", threads=3).for_worker("cuda:0")
    assert (pinned.device, pinned.threads) == ("cpu", 3)
    assert pickle.loads(pickle.dumps(worker)) == worker  # LitServe pickles it into the worker process
    assert settings.limits.queue == settings.max_queue
    assert ServerSettings(device="cuda").workers == 1  # one per GPU; on a CPU, one per core up to 4
    cores = available_cores()
    assert ServerSettings(device="cpu").workers == min(4, cores)
    assert ServerSettings(device="cpu").for_worker("cpu").threads == max(1, cores // min(4, cores))
    with pytest.raises(SettingsError, match="runtime directory"):
        ServerSettings().runtime()


def test_the_cores_a_container_may_use_cap_the_default_workers(tmp_path: Path) -> None:
    limit = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "absent") == affinity
    limit.write_text("max 100000\n")
    assert available_cores(limit) == affinity
    limit.write_text("100000 100000\n")  # a 1-CPU limit (Kubernetes cpu: "1")
    assert available_cores(limit) == 1
    limit.write_text("50000 100000\n")  # half a CPU still gets one worker
    assert available_cores(limit) == 1
