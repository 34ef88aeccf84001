"""Adapter kinds: one registration per method, with the defaults of "Small Models, Big Impact" (arXiv 2502.10140)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import adapters
import torch
from adapters import AdapterConfig, LoRAConfig, SeqBnConfig, SeqBnInvConfig
from transformers import AutoModel, PretrainedConfig

__all__ = ["ADAPTER_KINDS", "AdapterKind", "count_parameters", "get_kind", "register_kind"]

# Config fields that say which method a config is, not how it is set: never overridden.
_NOT_OVERRIDABLE = frozenset({"architecture"})


@dataclass(frozen=True)
class AdapterKind:
    """One adapter method: the `adapters` config class that builds it and the paper's values for it."""

    name: str = field(metadata={"help": "registry key, as stored in manifests and given on the command line"})
    help: str = field(metadata={"help": "one line for humans: what the method is and its defaults"})
    config_class: type[AdapterConfig] = field(metadata={"help": "the `adapters` config class"})
    defaults: Mapping[str, Any] = field(
        default_factory=dict, hash=False, metadata={"help": "the paper's values; any config field"}
    )

    def __post_init__(self) -> None:
        """Refuse defaults the config class does not have, and freeze them."""
        self._check_keys(self.defaults, "default")
        object.__setattr__(self, "defaults", MappingProxyType(copy.deepcopy(dict(self.defaults))))

    @property
    def valid_keys(self) -> frozenset[str]:
        """The config fields a default or an override may set."""
        return frozenset(f.name for f in dataclasses.fields(self.config_class)) - _NOT_OVERRIDABLE

    def build_config(self, **overrides: Any) -> AdapterConfig:
        """The `adapters` config for this kind: the paper's defaults, then `overrides`."""
        self._check_keys(overrides, "override")
        return self.config_class(**{**copy.deepcopy(dict(self.defaults)), **overrides})

    def _check_keys(self, values: Mapping[str, Any], what: str) -> None:
        """ValueError naming the valid keys if `values` sets a field the config class does not have."""
        unknown = sorted(set(values) - self.valid_keys)
        if unknown:
            raise ValueError(
                f"unknown {self.name} {what} {', '.join(map(repr, unknown))} for {self.config_class.__name__}; "
                f"valid keys: {', '.join(sorted(self.valid_keys))}"
            )


ADAPTER_KINDS: dict[str, AdapterKind] = {}


def register_kind(
    name: str, *, config_class: type[AdapterConfig], defaults: Mapping[str, Any], help: str
) -> AdapterKind:
    """Add an adapter kind to ADAPTER_KINDS; a name may be registered once."""
    if name in ADAPTER_KINDS:
        raise ValueError(f"adapter kind {name!r} is already registered")
    kind = AdapterKind(name=name, help=help, config_class=config_class, defaults=defaults)
    ADAPTER_KINDS[name] = kind
    return kind


register_kind(
    "seq_bn",
    config_class=SeqBnConfig,
    defaults={"reduction_factor": 16},
    help="sequential bottleneck after each layer's feed-forward block (Pfeiffer), reduction factor 16",
)
register_kind(
    "seq_bn_inv",
    config_class=SeqBnInvConfig,
    defaults={"reduction_factor": 16, "inv_adapter": "nice", "inv_adapter_reduction_factor": 2},
    help="seq_bn plus an invertible (NICE) adapter on the embeddings, reduction factors 16 and 2",
)
register_kind(
    "lora",
    config_class=LoRAConfig,
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
    key = name.strip().lower().replace("-", "_")
    if key not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {name!r}; choose one of: {', '.join(ADAPTER_KINDS)}")
    return ADAPTER_KINDS[key]


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
    with torch.device("meta"):
        model = AutoModel.from_config(copy.deepcopy(base_config))
        adapters.init(model)
        model.add_adapter(_COUNTING_ADAPTER, config=config)
    summary = model.adapter_summary(as_dict=True)
    return next(int(row["#param"]) for row in summary if row["name"] == _COUNTING_ADAPTER)
