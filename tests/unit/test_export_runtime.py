"""Runtimes: provider choice (CPU always, CUDA when present), threads, and what they refuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from langadapt.export import runtime as runtime_module
from langadapt.export.errors import ExportError
from langadapt.export.runtime import FusedRuntime, SwappableRuntime, check_device, select_providers


def tiny_fused_artifact(folder: Path, *, artifact: str = "onnx-fused") -> Path:
    """A hand-built 'fused' graph (logits: one-hot of the first token id, 3 labels; mask unused) and manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.INT64, [1], [0])),
        helper.make_node("Gather", ["input_ids", "zero"], ["first"], axis=1),
        helper.make_node("Squeeze", ["first", "zero_axes"], ["token"]),
        helper.make_node("Constant", [], ["depth"], value=helper.make_tensor("depth", TensorProto.INT64, [], [3])),
        helper.make_node(
            "Constant", [], ["values"], value=helper.make_tensor("values", TensorProto.FLOAT, [2], [0.0, 1.0])
        ),
        helper.make_node("OneHot", ["token", "depth", "values"], ["logits"], axis=-1),
    ]
    initializers = [helper.make_tensor("zero_axes", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "tiny", [ids, mask], [logits], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {"artifact": artifact, "labels": ["a", "b", "c"], "head_type": "classification"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_cpu_always_and_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(runtime_module, "cuda_available", lambda: False)
    assert select_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ExportError, match="no CUDA execution provider") as caught:
        select_providers("cuda")
    assert "onnxruntime-gpu" in caught.value.hint
    monkeypatch.setattr(runtime_module, "cuda_available", lambda: True)
    assert select_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ExportError, match="unknown device"):
        select_providers("tpu")
    # Parity checks: fp16 on CUDA when present; fp32 and int8 on the CPU, where the 1e-4 tolerance holds.
    assert [check_device(p) for p in ("fp16", "fp32", "int8")] == ["cuda", "cpu", "cpu"]
    assert check_device("fp32", "cuda") == "cuda"
    monkeypatch.setattr(runtime_module, "cuda_available", lambda: False)
    assert check_device("fp16") == "cpu"


def test_fused_runtime_runs_with_configured_threads(tmp_path: Path) -> None:
    folder = tiny_fused_artifact(tmp_path / "artifact")
    runtime = FusedRuntime(folder, device="auto", threads=1)
    assert runtime.labels == ["a", "b", "c"] and runtime.head_type == "classification"
    assert runtime.providers[-1] == "CPUExecutionProvider"
    assert runtime.session.get_session_options().intra_op_num_threads == 1
    logits = runtime.run(np.array([[2, 1, 1], [0, 1, 1]], dtype=np.int32), np.ones((2, 3), dtype=np.int64))
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits.argmax(-1), [2, 0])


def test_runtimes_refuse_wrong_artifacts_and_inputs(tmp_path: Path) -> None:
    folder = tiny_fused_artifact(tmp_path / "artifact")
    with pytest.raises(ExportError, match="not onnx-swappable"):
        SwappableRuntime(folder)
    with pytest.raises(ExportError, match="not a swappable graph"):
        SwappableRuntime.from_graph(folder / "model.onnx")
    with pytest.raises(ExportError, match="not onnx-fused"):
        FusedRuntime(tiny_fused_artifact(tmp_path / "other", artifact="adapter"))
    with pytest.raises(ExportError, match=r"no manifest\.json"):
        FusedRuntime(tmp_path)
    with pytest.raises(ExportError, match="threads must be"):
        FusedRuntime(folder, threads=0)
    runtime = FusedRuntime(folder, device="cpu")
    with pytest.raises(ValueError, match="non-empty"):
        runtime.run(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        runtime.run(np.zeros((0, 3)), np.zeros((0, 3)))
