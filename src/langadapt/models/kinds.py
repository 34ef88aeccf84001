"""The one registry of what stored models are made of: head types, tasks, adapter kinds, artifact kinds, file names.

One registration call per entry; every other list of tasks, head types, adapter kinds, bank kinds, artifact kinds
or backends in the package is derived from these. Adapter kinds carry the defaults of "Small Models, Big Impact"
(arXiv 2502.10140). Importing this module is cheap (no torch, no `adapters`): the `adapters` config classes are
looked up by name when a config is first built, so the manifest, the store and the CLI can read the registry.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters import AdapterConfig
    from transformers import PretrainedConfig

__all__ = [
    "ADAPTER_ARTIFACT",
    "ADAPTER_CONFIG",
    "ADAPTER_KINDS",
    "ADAPTER_WEIGHTS",
    "ARTIFACT_KINDS",
    "AUTO_BACKEND",
    "BACKENDS",
    "BANK_KINDS",
    "CLASSIFICATION",
    "DEFAULT_KIND",
    "FULL_KIND",
    "FULL_MODEL_WEIGHTS",
    "FUSED_ARTIFACT",
    "GRAPH_FILE",
    "HEAD_CONFIG",
    "HEAD_TYPES",
    "HEAD_WEIGHTS",
    "LABEL_HEAD_TYPES",
    "LANGUAGE_ID",
    "LANGUAGE_TASK",
    "LID_CONFIG",
    "LID_KIND",
    "LID_TASK",
    "LID_WEIGHTS",
    "MANIFEST_FILE",
    "MASKED_LM",
    "MODEL_ARTIFACT",
    "MODEL_KINDS",
    "SERVED_TASKS",
    "SWAPPABLE_ARTIFACT",
    "TAGGING",
    "TASKS",
    "TASK_HEAD_TYPES",
    "TORCH_BACKEND",
    "AdapterKind",
    "ArtifactKind",
    "HeadType",
    "Task",
    "count_parameters",
    "get_kind",
    "get_task",
    "register_artifact",
    "register_head_type",
    "register_kind",
    "register_task",
]

# ------------------------------------------------------------------------------------------------ file names
# What a stored version folder holds, as `save_adapter(..., use_safetensors=True)` and the exporters write it.
MANIFEST_FILE = "manifest.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
HEAD_WEIGHTS = "model_head.safetensors"
HEAD_CONFIG = "head_config.json"
FULL_MODEL_WEIGHTS = "model.safetensors"  # a fully fine-tuned encoder (kind `full`)
GRAPH_FILE = "model.onnx"  # an ONNX artifact's graph
LID_CONFIG = "lid_config.json"  # the language-ID head (task `lid`): labels, threshold, length calibration
LID_WEIGHTS = "lid_head.safetensors"  # its linear layer


def _register(registry: dict[str, Any], what: str, entry: Any) -> Any:
    """Add `entry` under its name; a name may be registered once."""
    if entry.name in registry:
        raise ValueError(f"{what} {entry.name!r} is already registered")
    registry[entry.name] = entry
    return entry


def _lookup(registry: Mapping[str, Any], what: str, name: str) -> Any:
    """The entry called `name` (case and `-`/`_` ignored), or ValueError listing the registered names."""
    key = name.strip().lower().replace("-", "_")
    if key not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return registry[key]


# ------------------------------------------------------------------------------------------------ head types
@dataclass(frozen=True)
class HeadType:
    """What a prediction head reads and predicts."""

    name: str = field(metadata={"help": "registry key, as stored in manifests and head configs"})
    help: str = field(metadata={"help": "one line for humans"})
    per_token: bool = field(metadata={"help": "one prediction per token (else one per text, from the first token)"})


HEAD_TYPES: dict[str, HeadType] = {}


def register_head_type(name: str, *, per_token: bool, help: str) -> HeadType:
    """Add a head type to HEAD_TYPES; a name may be registered once."""
    return _register(HEAD_TYPES, "head type", HeadType(name=name, help=help, per_token=per_token))


CLASSIFICATION = register_head_type(
    "classification", per_token=False, help="two layers on the first token: one label per text"
).name
TAGGING = register_head_type(
    "tagging", per_token=True, help="one linear layer per token: one label per word (its first sub-token)"
).name
MASKED_LM = register_head_type(
    "masked_lm", per_token=True, help="the base's masked-LM head: trains language adapters, labels nothing"
).name
LANGUAGE_ID = register_head_type(
    "language_id",
    per_token=False,
    help="one linear layer over the mean of a text's input embeddings (no encoder layer): the text's language",
).name


# ------------------------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class Task:
    """A task an adapter is trained for: its head, whether clients can ask for it, how checkpoints are chosen."""

    name: str = field(metadata={"help": "registry key, as stored in manifests and routed by (`/v1/<task>`)"})
    help: str = field(metadata={"help": "one line for humans"})
    head_type: str = field(metadata={"help": "a registered head type"})
    served: bool = field(
        metadata={"help": "labels text for clients (HTTP, `langadapt label`); else it helps those that do"}
    )
    selection_metric: str | None = field(
        metadata={"help": "the validation figure (higher is better) that picks the best checkpoint; None for none"}
    )


TASKS: dict[str, Task] = {}


def register_task(name: str, *, head_type: str, served: bool, selection_metric: str | None, help: str) -> Task:
    """Add a task to TASKS; a name may be registered once, with a registered head type."""
    if head_type not in HEAD_TYPES:
        raise ValueError(f"task {name!r}: unknown head type {head_type!r}; choose one of: {', '.join(HEAD_TYPES)}")
    task = Task(name=name, help=help, head_type=head_type, served=served, selection_metric=selection_metric)
    return _register(TASKS, "task", task)


# Registration order is the order tasks are listed in (`--tasks` defaults, error messages, `available`).
register_task("ner", head_type=TAGGING, served=True, selection_metric="f1", help="named entities, seqeval entity F1")
register_task(
    "sentiment", head_type=CLASSIFICATION, served=True, selection_metric="macro_f1", help="sentiment, macro-F1"
)
register_task(
    "topic", head_type=CLASSIFICATION, served=True, selection_metric="macro_f1", help="topic (SIB-200), macro-F1"
)
LANGUAGE_TASK = register_task(
    "mlm", head_type=MASKED_LM, served=False, selection_metric=None, help="masked language modelling: language adapters"
).name
LID_TASK = register_task(  # one head for every language; `lang: "auto"` routes each text by it
    "lid",
    head_type=LANGUAGE_ID,
    served=False,
    selection_metric="accuracy",
    help='language identification for lang "auto" (SIB-200), accuracy',
).name


def get_task(name: str) -> Task:
    """The registered task called `name` (case ignored), or ValueError listing the tasks."""
    return _lookup(TASKS, "task", name)


SERVED_TASKS: tuple[str, ...] = tuple(t.name for t in TASKS.values() if t.served)
# The head each served task's adapter carries: {task: head type}.
TASK_HEAD_TYPES: Mapping[str, str] = MappingProxyType({t: TASKS[t].head_type for t in SERVED_TASKS})
# Head types that predict a task's labels: what `models.heads.Head` reads, export traces and inference decodes.
LABEL_HEAD_TYPES: tuple[str, ...] = tuple(h for h in HEAD_TYPES if any(TASKS[t].head_type == h for t in SERVED_TASKS))


# ------------------------------------------------------------------------------------------------ adapter kinds
# Config fields that say which method a config is, not how it is set: never overridden.
_NOT_OVERRIDABLE = frozenset({"architecture"})


@functools.cache
def _adapters_config_class(name: str) -> type[AdapterConfig]:
    """The `adapters` config class called `name` (imports the `adapters` library on first use)."""
    config_class: type[AdapterConfig] = getattr(importlib.import_module("adapters"), name)
    return config_class


@dataclass(frozen=True)
class AdapterKind:
    """One adapter method: the `adapters` config class that builds it and the paper's values for it."""

    name: str = field(metadata={"help": "registry key, as stored in manifests and given on the command line"})
    help: str = field(metadata={"help": "one line for humans: what the method is and its defaults"})
    config: str = field(metadata={"help": "name of the `adapters` config class, e.g. `SeqBnConfig`"})
    defaults: Mapping[str, Any] = field(
        default_factory=dict, hash=False, metadata={"help": "the paper's values; any config field"}
    )
    banked: bool = field(
        default=True, metadata={"help": "the adapter bank computes it (per-row torch backend, swappable graph)"}
    )

    def __post_init__(self) -> None:
        """Freeze the defaults (they are checked against the config class when a config is first built)."""
        object.__setattr__(self, "defaults", MappingProxyType(copy.deepcopy(dict(self.defaults))))

    @property
    def config_class(self) -> type[AdapterConfig]:
        """The `adapters` config class."""
        return _adapters_config_class(self.config)

    @property
    def valid_keys(self) -> frozenset[str]:
        """The config fields a default or an override may set."""
        return frozenset(f.name for f in dataclasses.fields(self.config_class)) - _NOT_OVERRIDABLE

    def build_config(self, **overrides: Any) -> AdapterConfig:
        """The `adapters` config for this kind: the paper's defaults, then `overrides`."""
        self._check_keys(self.defaults, "default")
        self._check_keys(overrides, "override")
        return self.config_class(**{**copy.deepcopy(dict(self.defaults)), **overrides})

    def _check_keys(self, values: Mapping[str, Any], what: str) -> None:
        """ValueError naming the valid keys if `values` sets a field the config class does not have."""
        unknown = sorted(set(values) - self.valid_keys)
        if unknown:
            raise ValueError(
                f"unknown {self.name} {what} {', '.join(map(repr, unknown))} for {self.config}; "
                f"valid keys: {', '.join(sorted(self.valid_keys))}"
            )


ADAPTER_KINDS: dict[str, AdapterKind] = {}


def register_kind(
    name: str, *, config: str, defaults: Mapping[str, Any], help: str, banked: bool = True
) -> AdapterKind:
    """Add an adapter kind to ADAPTER_KINDS; a name may be registered once."""
    kind = AdapterKind(name=name, help=help, config=config, defaults=defaults, banked=banked)
    return _register(ADAPTER_KINDS, "adapter kind", kind)


DEFAULT_KIND = register_kind(  # the paper's task adapters, and the default for language adapters
    "seq_bn",
    config="SeqBnConfig",
    defaults={"reduction_factor": 16},
    help="sequential bottleneck after each layer's feed-forward block (Pfeiffer), reduction factor 16",
).name
register_kind(
    "seq_bn_inv",
    config="SeqBnInvConfig",
    defaults={"reduction_factor": 16, "inv_adapter": "nice", "inv_adapter_reduction_factor": 2},
    help="seq_bn plus an invertible (NICE) adapter on the embeddings, reduction factors 16 and 2",
)
register_kind(
    "lora",
    config="LoRAConfig",
    defaults={
        "r": 8,
        "alpha": 8,
        "selfattn_lora": True,
        "attn_matrices": ["q", "v"],
        "intermediate_lora": False,
        "output_lora": False,
    },
    help="low-rank updates to the attention query and value projections, r=8, alpha=8",
)


def get_kind(name: str) -> AdapterKind:
    """The registered kind called `name` (case and `-`/`_` ignored), or ValueError listing the kinds."""
    return _lookup(ADAPTER_KINDS, "adapter kind", name)


FULL_KIND = "full"  # a manifest `kind`: the whole encoder fine-tuned (no adapter), stored as FULL_MODEL_WEIGHTS
LID_KIND = "linear"  # a manifest `kind`: the language-ID head, a linear layer on the frozen base (no adapter)
MODEL_KINDS: tuple[str, ...] = (*ADAPTER_KINDS, FULL_KIND, LID_KIND)  # what a trained model's manifest `kind` may be
BANK_KINDS: tuple[str, ...] = tuple(k.name for k in ADAPTER_KINDS.values() if k.banked)


# ------------------------------------------------------------------------------------------------ artifact kinds
@dataclass(frozen=True)
class ArtifactKind:
    """What a stored version folder holds (a manifest's `artifact`), and the inference backend that serves it."""

    name: str = field(metadata={"help": "registry key, as stored in a manifest's `artifact`"})
    help: str = field(metadata={"help": "one line for humans"})
    backend: str | None = field(metadata={"help": "the `--backend` that serves it; None when nothing serves it"})


ARTIFACT_KINDS: dict[str, ArtifactKind] = {}


def register_artifact(name: str, *, backend: str | None, help: str) -> ArtifactKind:
    """Add an artifact kind to ARTIFACT_KINDS; a name may be registered once."""
    return _register(ARTIFACT_KINDS, "artifact kind", ArtifactKind(name=name, help=help, backend=backend))


TORCH_BACKEND = "torch"  # the ONNX backends are named after the artifact they serve
ADAPTER_ARTIFACT = register_artifact(
    "adapter", backend=TORCH_BACKEND, help="adapter weights (and head) as trained; applied per row on the torch base"
).name
MODEL_ARTIFACT = register_artifact("model", backend=None, help="a fully fine-tuned encoder and head").name
FUSED_ARTIFACT = register_artifact(
    "onnx-fused", backend="onnx-fused", help="one ONNX graph per stack, adapters merged or baked in"
).name
SWAPPABLE_ARTIFACT = register_artifact(
    "onnx-swappable", backend="onnx-swappable", help="one ONNX base graph; each row selects its adapters"
).name

AUTO_BACKEND = "auto"  # torch, with ONNX graphs built and used where they measure faster (inference/auto_backend.py)
BACKENDS: tuple[str, ...] = (AUTO_BACKEND, *(a.backend for a in ARTIFACT_KINDS.values() if a.backend is not None))


# ------------------------------------------------------------------------------------------------ parameter counts
_PARAMETER_COUNTS: dict[tuple[str, str, str], int] = {}
_COUNTING_ADAPTER = "langadapt_count"


def count_parameters(kind: str | AdapterKind, base_config: PretrainedConfig, **overrides: Any) -> int:
    """Trainable parameters one adapter of `kind` adds to a model with `base_config`, counted on meta tensors."""
    kind = kind if isinstance(kind, AdapterKind) else get_kind(kind)
    config = kind.build_config(**overrides)
    key = (
        kind.name,
        base_config.to_json_string(use_diff=False),
        json.dumps({"class": type(config).__name__, **config.to_dict()}, sort_keys=True, default=str),
    )
    if key not in _PARAMETER_COUNTS:
        _PARAMETER_COUNTS[key] = _count_on_meta(config, base_config)
    return _PARAMETER_COUNTS[key]


def _count_on_meta(config: AdapterConfig, base_config: PretrainedConfig) -> int:
    """Build the encoder without allocating weights, add the adapter, and sum its parameters."""
    import adapters
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(copy.deepcopy(base_config))
        adapters.init(model)
        model.add_adapter(_COUNTING_ADAPTER, config=config)
    summary = model.adapter_summary(as_dict=True)
    return next(int(row["#param"]) for row in summary if row["name"] == _COUNTING_ADAPTER)
