"""`langadapt export` commands: fused by language and task, swappable, verify; user errors exit 2 with a hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from export_support import TinyStore, build_tiny_store, one_torch_thread  # noqa: F401 (autouse fixture)
from typer.testing import CliRunner

from langadapt.export.cli_export import export_app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyStore:
    return build_tiny_store(tiny_bert_dir, tmp_path_factory.mktemp("cli") / "store")


def invoke(*args: str) -> Any:
    return runner.invoke(export_app, list(args))


def test_fused_resolves_the_task_adapter_and_its_recorded_language_adapter(tiny: TinyStore) -> None:
    result = invoke("fused", "--lang", "yo", "--task", "topic", "--store", str(tiny.store.root), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["id"] == "yor_Latn-topic.yor_Latn-mlm-seq_bn.onnx-fp32" and summary["version"] == 1
    assert [s["id"] for s in summary["sources"]] == ["yor_Latn-mlm-seq_bn", "yor_Latn-topic"]
    assert summary["parity"]["fp32"]["max_abs_diff"] <= 1e-4

    verified = invoke("verify", summary["id"], "--store", str(tiny.store.root), "--device", "cpu")
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith(f"verified {summary['id']} v1")

    graph = tiny.store.path(summary["id"]) / "model.onnx"
    graph.chmod(0o644)
    graph.write_bytes(graph.read_bytes() + b"\0")
    failed = invoke("verify", summary["id"], "--store", str(tiny.store.root), "--json")
    assert failed.exit_code == 1
    report = json.loads(failed.output)
    assert report["ok"] is False and "model.onnx" in report["error"]


def test_fused_task_only_in_text_form_and_a_failed_int8_check(tiny: TinyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["fused", "--lang", "hau_Latn", "--task", "ner", "--task-only", "--store", str(tiny.store.root)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("published hau_Latn-ner.onnx-fp32 v1") and "fp32" in result.output
    monkeypatch.setattr("langadapt.export.parity.MIN_AGREEMENT", 1.01)  # a bar no graph can clear
    failed = invoke(*args, "--quantize", "int8")
    assert failed.exit_code == 2
    assert "no int8 recipe matches the reference (all: the int8 graph does not match" in failed.output
    assert "ffn-float: the int8 graph does not match" in failed.output
    assert "hau_Latn-ner.onnx-int8" not in tiny.store.ids()


def test_swappable_command(tiny: TinyStore, tmp_path: Path) -> None:
    result = invoke(
        "swappable",
        "--base",
        str(tiny.info.path),
        "--store",
        str(tiny.store.root),
        "--out",
        str(tmp_path / "g"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["artifact"] == "onnx-swappable" and len(summary["check_stacks"]) >= 6
    assert (tmp_path / "g" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fused", "--lang", "yo", "--task", "topic", "--quantize", "int8", "--precision", "fp16"], "int8 is for CPU"),
        (["fused", "--lang", "yo", "--task", "ner", "--no-defaults"], "no adapter 'yor_Latn-ner'"),
        (["fused", "--lang", "xx-nope", "--task", "topic"], "unknown language code"),
        (["fused", "--lang", "yo", "--task", "topic", "--task-only", "--lang-adapter", "x"], "contradict"),
        (["verify", "ibo_Latn-topic"], "not an ONNX export"),
    ],
)
def test_user_errors_exit_2_with_a_hint(tiny: TinyStore, args: list[str], message: str) -> None:
    result = runner.invoke(export_app, [*args, "--store", str(tiny.store.root)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output


def test_the_labelled_set_reads_ner_files_as_training_did(tmp_path: Path) -> None:
    """A stray I- tag fails strict reading, and is read as B- when the adapter was trained with --repair-iob."""
    from langadapt.errors import DataFormatError
    from langadapt.export.parity import LabelledSet

    path = tmp_path / "test.txt"
    path.write_text("Ali I-PER\nwent O\nto O\nLagos B-LOC\n\nKano B-LOC\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="I-PER"):
        LabelledSet.from_file(path, "ner")
    repaired = LabelledSet.from_file(path, "ner", repair_iob=True)
    assert repaired.labels == [["B-PER", "O", "O", "B-LOC"], ["B-LOC"]]
