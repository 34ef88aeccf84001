"""Flags generated from a settings model, and settings files: a field becomes a flag with its help, and a value
comes from the flag given, else the `--config` file, else the model's default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from langadapt.errors import LangadaptError
from langadapt.training.flags import CONFIG_HELP, flag_declaration, flag_name, settings_flags
from langadapt.training.settings_file import read_settings_file, settings_data


class Toy(BaseModel):
    """A settings model with one field of each kind the generator handles."""

    FLAGS: ClassVar[tuple[str, ...]] = ("learning_rate", "max_length", "text", "mode", "publish", "fp16_weights")

    learning_rate: float = Field(default=1e-4, description="Peak learning rate.")
    max_length: int = Field(default=128, description="Tokens per input.")
    text: list[Path] = Field(default_factory=list, description="Text files.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="How to go.")
    publish: bool = Field(default=True, description="Publish when done.")
    fp16_weights: bool = Field(default=False, description="Store float16 weights.")
    hidden: int = Field(default=3, description="Set only in a config file.")


def toy_app(seen: list[Toy]) -> typer.Typer:
    """A one-command app whose settings come from Toy's flags, the config file and Toy's defaults."""
    app = typer.Typer(add_completion=False)

    @app.command()
    @settings_flags(Toy)
    def run(
        flags: dict[str, Any],
        config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    ) -> None:
        """Record the settings the command ends up with."""
        seen.append(Toy.model_validate(settings_data(config, flags)))

    return app


def test_a_field_becomes_a_flag_with_its_description_as_help() -> None:
    assert flag_name("max_length") == "--max-length"
    assert flag_name("learning_rate") == "--lr" and flag_name("out_dir") == "--out"
    assert flag_declaration(Toy, "publish") == "--publish/--no-publish"
    assert flag_declaration(Toy, "fp16_weights") == "--fp16-weights/--fp32-weights"
    command = typer.main.get_command(toy_app([]))
    options = {param.name: param for param in command.params}
    assert list(options) == [*Toy.FLAGS, "config"]  # the model's order; fields not in FLAGS are not flags
    assert options["max_length"].opts == ["--max-length"] and options["max_length"].help == "Tokens per input."
    assert options["learning_rate"].opts == ["--lr"]
    assert options["publish"].secondary_opts == ["--no-publish"]
    assert all(options[name].default is None for name in Toy.FLAGS)  # unset: left to the config file or default
    result = CliRunner().invoke(toy_app([]), ["--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert "Tokens per input." in result.output and "--fp32-weights" in result.output


def test_a_value_comes_from_the_flag_else_the_config_file_else_the_default(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("max-length: 64\nlearning_rate: 0.5\nhidden: 9\nmode: slow\n", encoding="utf-8")
    seen: list[Toy] = []
    args = ["--config", str(config), "--lr", "0.25", "--text", "a.txt", "--text", "b.txt", "--no-publish"]
    result = CliRunner().invoke(toy_app(seen), args)
    assert result.exit_code == 0, result.output
    (toy,) = seen
    assert toy.learning_rate == 0.25  # the flag wins over the file
    assert (toy.max_length, toy.hidden, toy.mode) == (64, 9, "slow")  # the file wins over the defaults
    assert toy.fp16_weights is False  # neither: the default
    assert toy.text == [Path("a.txt"), Path("b.txt")] and toy.publish is False
    assert CliRunner().invoke(toy_app(seen), []).exit_code == 0
    assert seen[-1] == Toy()  # nothing given: every default


def test_every_task_setting_is_a_flag_and_every_language_flag_a_setting() -> None:
    from langadapt.training.language_adapter import LanguageAdapterSettings
    from langadapt.training.task_adapter import TaskTrainSettings

    assert sorted(TaskTrainSettings.FLAGS) == sorted(TaskTrainSettings.model_fields)
    assert set(LanguageAdapterSettings.FLAGS) < set(LanguageAdapterSettings.model_fields)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("s.json", json.dumps({"max-length": 64, "mode": "slow"})),
        ("s.yaml", "max_length: 64\nmode: slow\n"),
        ("s.toml", 'max-length = 64\nmode = "slow"\n'),
    ],
)
def test_a_settings_file_is_json_yaml_or_toml_with_dashes_or_underscores(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert read_settings_file(path) == {"max_length": 64, "mode": "slow"}


def test_a_bad_settings_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LangadaptError, match="cannot read config file"):
        read_settings_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(LangadaptError, match=r"broken\.json is not valid"):
        read_settings_file(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(LangadaptError, match="holds a list"):
        read_settings_file(listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert settings_data(empty, {"seed": 1, "base": None}) == {"seed": 1}
