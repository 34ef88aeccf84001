"""ONNX Runtime sessions for exported artifacts: the small interface the serving engine calls.

`FusedRuntime` runs one fused stack: token ids and mask in, logits out. `SwappableRuntime` runs the base graph whose
adapter weights are inputs: token ids, mask, a per-row stack index and the bank tensors in, last hidden states
out (the per-task heads run after it, per group of rows). Both use the CUDA provider when asked for (``device=
"cuda"``) or when it is available (``"auto"``), and the CPU provider always, with a configurable thread count.
Only numpy and onnxruntime are imported here, so a serving process need not import torch for these backends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from langadapt.export.errors import ExportError
from langadapt.models.kinds import FUSED_ARTIFACT, GRAPH_FILE, MANIFEST_FILE, SWAPPABLE_ARTIFACT

__all__ = [
    "Device",
    "FusedRuntime",
    "SwappableRuntime",
    "check_device",
    "cuda_available",
    "select_providers",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
Device = Literal["cpu", "cuda", "auto"]
GPU_HINT = "pip install onnxruntime-gpu (and uninstall onnxruntime: both ship the module), on a machine with CUDA"


def cuda_available() -> bool:
    """Whether the installed onnxruntime has the CUDA provider."""
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def select_providers(device: str) -> list[str]:
    """Execution providers for `device`: CPU always last; CUDA first for `cuda`, and for `auto` when present."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if not cuda_available():
            raise ExportError("device 'cuda' asked for, but onnxruntime has no CUDA execution provider", GPU_HINT)
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if cuda_available() else [CPU]
    raise ExportError(f"unknown device {device!r}", "choose cpu, cuda or auto")


def check_device(precision: str, device: str = "auto") -> str:
    """Where a parity check runs: `auto` means CUDA (when present) for fp16 graphs, the CPU for the others."""
    # The 1e-4 fp32 tolerance is a CPU figure: the CUDA provider computes fp32 products in TF32 on Ampere and later.
    if device != "auto":
        return device
    return "cuda" if precision == "fp16" and cuda_available() else "cpu"


def _session(path: Path, device: str, threads: int | None) -> Any:
    """An inference session on `path` with the providers for `device` and `threads` intra-op threads (None: ORT's)."""
    import onnxruntime as ort

    if not path.is_file():
        raise ExportError(f"no ONNX graph at {path}", "export it first (`langadapt export fused|swappable`)")
    if threads is not None and threads < 1:
        raise ExportError(f"threads must be ≥ 1, got {threads}", "leave it out to let ONNX Runtime choose")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = select_providers(device)
    session = ort.InferenceSession(str(path), options, providers=providers)
    if device == "cuda" and CUDA not in session.get_providers():
        raise ExportError(
            f"the CUDA provider is installed but could not start for {path.name} (missing CUDA or cuDNN libraries?)",
            GPU_HINT,
        )
    return session


def _token_inputs(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """int64, C-contiguous ``[batch, sequence]`` ids and mask of one shape."""
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal non-empty [batch, sequence] arrays"
        )
    return {"input_ids": ids, "attention_mask": mask}


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{folder} has no {MANIFEST_FILE}", "point at an artifact folder from the store or --out")
    return json.loads(path.read_text(encoding="utf-8"))


class FusedRuntime:
    """One fused stack in an ONNX Runtime session: ``run(input_ids, attention_mask) -> logits``.

    Logits are ``[B, C]`` for classification heads and ``[B, T, C]`` for tagging heads, in `labels` order.
    """

    def __init__(self, artifact_dir: Path | str, *, device: Device = "auto", threads: int | None = None) -> None:
        folder = Path(artifact_dir)
        manifest = _read_manifest(folder)
        if manifest.get("artifact") != FUSED_ARTIFACT:
            raise ExportError(f"{folder} holds a {manifest.get('artifact')!r} artifact, not {FUSED_ARTIFACT}")
        self._init(folder / GRAPH_FILE, manifest["labels"], manifest["head_type"], device, threads)
        self.manifest = manifest

    @classmethod
    def from_graph(
        cls,
        path: Path,
        labels: Sequence[str],
        head_type: str,
        *,
        device: Device = "cpu",
        threads: int | None = None,
    ) -> FusedRuntime:
        """A runtime on a bare graph file (no manifest yet), as the export checks it before publishing."""
        runtime = cls.__new__(cls)
        runtime._init(Path(path), labels, head_type, device, threads)
        runtime.manifest = {}
        return runtime

    def _init(self, path: Path, labels: Sequence[str], head_type: str, device: str, threads: int | None) -> None:
        self.path = path
        self.labels = list(labels)
        self.head_type = head_type
        self.session = _session(path, device, threads)
        self.providers: list[str] = list(self.session.get_providers())
        self.device = "cuda" if CUDA in self.providers else "cpu"

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits (float32) for a right-padded batch."""
        (logits,) = self.session.run(["logits"], _token_inputs(input_ids, attention_mask))
        return np.asarray(logits, dtype=np.float32)


class SwappableRuntime:
    """The swappable base graph in an ONNX Runtime session: per-row adapter stacks chosen by ``stack_index``.

    ``bank_tensors`` are `AdapterBank.tensors()` as numpy arrays (any stack count and padded rank, float32), by
    name; row b uses stack ``stack_index[b]`` and index 0 is the bare base. `tensor_names` gives the order.
    """

    def __init__(self, graph_dir: Path | str, *, device: Device = "auto", threads: int | None = None) -> None:
        folder = Path(graph_dir)
        manifest = _read_manifest(folder)
        if manifest.get("artifact") != SWAPPABLE_ARTIFACT:
            raise ExportError(f"{folder} holds a {manifest.get('artifact')!r} artifact, not {SWAPPABLE_ARTIFACT}")
        self._init(folder / GRAPH_FILE, device, threads)
        self.manifest = manifest

    @classmethod
    def from_graph(cls, path: Path, *, device: Device = "cpu", threads: int | None = None) -> SwappableRuntime:
        """A runtime on a bare graph file (no manifest yet), as the export checks it before publishing."""
        runtime = cls.__new__(cls)
        runtime._init(Path(path), device, threads)
        runtime.manifest = {}
        return runtime

    def _init(self, path: Path, device: str, threads: int | None) -> None:
        self.path = path
        self.session = _session(path, device, threads)
        self.providers: list[str] = list(self.session.get_providers())
        self.device = "cuda" if CUDA in self.providers else "cpu"
        names = [i.name for i in self.session.get_inputs()]
        if names[:3] != ["input_ids", "attention_mask", "stack_index"]:
            raise ExportError(f"{path} is not a swappable graph (inputs {names[:3]})", "use export_swappable")
        self.tensor_names: tuple[str, ...] = tuple(names[3:])

    def hidden_states(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        stack_index: np.ndarray,
        bank_tensors: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        """Last hidden states ``[B, T, H]`` (float32); row b computed with the adapters of stack ``stack_index[b]``."""
        feeds: dict[str, np.ndarray] = _token_inputs(input_ids, attention_mask)
        index = np.ascontiguousarray(stack_index, dtype=np.int64).reshape(-1)
        if index.shape[0] != feeds["input_ids"].shape[0]:
            raise ValueError(f"stack_index has {index.shape[0]} entries for a batch of {feeds['input_ids'].shape[0]}")
        missing = [n for n in self.tensor_names if n not in bank_tensors]
        unexpected = sorted(set(bank_tensors) - set(self.tensor_names))
        if missing or unexpected:
            raise ValueError(f"bank tensors missing {missing}, unexpected {unexpected}")
        stacks = bank_tensors[self.tensor_names[0]].shape[0]
        if index.size and (index.min() < 0 or index.max() >= stacks):
            raise ValueError(f"stack_index values must lie in [0, {stacks}), got {index.min()}..{index.max()}")
        feeds["stack_index"] = index
        for name in self.tensor_names:
            feeds[name] = np.ascontiguousarray(bank_tensors[name], dtype=np.float32)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return np.asarray(hidden, dtype=np.float32)
