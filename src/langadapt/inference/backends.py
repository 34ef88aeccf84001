"""Inference backends behind one interface: token ids + per-row stack indices + bank tensors → hidden states.

- `torch`: the base encoder loaded once, `BankedEncoder` applying each row's adapter stack from the bank in one
  batched forward (no Python loop over rows; invertible adapters per row, unlike the `adapters` library's
  `BatchSplit`). Heads run afterwards in torch, one call per group of rows sharing a head.
- `onnx-swappable`: the store's swappable graph for this base (`langadapt export swappable`) in ONNX Runtime,
  fed the same bank tensors; no torch model is loaded. Heads run in torch on the CPU.
- `onnx-fused`: stacks that have a fused artifact in the store (`langadapt export fused`, exactly this task and
  language adapter version) run in their own ONNX Runtime session, logits out; the long tail without one runs
  on the `torch` bank path. At most `max_sessions` fused sessions stay open (least recently used closed first):
  each holds a whole copy of the base weights.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from langadapt.errors import LangadaptError
from langadapt.inference.shared import ENCODER, load_encoder, take_shared
from langadapt.models.bank import AdapterBank, BankedEncoder, BankLayout
from langadapt.models.base import BaseModelInfo, load_config_dict
from langadapt.models.heads import Head
from langadapt.models.kinds import FUSED_ARTIFACT, SWAPPABLE_ARTIFACT, TORCH_BACKEND

if TYPE_CHECKING:
    from langadapt.inference.routing import StackKey
    from langadapt.models.store_view import Candidate, LayeredStore

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISION_ORDER = ("fp32", "fp16", "int8")  # preferred first, when several exports of one stack exist


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str
    device: torch.device
    layout: BankLayout
    max_positions: int

    def new_bank(self, capacity: int = 8) -> AdapterBank:
        """An empty bank whose tensors this backend can read."""
        ...

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        """Last hidden states ``[B, T, H]`` on `device`; row b under stack ``stack_index[b]``."""
        ...

    def place_head(self, head: Head) -> Head:
        """The head with its weights where `hidden_states` returns its output."""
        ...

    def fused_for(self, key: StackKey) -> Any | None:
        """A session computing this stack's logits directly (`run(ids, mask)`), or None: use the bank path."""
        ...

    def bank_path(self, tokens: int) -> str:
        """What computes a bank pass of `tokens` padded tokens (a backend name), for responses."""
        ...

    def describe(self) -> dict[str, Any]:
        """The backend's choices, for worker reports."""
        ...


def resolve_device(spec: str) -> torch.device:
    """`auto` → CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is an error that says so."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LangadaptError(
            f"device {spec!r} was asked for but torch sees no CUDA device",
            "use --device cpu or --device auto, or install a CUDA build of torch on a machine with a GPU",
        )
    if device.type not in ("cpu", "cuda"):
        raise LangadaptError(f"device {spec!r} is not supported", "use auto, cpu, cuda or cuda:N")
    return device


def max_positions(info: BaseModelInfo) -> int:
    """The longest input the base model takes: its position table, less XLM-R's offset past the padding id."""
    config = load_config_dict(info.path)
    positions = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in ("xlm-roberta", "roberta", "camembert"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


class TorchBackend:
    """The base encoder in torch, adapters applied per row from the bank."""

    name = TORCH_BACKEND

    def __init__(self, info: BaseModelInfo, device: torch.device, threads: int | None = None) -> None:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(max(1, threads))
        shared = take_shared(ENCODER, info) if device.type == "cpu" else None
        model = shared if shared is not None else load_encoder(info)
        model.eval().to(device)
        self.device = device
        self.model = model
        self.encoder = BankedEncoder(model)
        self.layout = self.encoder.layout
        self.max_positions = max_positions(info)

    @property
    def nbytes(self) -> int:
        """Bytes of the base model's parameters and buffers."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def new_bank(self, capacity: int = 8) -> AdapterBank:
        """An empty fp32 bank on this backend's device."""
        return AdapterBank(self.layout, capacity=capacity, device=self.device)

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        """One batched forward; each row under its own stack."""
        with torch.inference_mode():
            return self.encoder(
                input_ids.to(self.device),
                attention_mask.to(self.device),
                stack_index.to(self.device),
                **bank,
            )

    def place_head(self, head: Head) -> Head:
        """The head's weights on this backend's device."""
        layers = [(w.to(self.device), None if b is None else b.to(self.device)) for w, b in head.layers]
        return Head(head.head_type, list(head.labels), layers, head.activation)

    def fused_for(self, key: StackKey) -> Any | None:
        """Every stack runs on the bank path."""
        return None

    def bank_path(self, tokens: int) -> str:
        """Bank passes run in torch."""
        return TORCH_BACKEND

    def describe(self) -> dict[str, Any]:
        """The backend's name (nothing is chosen at run time)."""
        return {"backend": self.name}


def _ort_device(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def _precision_rank(candidate: Candidate) -> int:
    precision = candidate.manifest.precision or "fp32"
    return PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)


def swappable_graph(stores: LayeredStore, info: BaseModelInfo) -> Candidate | None:
    """The store's swappable graph for this base (the preferred precision, then the newest version), or None."""
    found = [
        c
        for c in stores.candidates()
        if c.manifest.artifact == SWAPPABLE_ARTIFACT and c.manifest.base_fingerprint == info.fingerprint
    ]
    return min(found, key=lambda c: (_precision_rank(c), -c.ref.version)) if found else None


def swappable_states(
    runtime: Any, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
) -> Tensor:
    """One ONNX Runtime run of the swappable graph over the whole bank (CPU tensors handed over without a copy)."""
    hidden = runtime.hidden_states(
        input_ids.numpy(),
        attention_mask.numpy(),
        stack_index.numpy(),
        {name: tensor.numpy() for name, tensor in bank.items()},
    )
    return torch.from_numpy(hidden)


class SwappableBackend:
    """The swappable ONNX graph: bank tensors as graph inputs, per-row stacks in one run; heads in torch (CPU)."""

    name = SWAPPABLE_ARTIFACT

    def __init__(self, info: BaseModelInfo, device: torch.device, threads: int | None, stores: LayeredStore) -> None:
        from langadapt.export.runtime import SwappableRuntime

        chosen = swappable_graph(stores, info)
        if chosen is None:
            raise LangadaptError(
                f"no swappable ONNX graph for base {info.id!r} in the store",
                f"export one first: langadapt export swappable --base {info.id}, or serve with --backend torch",
            )
        manifest, folder = stores.open_ref(chosen.ref, info.fingerprint)
        saved = dict(manifest.layout or {})
        self.layout = BankLayout(**{**saved, "lora_matrices": tuple(saved["lora_matrices"])})
        self.runtime = SwappableRuntime(folder, device=_ort_device(device), threads=threads)  # type: ignore[arg-type]
        self.artifact = chosen.ref
        self.device = torch.device("cpu")  # hidden states come back to the host; heads run there
        self.max_positions = max_positions(info)
        if threads is not None:
            torch.set_num_threads(max(1, threads))

    def new_bank(self, capacity: int = 8) -> AdapterBank:
        """An empty fp32 bank on the CPU (its tensors are the graph's inputs)."""
        return AdapterBank(self.layout, capacity=capacity)

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        """One ONNX Runtime run over the whole bank (CPU tensors are handed over without a copy)."""
        return swappable_states(self.runtime, input_ids, attention_mask, stack_index, bank)

    def place_head(self, head: Head) -> Head:
        """Heads stay on the CPU."""
        return head

    def fused_for(self, key: StackKey) -> Any | None:
        """Every stack runs through the swappable graph."""
        return None

    def bank_path(self, tokens: int) -> str:
        """Bank passes run in the swappable graph."""
        return SWAPPABLE_ARTIFACT

    def describe(self) -> dict[str, Any]:
        """The backend's name and graph."""
        return {"backend": self.name, "swappable_graph": str(self.artifact)}


class FusedBackend(TorchBackend):
    """Fused ONNX sessions for stacks exported as such; the torch bank path for the others."""

    name = FUSED_ARTIFACT

    def __init__(
        self,
        info: BaseModelInfo,
        device: torch.device,
        threads: int | None,
        stores: LayeredStore,
        max_sessions: int = 4,
    ) -> None:
        super().__init__(info, device, threads)
        self.info = info
        self.stores = stores
        self.threads = threads
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[StackKey, Any] = OrderedDict()
        self._index: dict[tuple[Any, ...], list[Candidate]] = {}
        self._generation: int | None = None
        self._missing: set[StackKey] = set()
        self._lock = threading.Lock()

    def fused_for(self, key: StackKey) -> Any | None:
        """The open fused session for this exact stack, opening it (and closing the least recent) when needed."""
        with self._lock:
            self._follow_store()
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            if key in self._missing:
                return None
            found = self._index.get(self._signature(key))
            if not found:
                self._missing.add(key)
                return None
            chosen = min(found, key=lambda c: (_precision_rank(c), -c.ref.version))
            try:
                session = self._open(chosen)
            except Exception as err:  # an unusable artifact: serve the stack on the bank path instead
                log.warning("fused artifact %s cannot be used (%s); serving %s on the torch path", chosen.ref, err, key)
                self._missing.add(key)
                return None
            self._sessions[key] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            return session

    def _open(self, chosen: Candidate) -> Any:
        from langadapt.export.runtime import FusedRuntime

        _, folder = self.stores.open_ref(chosen.ref, self.info.fingerprint)
        return FusedRuntime(folder, device=_ort_device(self.device), threads=self.threads)  # type: ignore[arg-type]

    def _follow_store(self) -> None:
        """Rebuild the artifact index when the store's generation moved (new exports, removed ones)."""
        generation = self.stores.generation()
        if generation == self._generation:
            return
        self._generation = generation
        self._missing.clear()
        index: dict[tuple[Any, ...], list[Candidate]] = {}
        for c in self.stores.candidates():
            m = c.manifest
            if m.artifact != FUSED_ARTIFACT or m.base_fingerprint != self.info.fingerprint:
                continue
            roles = {row.role: row for row in m.sources or []}
            task, language = roles.get("task"), roles.get("language")
            if task is None:
                continue
            signature = (  # the source too: a store id may shadow a default of the same id and version
                task.id,
                task.version,
                task.source,
                language.id if language else None,
                language.version if language else None,
                language.source if language else None,
            )
            index.setdefault(signature, []).append(c)
        self._index = index

    @staticmethod
    def _signature(key: StackKey) -> tuple[Any, ...]:
        language = key.language
        return (
            key.task.id,
            key.task.version,
            key.task.source,
            language.id if language else None,
            language.version if language else None,
            language.source if language else None,
        )
