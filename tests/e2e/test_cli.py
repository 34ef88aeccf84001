"""The `langadapt` command end to end: JSON output, store management and friendly errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from langadapt.cli import app
from langadapt.models.base import resolve_base_model

runner = CliRunner()


def run_json(*args: str) -> object:
    """Run the CLI with --json and parse its output, failing with the output on a non-zero exit."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_model_info_on_a_local_directory(tiny_xlmr_dir: Path) -> None:
    info = run_json("model", "info", str(tiny_xlmr_dir))
    assert isinstance(info, dict)
    assert set(info) == {"id", "path", "fingerprint", "num_layers", "hidden_size", "vocab_size", "source"}
    assert (info["num_layers"], info["hidden_size"], info["source"]) == (2, 32, "local")
    assert info["fingerprint"] == resolve_base_model(str(tiny_xlmr_dir)).fingerprint


def test_model_info_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "info", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert "hint:" in result.output


def test_adapter_kinds_report_computed_counts(tiny_bert_dir: Path) -> None:
    data = run_json("adapters", "kinds", "--base", str(tiny_bert_dir))
    assert isinstance(data, dict)
    counts = {row["name"]: row["parameters"] for row in data["kinds"]}
    # tiny BERT: 2 layers, hidden 32, reduction 16 -> bottleneck 2: (32*2+2 + 2*32+32) per layer
    assert counts["seq_bn"] == 2 * (32 * 2 + 2 + 2 * 32 + 32)
    # LoRA r=8 on q and v: 2 matrices * (8*32 + 32*8) per layer
    assert counts["lora"] == 2 * 2 * (8 * 32 + 32 * 8)
    assert counts["seq_bn_inv"] > counts["seq_bn"]


def write_folder(folder: Path, language: str = "yor_Latn") -> Path:
    """A publishable folder: safetensors weights plus a manifest.json."""
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(2, 2)}, folder / "adapter.safetensors")
    manifest = {
        "id": f"{language}-topic",
        "language": language,
        "task": "topic",
        "kind": "seq_bn",
        "labels": ["a", "b"],
        "head_type": "classification",
        "base_model": "tiny",
        "base_fingerprint": "f" * 64,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_store_commands_round_trip(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    first = run_json("adapters", "publish", str(write_folder(tmp_path / "a")), "--store", store)
    second = run_json("adapters", "publish", str(write_folder(tmp_path / "b")), "--store", store)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["version"], second["version"]) == (1, 2)

    listed = run_json("adapters", "list", "--store", store, "--lang", "yo", "--no-defaults")
    assert [(row["id"], row["version"]) for row in listed] == [("yor_Latn-topic", 2)]  # type: ignore[union-attr]
    shown = run_json("adapters", "show", "yor_Latn-topic", "--version", "1", "--store", store)
    assert isinstance(shown, dict) and shown["version"] == 1 and "adapter.safetensors" in shown["files"]
    assert shown["source"] == "store"
    assert run_json("adapters", "verify", "--store", store, "--no-defaults") == {"ok": True, "problems": []}

    weights = tmp_path / "store" / "adapters" / "yor_Latn-topic" / "2" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    result = runner.invoke(app, ["adapters", "verify", "--store", store, "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert [(p["id"], p["version"], p["source"], p["file"]) for p in problems] == [
        ("yor_Latn-topic", 2, "store", "adapter.safetensors")
    ]

    removed = run_json("adapters", "remove", "yor_Latn-topic", "--store", store)
    assert removed == {"removed": "yor_Latn-topic", "version": None}
    assert run_json("adapters", "list", "--store", store, "--no-defaults") == []


def test_a_fresh_store_lists_shows_and_verifies_the_packaged_defaults(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    listed = run_json("adapters", "list", "--store", store)
    assert isinstance(listed, list) and len(listed) == 16  # 15 task adapters and the language-ID head
    assert {row["source"] for row in listed} == {"default"}
    assert {row["name"] for row in listed} >= {"default:yor_Latn-ner", "default:hau_Latn-topic", "default:any-lid"}
    shown = run_json("adapters", "show", "yor_Latn-ner", "--store", store)
    assert isinstance(shown, dict) and (shown["source"], shown["id"]) == ("default", "yor_Latn-ner")
    text = runner.invoke(app, ["adapters", "list", "--store", store, "--lang", "yo", "--task", "ner"])
    assert text.exit_code == 0 and text.output.split()[:2] == [f"default:yor_Latn-ner@v{shown['version']}", "yor_Latn"]
    assert run_json("adapters", "verify", "yor_Latn-ner", "--store", store) == {"ok": True, "problems": []}
    assert run_json("adapters", "verify", "--store", store) == {"ok": True, "problems": []}

    missing = runner.invoke(app, ["adapters", "show", "yor_Latn-ner", "--store", store, "--no-defaults"])
    assert missing.exit_code == 2 and "no adapter 'yor_Latn-ner'" in missing.output

    refused = runner.invoke(app, ["adapters", "remove", "yor_Latn-ner", "--store", store])
    assert refused.exit_code == 2
    assert "default:yor_Latn-ner is a packaged default adapter: read-only" in refused.output


def test_a_store_id_shadowing_a_default_is_shown_as_such(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    default = run_json("adapters", "show", "default:yor_Latn-topic", "--store", store)
    assert isinstance(default, dict)
    default_ref = f"default:yor_Latn-topic@v{default['version']}"  # retraining the default set raises its version
    published = runner.invoke(app, ["adapters", "publish", str(write_folder(tmp_path / "a")), "--store", store])
    assert published.exit_code == 0, published.output
    assert "warning: yor_Latn-topic in the store" in published.output
    assert f"shadows the packaged {default_ref}" in published.output

    rows = run_json("adapters", "list", "--store", store, "--lang", "yo", "--task", "topic")
    assert [(r["name"], r["source"], r["shadowed"], r["shadows"]) for r in rows] == [  # type: ignore[index,union-attr]
        ("yor_Latn-topic", "store", False, [default_ref]),
        ("default:yor_Latn-topic", "default", True, []),
    ]
    text = runner.invoke(app, ["adapters", "list", "--store", store, "--lang", "yo", "--task", "topic"]).output
    assert "yor_Latn-topic@v1" in text and f"shadows {default_ref}" in text
    assert "shadowed by the store's yor_Latn-topic: not served" in text
    mine = run_json("adapters", "show", "yor_Latn-topic", "--store", store)
    packaged = run_json("adapters", "show", "default:yor_Latn-topic", "--store", store)
    assert isinstance(mine, dict) and isinstance(packaged, dict)
    assert (mine["source"], mine["labels"]) == ("store", ["a", "b"])
    assert packaged["source"] == "default" and len(packaged["labels"]) == 7

    removed = runner.invoke(app, ["adapters", "remove", "yor_Latn-topic", "--store", store])
    assert removed.exit_code == 0 and f"the packaged {default_ref} serves again" in removed.output


def test_publishing_a_folder_without_manifest_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["adapters", "publish", str(tmp_path / "empty"), "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "manifest.json" in result.output


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        ('{"labels": "a", "metrics": [1]}', "has invalid fields: labels: Input should be a valid list (got 'a'); "),
        ('{"kind": 3}', "kind: Input should be a valid string (got 3)"),
        ("{ not json", "cannot be read as JSON"),
        ("[1, 2]", "holds list, not a JSON object"),
    ],
    ids=["wrong-types", "kind-number", "not-json", "not-an-object"],
)
def test_publishing_a_manifest_with_wrong_types_is_refused_and_the_store_keeps_its_version(
    tmp_path: Path, manifest: str, says: str
) -> None:
    store = str(tmp_path / "s")
    run_json("adapters", "publish", str(write_folder(tmp_path / "good")), "--store", store)
    bad = write_folder(tmp_path / "bad")
    good = json.loads((bad / "manifest.json").read_text())
    changes = json.loads(manifest) if manifest.startswith('{"') else None
    text = json.dumps({**good, **changes}) if changes is not None else manifest
    (bad / "manifest.json").write_text(text)
    result = runner.invoke(app, ["adapters", "publish", str(bad), "--store", store])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert "hint: " in result.output and "nothing was published" in result.output
    listed = run_json("adapters", "list", "--store", store, "--no-defaults")
    assert [(a["id"], a["version"]) for a in listed] == [("yor_Latn-topic", 1)]  # type: ignore[index,union-attr]


@pytest.mark.parametrize("code", ["yorr", "xx"])
def test_unknown_language_filter_suggests_codes(tmp_path: Path, code: str) -> None:
    result = runner.invoke(app, ["adapters", "list", "--store", str(tmp_path), "--lang", code])
    assert result.exit_code == 2
    assert "error:" in result.output


def _commands(command: object, path: list[str]) -> list[tuple[list[str], object]]:
    """Every command and group of the CLI with its argument path, depth first."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def test_help_at_80_columns_shows_every_option_name_whole() -> None:
    """Rich's option table cut long names (`--lang-adapter-vers…`); every name must be readable at 80 columns."""
    import typer

    commands = _commands(typer.main.get_command(app), [])
    assert len(commands) > 15
    for path, command in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80, path
        for param in command.params:  # type: ignore[attr-defined]
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("--"):
                    assert name in result.output.split(), (path, name)
