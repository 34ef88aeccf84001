"""Adapter bank: many adapter stacks packed into tensors, and one encoder forward that gives each row its own stack.

A *stack* is what ``adapters.Stack(language, task)`` applies: up to K adapters in order (slot 0 the language adapter,
slot 1 the task adapter). `AdapterBank` holds the weights of N stacks in tensors whose leading axis is the stack
index; index 0 is always the empty stack (the bare base model). `BankedEncoder` runs a BERT or XLM-R encoder with
those tensors as plain arguments and a per-row ``stack_index``, with no Python loop over rows and no data-dependent
control flow, so `torch.onnx.export` can make the bank tensors graph inputs: one run serves a batch that mixes
languages and tasks, and adding a stack is writing weights, not re-exporting.

What the `adapters` library (1.3.0) computes, and this module reproduces (the unit tests compare the two):

- Pfeiffer bottleneck (``seq_bn``) at the FFN output, FFN output ``x``, attention output ``t``, layer LayerNorm LN:
  ``h_0 = x;  h_k = h_{k-1} + s_k * up_k(act(down_k(LN(h_{k-1} + t))));  output = LN(h_K + t)``. A slot whose
  up-projection is zero is the identity, so an absent adapter is a zero slot and sizes are zero-padded.
- LoRA on attention matrices adds ``s * B A x`` to ``W x + b`` (``s = alpha / r``; dropout is off at eval). In a
  Stack, LoRA modules *chain* rather than sum: the second acts on the first's output, ``s2 B2 A2 (s1 B1 A1 x)``. The
  bank folds a chain into one pair (``a = A1^T``, ``b = s1 B1^T A2^T s2 B2^T ...``), so one pair per stack suffices.
- The invertible (NICE) adapter on the embedding output belongs to the stack's *first* adapter only, and applies
  only if that adapter has one (``adapter_setup.first()`` in the library); a zero NICE block is the identity.

Activations of all padded hidden units see zero pre-activation, so any activation with ``act(0) == 0`` (checked)
leaves the padding inert.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from langadapt.models.kinds import ADAPTER_CONFIG, ADAPTER_WEIGHTS

__all__ = [
    "BARE_INDEX",
    "LANGUAGE_SLOT",
    "TASK_SLOT",
    "AdapterBank",
    "AdapterWeights",
    "BankLayout",
    "BankedEncoder",
    "NiceWeights",
]

BARE_INDEX = 0  # the stack index that holds no adapter: the row sees the bare base model
LANGUAGE_SLOT = 0  # stack position of the language adapter (first in `Stack(lang, task)`)
TASK_SLOT = 1  # stack position of the task adapter

StateDict = Mapping[str, Tensor]

_LORA_MODULES = {"query": "q", "key": "k", "value": "v"}
_BN_KEY = re.compile(r"(?:^|\.)layer\.(\d+)\.output\.adapters\.([^.]+)\.adapter_(down\.0|up)\.(weight|bias)$")
_LORA_KEY = re.compile(r"(?:^|\.)layer\.(\d+)\.attention\.self\.(query|key|value)\.loras\.([^.]+)\.lora_([AB])$")
_INV_KEY = re.compile(r"(?:^|\.)invertible_adapters\.([^.]+)\.([FG])\.([02])\.(weight|bias)$")
# Settings under which a bottleneck config computes the Pfeiffer formula above; anything else is refused.
_BN_REQUIRED: dict[str, Any] = {
    "is_parallel": False,
    "original_ln_before": True,
    "original_ln_after": True,
    "residual_before_ln": True,
    "ln_before": False,
    "ln_after": False,
    "use_gating": False,
    "phm_layer": False,
    "mh_adapter": False,
    "output_adapter": True,
}
_LORA_REQUIRED: dict[str, Any] = {
    "composition_mode": "add",
    "use_gating": False,
    "use_dora": False,
    "vera_d": None,
    "vera_b": None,
    "intermediate_lora": False,
    "output_lora": False,
}
_SUPPORTED = "supported: seq_bn and seq_bn_inv (Pfeiffer, NICE) bottlenecks and self-attention LoRA"


def _activation(name: str) -> nn.Module:
    """The activation module the `adapters` library builds for a `non_linearity` name."""
    from adapters.methods.modeling import Activation_Function_Class

    return Activation_Function_Class(name.lower())


@dataclass(frozen=True)
class BankLayout:
    """The fixed shape of a bank, which is what a `BankedEncoder` graph is built for."""

    num_layers: int
    hidden_size: int
    slots: int = 2
    lora_matrices: tuple[str, ...] = ("q", "v")
    non_linearity: str = "relu"

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.hidden_size < 2 or self.slots < 1:
            raise ValueError(f"a bank needs ≥1 layer, hidden size ≥2 and ≥1 slot, got {self}")
        unknown = [m for m in self.lora_matrices if m not in _LORA_MODULES.values()]
        if unknown or len(set(self.lora_matrices)) != len(self.lora_matrices):
            raise ValueError(f"lora_matrices must be distinct names from q, k, v, got {self.lora_matrices}")
        object.__setattr__(self, "non_linearity", self.non_linearity.lower())
        if float(_activation(self.non_linearity)(torch.zeros(1))) != 0.0:
            raise ValueError(
                f"activation {self.non_linearity!r} is not zero at zero, so zero padding would not be inert"
            )

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> BankLayout:
        """The layout for a transformers model config (its layer count and hidden size)."""
        return cls(num_layers=config.num_hidden_layers, hidden_size=config.hidden_size, **kwargs)

    @property
    def split(self) -> tuple[int, int]:
        """The NICE split of the hidden vector: (first half H1, second half H2), as the library splits it."""
        return self.hidden_size // 2, self.hidden_size - self.hidden_size // 2

    def tensor_axes(self) -> dict[str, tuple[str, ...]]:
        """Each bank tensor's axis names, in `tensor_names` order; ``stacks`` and ``*_rank`` axes vary, the rest do not.

        ``stacks`` N (index 0 the bare base), ``slots`` K (stack positions), ``layers`` L, ``hidden`` H, ``half1`` /
        ``half2`` the NICE split H1/H2; ``bn_rank``, ``lora_rank``, ``inv_f_rank``, ``inv_g_rank`` are the largest
        sizes among the stored adapters (at least 1), smaller adapters zero-padded. Weights are stored ``[in, out]``
        (``y = x @ w + b``), scalings folded in.
        """
        axes: dict[str, tuple[str, ...]] = {
            "bn_down_w": ("stacks", "slots", "layers", "hidden", "bn_rank"),
            "bn_down_b": ("stacks", "slots", "layers", "bn_rank"),
            "bn_up_w": ("stacks", "slots", "layers", "bn_rank", "hidden"),
            "bn_up_b": ("stacks", "slots", "layers", "hidden"),
        }
        for m in self.lora_matrices:
            axes[f"lora_{m}_a"] = ("stacks", "layers", "hidden", "lora_rank")
            axes[f"lora_{m}_b"] = ("stacks", "layers", "lora_rank", "hidden")
        axes.update(
            {
                "inv_f_down_w": ("stacks", "half2", "inv_f_rank"),
                "inv_f_down_b": ("stacks", "inv_f_rank"),
                "inv_f_up_w": ("stacks", "inv_f_rank", "half1"),
                "inv_f_up_b": ("stacks", "half1"),
                "inv_g_down_w": ("stacks", "half1", "inv_g_rank"),
                "inv_g_down_b": ("stacks", "inv_g_rank"),
                "inv_g_up_w": ("stacks", "inv_g_rank", "half2"),
                "inv_g_up_b": ("stacks", "half2"),
            }
        )
        return axes

    def tensor_names(self) -> tuple[str, ...]:
        """The bank tensors' names, in the order `AdapterBank.tensors` and `BankedEncoder.input_names` use."""
        return tuple(self.tensor_axes())

    def _shape(self, name: str, capacity: int, ranks: Mapping[str, int]) -> tuple[int, ...]:
        h1, h2 = self.split
        sizes = {
            "stacks": capacity,
            "slots": self.slots,
            "layers": self.num_layers,
            "hidden": self.hidden_size,
            "half1": h1,
            "half2": h2,
            **ranks,
        }
        return tuple(sizes[axis] for axis in self.tensor_axes()[name])


@dataclass(frozen=True, eq=False)
class NiceWeights:
    """A NICE coupling block as matmul operands: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``, ``F = up(act(down(.)))``.

    ``f_down_w [H2, Rf]``, ``f_down_b [Rf]``, ``f_up_w [Rf, H1]``, ``f_up_b [H1]``; G the same with H1 and H2 swapped.
    """

    f_down_w: Tensor
    f_down_b: Tensor
    f_up_w: Tensor
    f_up_b: Tensor
    g_down_w: Tensor
    g_down_b: Tensor
    g_up_w: Tensor
    g_up_b: Tensor


@dataclass(frozen=True, eq=False)
class AdapterWeights:
    """One adapter's weights parsed from an `adapters` state dict, in ``[in, out]`` layout with scalings folded in.

    ``bottleneck``: layer → (down_w ``[H, R]``, down_b ``[R]``, up_w ``[R, H]``, up_b ``[H]``), up already times the
    config's ``scaling``. ``lora``: (matrix ``q``/``k``/``v``, layer) → (a ``[H, r]`` = A^T, b ``[r, H]`` =
    (alpha/r)·B^T). Layers an adapter leaves out are simply absent.
    """

    name: str
    kind: str  # "bottleneck" or "lora"
    hidden_size: int
    non_linearity: str | None
    bottleneck: Mapping[int, tuple[Tensor, Tensor, Tensor, Tensor]]
    lora: Mapping[tuple[str, int], tuple[Tensor, Tensor]]
    invertible: NiceWeights | None

    @classmethod
    def from_state_dict(cls, state: StateDict, config: Any) -> AdapterWeights:
        """Parse one adapter's state dict (keys as the library names them, any prefix) and its config.

        ``config`` is an `adapters.AdapterConfig`, its dict, a whole ``adapter_config.json`` dict, or a config name
        such as ``"seq_bn"``. Variants this module does not compute exactly (parallel, Houlsby, gating, DoRA, ...)
        are refused with the setting that differs.
        """
        cfg = _load_config(config)
        from adapters import BnConfig, LoRAConfig

        if isinstance(cfg, LoRAConfig):
            return _parse_lora(state, cfg)
        if isinstance(cfg, BnConfig):
            return _parse_bottleneck(state, cfg)
        raise ValueError(f"adapter config {type(cfg).__name__} is not supported by the adapter bank ({_SUPPORTED})")

    @classmethod
    def from_model(cls, model: nn.Module, name: str) -> AdapterWeights:
        """The weights of adapter `name` as loaded in an `adapters` model (what `save_adapter` would write)."""
        from adapters.loading import AdapterLoader

        state, config = AdapterLoader(model).save_to_state_dict(name)
        return cls.from_state_dict(state, config)

    @classmethod
    def from_folder(cls, folder: Path | str) -> AdapterWeights:
        """The weights in a folder written by ``save_adapter(..., use_safetensors=True)``; pickle files are refused."""
        from safetensors.torch import load_file

        folder = Path(folder)
        weights = folder / ADAPTER_WEIGHTS
        if not weights.is_file():
            hint = "re-save it with model.save_adapter(folder, name, use_safetensors=True)"
            if (folder / "pytorch_adapter.bin").exists():
                raise FileNotFoundError(f"{folder} holds only a pickle file, which is never loaded; {hint}")
            raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {folder}; {hint}")
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        return cls.from_state_dict(load_file(str(weights)), config)

    @property
    def layers(self) -> set[int]:
        """The layer indices this adapter has weights in."""
        return set(self.bottleneck) | {layer for _, layer in self.lora}


def _load_config(config: Any) -> Any:
    from adapters import AdapterConfig

    if isinstance(config, AdapterConfig):
        return config
    if isinstance(config, Mapping) and isinstance(config.get("config"), Mapping):
        config = config["config"]  # a whole adapter_config.json
    if isinstance(config, Mapping):
        config = dict(config)
    loaded = AdapterConfig.load(config)
    if loaded is None:
        raise ValueError(f"no adapter config given ({config!r})")
    return loaded


def _check_settings(name: str, cfg: Any, required: Mapping[str, Any]) -> None:
    for key, expected in required.items():
        value = cfg.get(key, expected)
        if value != expected:
            raise ValueError(
                f"adapter {name!r}: {key}={value!r} is not supported by the adapter bank, which needs "
                f"{key}={expected!r} ({_SUPPORTED})"
            )


def _own(t: Tensor) -> Tensor:
    """A float32 CPU copy that shares no storage with the model it came from."""
    return t.detach().to(device="cpu", dtype=torch.float32, copy=True)


def _single_name(names: set[str], what: str) -> str:
    if not names:
        raise ValueError(f"the {what} state dict holds no adapter weights the bank understands ({_SUPPORTED})")
    if len(names) > 1:
        raise ValueError(f"the state dict mixes several adapters {sorted(names)}; pass one adapter's weights at a time")
    return next(iter(names))


def _unrecognised(keys: Sequence[str]) -> ValueError:
    shown = ", ".join(sorted(keys)[:5])
    return ValueError(f"state dict keys the adapter bank cannot apply exactly: {shown} ({_SUPPORTED})")


def _parse_bottleneck(state: StateDict, cfg: Any) -> AdapterWeights:
    parts: dict[int, dict[str, Tensor]] = {}
    inv: dict[str, Tensor] = {}
    names: set[str] = set()
    leftover: list[str] = []
    for key, value in state.items():
        if match := _BN_KEY.search(key):
            layer, name, proj, param = match.groups()
            parts.setdefault(int(layer), {})[f"{proj.split('.')[0]}_{param}"] = value
            names.add(name)
        elif match := _INV_KEY.search(key):
            name, net, index, param = match.groups()
            inv[f"{net}{index}_{param}"] = value
            names.add(name)
        else:
            leftover.append(key)
    if leftover:
        raise _unrecognised(leftover)
    name = _single_name(names, "bottleneck")
    _check_settings(name, cfg, _BN_REQUIRED)
    scaling = cfg["scaling"]
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
        raise ValueError(f"adapter {name!r}: scaling={scaling!r} (learned) is not supported; use a constant scaling")
    if cfg["inv_adapter"] not in (None, "nice"):
        raise ValueError(f"adapter {name!r}: inv_adapter={cfg['inv_adapter']!r} is not supported; use 'nice' or None")

    hidden: int | None = None
    bottleneck: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
    for layer, p in sorted(parts.items()):
        missing = {"down_weight", "down_bias", "up_weight", "up_bias"} - set(p)
        if missing:
            raise ValueError(f"adapter {name!r} layer {layer}: missing {sorted(missing)}")
        rank, hid = p["down_weight"].shape
        if p["up_weight"].shape != (hid, rank) or p["down_bias"].shape != (rank,) or p["up_bias"].shape != (hid,):
            raise ValueError(f"adapter {name!r} layer {layer}: inconsistent bottleneck shapes")
        if hidden is not None and hid != hidden:
            raise ValueError(f"adapter {name!r}: hidden size differs between layers")
        hidden = hid
        bottleneck[layer] = (
            _own(p["down_weight"]).t().contiguous(),
            _own(p["down_bias"]),
            _own(p["up_weight"]).t().contiguous() * float(scaling),
            _own(p["up_bias"]) * float(scaling),
        )

    invertible = None
    if cfg["inv_adapter"] == "nice" or inv:
        if cfg["inv_adapter"] != "nice":
            raise ValueError(f"adapter {name!r} has invertible weights but its config says inv_adapter=None")
        invertible = _parse_nice(name, inv)
        width = invertible.f_up_w.shape[1] + invertible.g_up_w.shape[1]
        if hidden is not None and width != hidden:
            raise ValueError(f"adapter {name!r}: invertible adapter width {width} differs from hidden size {hidden}")
        hidden = width
    if hidden is None:
        raise ValueError(f"adapter {name!r} has no weights")
    return AdapterWeights(name, "bottleneck", hidden, str(cfg["non_linearity"]).lower(), bottleneck, {}, invertible)


def _parse_nice(name: str, inv: Mapping[str, Tensor]) -> NiceWeights:
    needed = [f"{net}{i}_{p}" for net in "FG" for i in "02" for p in ("weight", "bias")]
    missing = [k for k in needed if k not in inv]
    if missing:
        raise ValueError(f"adapter {name!r}: its config asks for a NICE invertible adapter but {missing} are missing")
    nice = NiceWeights(
        f_down_w=_own(inv["F0_weight"]).t().contiguous(),
        f_down_b=_own(inv["F0_bias"]),
        f_up_w=_own(inv["F2_weight"]).t().contiguous(),
        f_up_b=_own(inv["F2_bias"]),
        g_down_w=_own(inv["G0_weight"]).t().contiguous(),
        g_down_b=_own(inv["G0_bias"]),
        g_up_w=_own(inv["G2_weight"]).t().contiguous(),
        g_up_b=_own(inv["G2_bias"]),
    )
    h2, h1 = nice.f_down_w.shape[0], nice.g_down_w.shape[0]
    if (
        nice.f_up_w.shape[1] != h1
        or nice.g_up_w.shape[1] != h2
        or nice.f_up_w.shape[0] != nice.f_down_w.shape[1]
        or nice.g_up_w.shape[0] != nice.g_down_w.shape[1]
        or h1 != (h1 + h2) // 2
    ):
        raise ValueError(f"adapter {name!r}: inconsistent NICE invertible adapter shapes")
    return nice


def _parse_lora(state: StateDict, cfg: Any) -> AdapterWeights:
    from adapters.configuration.adapter_config import MTLLoRAConfig

    pairs: dict[tuple[str, int], dict[str, Tensor]] = {}
    names: set[str] = set()
    leftover: list[str] = []
    for key, value in state.items():
        if match := _LORA_KEY.search(key):
            layer, module, name, which = match.groups()
            pairs.setdefault((_LORA_MODULES[module], int(layer)), {})[which] = value
            names.add(name)
        else:
            leftover.append(key)
    if leftover:
        raise _unrecognised(leftover)
    name = _single_name(names, "LoRA")
    if isinstance(cfg, MTLLoRAConfig):
        raise ValueError(f"adapter {name!r}: multi-task LoRA is not supported ({_SUPPORTED})")
    _check_settings(name, cfg, _LORA_REQUIRED)
    scaling = cfg["alpha"] / cfg["r"]
    lora: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
    hidden: int | None = None
    for (matrix, layer), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ValueError(f"adapter {name!r} layer {layer} {matrix}: needs both lora_A and lora_B")
        rank, hid = pair["A"].shape
        if pair["B"].shape != (hid, rank) or (hidden is not None and hid != hidden):
            raise ValueError(f"adapter {name!r} layer {layer} {matrix}: inconsistent LoRA shapes")
        hidden = hid
        lora[(matrix, layer)] = (_own(pair["A"]).t().contiguous(), _own(pair["B"]).t().contiguous() * scaling)
    if hidden is None:
        raise ValueError(f"adapter {name!r} has no weights")
    return AdapterWeights(name, "lora", hidden, None, {}, lora, None)


def _as_weights(state: AdapterWeights | StateDict | None, config: Any, role: str) -> AdapterWeights | None:
    if state is None:
        return None
    if isinstance(state, AdapterWeights):
        return state
    if config is None:
        raise ValueError(f"the {role} adapter's state dict came without its config")
    return AdapterWeights.from_state_dict(state, config)


class AdapterBank:
    """The weights of N adapter stacks in padded tensors with a leading stack axis; row b of a batch uses stack b's.

    Layout (see `BankLayout.tensor_axes`; N stacks, K slots, L layers, H hidden, weights ``[in, out]``):
    ``bn_down_w [N,K,L,H,R]``, ``bn_down_b [N,K,L,R]``, ``bn_up_w [N,K,L,R,H]``, ``bn_up_b [N,K,L,H]`` for the
    bottleneck of stack position k at layer l; ``lora_{q,v}_a [N,L,H,r]``, ``lora_{q,v}_b [N,L,r,H]`` for the stack's
    folded LoRA chain (scaling in b); ``inv_{f,g}_*`` for the stack's NICE block. Zeros everywhere mean "no adapter":
    index 0 stays all zero. Two levels of API, as vLLM's LoRA slots: `set` / `reset` write or clear one index;
    `add_stack` / `remove` manage keys on top of them. Tensors grow (capacity doubles, ranks widen) when needed, so
    call `tensors()` again after a change.
    """

    def __init__(
        self,
        layout: BankLayout,
        *,
        capacity: int = 8,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.layout = layout
        self.dtype = dtype
        self.device = torch.device(device or "cpu")
        self._ranks = {"bn_rank": 1, "lora_rank": 1, "inv_f_rank": 1, "inv_g_rank": 1}
        self._capacity = 0
        self._tensors: dict[str, Tensor] = {}
        self._index: dict[Hashable, int] = {}
        self._resize(max(2, capacity), self._ranks)

    @classmethod
    def for_model(cls, model: nn.Module, **kwargs: Any) -> AdapterBank:
        """An empty bank shaped for a transformers encoder; keyword arguments go to `BankLayout` or the bank."""
        layout_keys = {"slots", "lora_matrices", "non_linearity"}
        layout_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in layout_keys}
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(f"{type(model).__name__} has no transformers config")
        return cls(BankLayout.from_model_config(config, **layout_kwargs), **kwargs)

    @property
    def capacity(self) -> int:
        """How many stack indices the tensors hold now (index 0 included)."""
        return self._capacity

    @property
    def nbytes(self) -> int:
        """Bytes held by the bank tensors."""
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def tensors(self) -> dict[str, Tensor]:
        """The bank tensors by name, in `BankLayout.tensor_names` order: the live storage, not copies."""
        return dict(self._tensors)

    def keys(self) -> list[Hashable]:
        """The keys of the stacks added with `add_stack`, in index order."""
        return sorted(self._index, key=self._index.__getitem__)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def index_of(self, key: Hashable) -> int:
        """The stack index of `key`; rows that should use that stack pass it in ``stack_index``."""
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"no stack {key!r} in the bank; it holds {self.keys()}") from None

    def add_stack(
        self,
        key: Hashable,
        lang_state: AdapterWeights | StateDict | None,
        lang_config: Any,
        task_state: AdapterWeights | StateDict | None,
        task_config: Any = None,
    ) -> int:
        """Store the stack (language adapter or None, task adapter) under `key` at the lowest free index; return it."""
        members = [
            _as_weights(lang_state, lang_config, "language"),
            _as_weights(task_state, task_config, "task"),
        ]
        return self.add_members(key, members)

    def add_members(self, key: Hashable, members: Sequence[AdapterWeights | None]) -> int:
        """Store a stack given as its adapters in stack order (None for an empty position) under `key`."""
        if key in self._index:
            raise ValueError(f"stack {key!r} is already at index {self._index[key]}; remove it first or set() it")
        self._check_members(members)
        used = set(self._index.values())
        index = next((i for i in range(1, self._capacity) if i not in used), self._capacity)
        if index >= self._capacity:
            self._resize(self._capacity * 2, self._ranks)
        self.set_members(index, members)
        self._index[key] = index
        return index

    def remove(self, key: Hashable) -> int:
        """Forget `key` and zero its index (rows that still point there see the bare base); return the index."""
        index = self.index_of(key)
        self.reset(index)
        del self._index[key]
        return index

    def set(
        self,
        index: int,
        lang_state: AdapterWeights | StateDict | None,
        lang_config: Any,
        task_state: AdapterWeights | StateDict | None,
        task_config: Any = None,
    ) -> None:
        """Write the stack (language adapter or None, task adapter) into `index`, replacing what was there."""
        members = [
            _as_weights(lang_state, lang_config, "language"),
            _as_weights(task_state, task_config, "task"),
        ]
        self.set_members(index, members)

    def set_members(self, index: int, members: Sequence[AdapterWeights | None]) -> None:
        """Write a stack given as its adapters in stack order into `index`; nothing is written if it is refused."""
        self._check_index(index)
        self._check_members(members)
        members = list(members) + [None] * (self.layout.slots - len(members))
        loras = self._fold_loras(members)
        first = next((m for m in members if m is not None), None)
        nice = first.invertible if first is not None else None

        ranks = dict(self._ranks)
        for member in members:
            for down_w, *_ in member.bottleneck.values() if member is not None else ():
                ranks["bn_rank"] = max(ranks["bn_rank"], down_w.shape[1])
        for a, _ in loras.values():
            ranks["lora_rank"] = max(ranks["lora_rank"], a.shape[1])
        if nice is not None:
            ranks["inv_f_rank"] = max(ranks["inv_f_rank"], nice.f_down_w.shape[1])
            ranks["inv_g_rank"] = max(ranks["inv_g_rank"], nice.g_down_w.shape[1])
        if ranks != self._ranks:
            self._resize(self._capacity, ranks)

        self.reset(index)
        t = self._tensors
        for slot, member in enumerate(members):
            if member is None:
                continue
            for layer, (down_w, down_b, up_w, up_b) in member.bottleneck.items():
                r = down_w.shape[1]
                t["bn_down_w"][index, slot, layer, :, :r] = down_w
                t["bn_down_b"][index, slot, layer, :r] = down_b
                t["bn_up_w"][index, slot, layer, :r, :] = up_w
                t["bn_up_b"][index, slot, layer, :] = up_b
        for (matrix, layer), (a, b) in loras.items():
            r = a.shape[1]
            t[f"lora_{matrix}_a"][index, layer, :, :r] = a
            t[f"lora_{matrix}_b"][index, layer, :r, :] = b
        if nice is not None:
            for net in ("f", "g"):
                down_w = getattr(nice, f"{net}_down_w")
                r = down_w.shape[1]
                t[f"inv_{net}_down_w"][index, :, :r] = down_w
                t[f"inv_{net}_down_b"][index, :r] = getattr(nice, f"{net}_down_b")
                t[f"inv_{net}_up_w"][index, :r, :] = getattr(nice, f"{net}_up_w")
                t[f"inv_{net}_up_b"][index, :] = getattr(nice, f"{net}_up_b")

    def reset(self, index: int) -> None:
        """Zero `index`, so rows that point there see the bare base; its key, if any, stays registered."""
        self._check_index(index)
        for tensor in self._tensors.values():
            tensor[index].zero_()

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a stack index is an int, got {type(index).__name__}")
        if index == BARE_INDEX:
            raise ValueError(f"index {BARE_INDEX} is the bare base model and stays empty; use an index ≥ 1")
        if not 0 < index < self._capacity:
            raise IndexError(f"stack index {index} is outside the bank (capacity {self._capacity})")

    def _check_members(self, members: Sequence[AdapterWeights | None]) -> None:
        layout = self.layout
        if len(members) > layout.slots:
            raise ValueError(f"a stack of {len(members)} adapters does not fit the bank's {layout.slots} slots")
        for member in members:
            if member is None:
                continue
            if member.hidden_size != layout.hidden_size:
                raise ValueError(
                    f"adapter {member.name!r} has hidden size {member.hidden_size}, the bank {layout.hidden_size}: "
                    "it was trained on a different base model"
                )
            if member.layers and max(member.layers) >= layout.num_layers:
                raise ValueError(
                    f"adapter {member.name!r} has weights for layer {max(member.layers)}, "
                    f"the bank only {layout.num_layers} layers"
                )
            extra = {matrix for matrix, _ in member.lora} - set(layout.lora_matrices)
            if extra:
                raise ValueError(
                    f"adapter {member.name!r} adapts attention matrices {sorted(extra)} the bank has no room for; "
                    f"build the bank with lora_matrices including them (now {layout.lora_matrices})"
                )
            if member.kind == "bottleneck" and member.non_linearity != layout.non_linearity:
                raise ValueError(
                    f"adapter {member.name!r} uses {member.non_linearity!r}, the bank {layout.non_linearity!r}: "
                    "one bank serves one bottleneck activation"
                )

    def _fold_loras(self, members: Sequence[AdapterWeights | None]) -> dict[tuple[str, int], tuple[Tensor, Tensor]]:
        """Each (matrix, layer)'s LoRA chain folded in stack order into one pair: ``s2 B2 A2 (s1 B1 A1 x) = x a b``."""
        folded: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
        for member in members:
            if member is None:
                continue
            for where, (a, b) in member.lora.items():
                if where in folded:
                    first_a, first_b = folded[where]
                    folded[where] = (first_a, first_b @ a @ b)
                else:
                    folded[where] = (a, b)
        return folded

    def _resize(self, capacity: int, ranks: Mapping[str, int]) -> None:
        """Reallocate every tensor at a new capacity and ranks, keeping the stored weights (zero-padded)."""
        grown: dict[str, Tensor] = {}
        for name in self.layout.tensor_names():
            shape = self.layout._shape(name, capacity, ranks)
            new = torch.zeros(shape, dtype=self.dtype, device=self.device)
            old = self._tensors.get(name)
            if old is not None:
                new[tuple(slice(0, n) for n in old.shape)] = old
            grown[name] = new
        self._tensors = grown
        self._capacity = capacity
        self._ranks = dict(ranks)


def _rows(tensor: Tensor, leading: int, index: Tensor) -> Tensor:
    """``tensor`` with its first `leading` axes flattened into one, then the rows at `index` (one Gather)."""
    return torch.index_select(tensor.flatten(0, leading - 1), 0, index)


def embed_tokens(embeddings: Any, input_ids: Tensor, padding_idx: int | None) -> Tensor:
    """The BERT/XLM-R embeddings module's computation (token type 0), without its forward hooks.

    XLM-R (RoBERTa) numbers positions from `padding_idx + 1` and skips padding; BERT (no `padding_idx`) counts
    from 0.
    """
    if padding_idx is not None:
        real = input_ids.ne(padding_idx).int()
        positions = (torch.cumsum(real, dim=1).type_as(real) * real).long() + padding_idx
    else:
        positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
    x = functional.embedding(input_ids, embeddings.word_embeddings.weight) + embeddings.token_type_embeddings.weight[0]
    x = x + functional.embedding(positions, embeddings.position_embeddings.weight)
    return embeddings.LayerNorm(x)


class BankedEncoder(nn.Module):
    """A BERT or XLM-R encoder that applies, to each row of a batch, the adapter stack its ``stack_index`` selects.

    It reuses the wrapped model's modules and weights (nothing is copied) and calls none of the `adapters` hooks, so
    the model may have adapters loaded: only the bank tensors passed to `forward` decide what each row sees. Eval
    only (no dropout); attention eager in the model's dtype with BERT's additive mask.
    """

    base: Any  # the wrapped transformers BertModel / XLMRobertaModel (its modules are typed loosely there too)

    def __init__(self, model: nn.Module, layout: BankLayout | None = None) -> None:
        super().__init__()
        base: Any = getattr(model, "base_model", model)
        embeddings = getattr(base, "embeddings", None)
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if embeddings is None or layers is None:
            raise TypeError(
                f"{type(model).__name__} is not a BERT- or XLM-R-style encoder (embeddings + encoder.layer)"
            )
        config = base.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not supported")
        if getattr(config, "is_decoder", False):
            raise ValueError("decoder configurations are not supported; the bank serves encoders")
        self.base = base
        self.layout = layout or BankLayout.from_model_config(config)
        if (self.layout.num_layers, self.layout.hidden_size) != (len(layers), config.hidden_size):
            raise ValueError(
                f"bank layout {self.layout.num_layers} layers × {self.layout.hidden_size} does not fit the model "
                f"({len(layers)} layers × {config.hidden_size})"
            )
        self.activation = _activation(self.layout.non_linearity)
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        # XLM-R (RoBERTa) numbers positions from padding_idx + 1 and skips padding; BERT counts from 0.
        self.padding_idx: int | None = getattr(embeddings, "padding_idx", None)

    @property
    def input_names(self) -> list[str]:
        """The forward inputs in order: token ids, mask, per-row stack index, then the bank tensors."""
        return ["input_ids", "attention_mask", "stack_index", *self.layout.tensor_names()]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """`torch.onnx.export` dynamic axes: batch and sequence, and the bank's stack count and padded ranks."""
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "stack_index": {0: "batch"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
        }
        for name, names in self.layout.tensor_axes().items():
            axes[name] = {i: a for i, a in enumerate(names) if a == "stacks" or a.endswith("_rank")}
        return axes

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, *bank_args: Tensor, **bank_kwargs: Tensor
    ) -> Tensor:
        """Last hidden states ``[B, T, H]``; row b uses the adapters of stack ``stack_index[b]``.

        The bank tensors come by name (``**bank.tensors()``) or in `BankLayout.tensor_names` order after
        ``stack_index``; `torch.onnx.export` (TorchScript) needs the positional form, as it drops ``**kwargs``.
        """
        layout = self.layout
        names = layout.tensor_names()
        if len(bank_args) > len(names):
            raise TypeError(f"{len(bank_args)} positional bank tensors given, the layout has {len(names)}")
        bank = {**dict(zip(names[: len(bank_args)], bank_args, strict=True)), **bank_kwargs}
        missing = [n for n in names if n not in bank]
        unexpected = sorted(set(bank) - set(names))
        if missing or unexpected or len(bank_args) + len(bank_kwargs) != len(names):
            raise TypeError(f"bank tensors missing {missing}, unexpected {unexpected} (or given twice)")
        stack_index = stack_index.to(torch.long)
        hidden = embed_tokens(self.base.embeddings, input_ids, self.padding_idx)
        hidden = self._invertible(hidden, stack_index, bank)
        dtype = hidden.dtype
        mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        bn_base = stack_index * (layout.slots * layout.num_layers)
        lora_base = stack_index * layout.num_layers
        for i, layer in enumerate(self.base.encoder.layer):
            hidden = self._layer(i, layer, hidden, mask, bn_base, lora_base, bank)
        return hidden

    def _invertible(self, x: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]) -> Tensor:
        """Each row's NICE coupling block: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``; all-zero for the identity."""
        h1, _ = self.layout.split
        x1, x2 = x[..., :h1], x[..., h1:]
        y1 = x1 + self._mlp(x2, "inv_f", stack_index, bank)
        y2 = x2 + self._mlp(y1, "inv_g", stack_index, bank)
        return torch.cat((y1, y2), dim=-1)

    def _mlp(self, x: Tensor, prefix: str, stack_index: Tensor, bank: Mapping[str, Tensor]) -> Tensor:
        down_w = _rows(bank[f"{prefix}_down_w"], 1, stack_index)
        down_b = _rows(bank[f"{prefix}_down_b"], 1, stack_index)
        up_w = _rows(bank[f"{prefix}_up_w"], 1, stack_index)
        up_b = _rows(bank[f"{prefix}_up_b"], 1, stack_index)
        inner = self.activation(torch.matmul(x, down_w) + down_b.unsqueeze(1))
        return torch.matmul(inner, up_w) + up_b.unsqueeze(1)

    def _lora(self, out: Tensor, x: Tensor, matrix: str, rows: Tensor, bank: Mapping[str, Tensor]) -> Tensor:
        if matrix not in self.layout.lora_matrices:
            return out
        a = _rows(bank[f"lora_{matrix}_a"], 2, rows)
        b = _rows(bank[f"lora_{matrix}_b"], 2, rows)
        return out + torch.matmul(torch.matmul(x, a), b)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)

    def _layer(
        self,
        i: int,
        layer: Any,
        x: Tensor,
        mask: Tensor,
        bn_base: Tensor,
        lora_base: Tensor,
        bank: Mapping[str, Tensor],
    ) -> Tensor:
        """One transformer layer: LoRA on attention matrices, then the bottleneck slots at the FFN output."""
        attention = layer.attention
        sa = attention.self
        lora_rows = lora_base + i
        q = self._lora(functional.linear(x, sa.query.weight, sa.query.bias), x, "q", lora_rows, bank)
        k = self._lora(functional.linear(x, sa.key.weight, sa.key.bias), x, "k", lora_rows, bank)
        v = self._lora(functional.linear(x, sa.value.weight, sa.value.bias), x, "v", lora_rows, bank)
        scores = torch.matmul(self._heads(q), self._heads(k).transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = torch.softmax(scores + mask, dim=-1)
        context = torch.matmul(probs, self._heads(v)).transpose(1, 2).flatten(2)
        so = attention.output
        attended = so.LayerNorm(functional.linear(context, so.dense.weight, so.dense.bias) + x)

        inter = layer.intermediate
        ffn = inter.intermediate_act_fn(functional.linear(attended, inter.dense.weight, inter.dense.bias))
        out = layer.output
        h = functional.linear(ffn, out.dense.weight, out.dense.bias)
        layers = self.layout.num_layers
        for slot in range(self.layout.slots):
            rows = bn_base + (slot * layers + i)
            down_w = _rows(bank["bn_down_w"], 3, rows)
            down_b = _rows(bank["bn_down_b"], 3, rows)
            up_w = _rows(bank["bn_up_w"], 3, rows)
            up_b = _rows(bank["bn_up_b"], 3, rows)
            normed = out.LayerNorm(h + attended)
            inner = self.activation(torch.matmul(normed, down_w) + down_b.unsqueeze(1))
            h = h + (torch.matmul(inner, up_w) + up_b.unsqueeze(1))
        return out.LayerNorm(h + attended)
