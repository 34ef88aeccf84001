"""Prediction heads rebuilt from an `adapters` head folder, applied to encoder hidden states outside the model.

The swappable ONNX graph and the per-row torch backend return hidden states for a batch that mixes stacks; the
small per-task heads run afterwards, per group of rows. A head is the `adapters` library's `PredictionHead`: a
stack of Linear layers with an activation between them, reading the first token (classification) or every
token (tagging). Dropout is omitted: heads here only run for inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from langadapt.errors import StoreError
from langadapt.models.kinds import HEAD_CONFIG, HEAD_TYPES, HEAD_WEIGHTS, LABEL_HEAD_TYPES

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "swish": torch.nn.functional.silu,
    "silu": torch.nn.functional.silu,
}


@dataclass
class Head:
    """One task head: its type, ordered labels, and the (weight, bias) of each Linear layer in order."""

    head_type: str
    labels: list[str]
    layers: list[tuple[torch.Tensor, torch.Tensor | None]]
    activation: str | None = "tanh"

    @property
    def num_labels(self) -> int:
        """How many labels the head scores."""
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """Bytes held by the head's weights."""
        return sum(
            w.numel() * w.element_size() + (0 if b is None else b.numel() * b.element_size()) for w, b in self.layers
        )

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype = torch.float32) -> Head:
        """Read `head_config.json` and `model_head.safetensors` written by `save_adapter(..., use_safetensors=True)`."""
        config_path, weights_path = folder / HEAD_CONFIG, folder / HEAD_WEIGHTS
        if not config_path.is_file() or not weights_path.is_file():
            raise StoreError(
                f"{folder} has no prediction head ({HEAD_CONFIG} + {HEAD_WEIGHTS})",
                "save task adapters with `save_adapter(dir, name, with_head=True, use_safetensors=True)`",
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return cls.from_state_dict(config["config"], load_file(weights_path), dtype=dtype)

    @classmethod
    def from_state_dict(cls, config: dict, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Head:
        """Build a head from its `adapters` head config and a state dict keyed `heads.<name>.<index>.weight`."""
        head_type = config.get("head_type")
        if head_type not in LABEL_HEAD_TYPES:
            raise StoreError(
                f"unsupported head type {head_type!r}", f"supported head types: {', '.join(LABEL_HEAD_TYPES)}"
            )
        if config.get("use_pooler"):
            raise StoreError("heads that read the pooler output are not supported", "train with use_pooler=False")
        label2id: dict[str, int] = config.get("label2id") or {f"LABEL_{i}": i for i in range(config["num_labels"])}
        labels = [label for label, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
        by_index: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            parts = key.split(".")
            by_index.setdefault(int(parts[-2]), {})[parts[-1]] = tensor.to(dtype)
        layers = [(by_index[i]["weight"], by_index[i].get("bias")) for i in sorted(by_index)]
        if len(layers) != int(config["layers"]):
            raise StoreError(f"head config says {config['layers']} layers but the weights hold {len(layers)}")
        if layers[-1][0].shape[0] != len(labels):
            raise StoreError(f"head scores {layers[-1][0].shape[0]} labels but its config lists {len(labels)}")
        activation = config.get("activation_function")
        if activation and activation not in ACTIVATIONS:
            raise StoreError(f"unsupported head activation {activation!r}", f"supported: {', '.join(ACTIVATIONS)}")
        return cls(head_type, labels, layers, activation)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits: `[B, C]` from the first token for classification, `[B, T, C]` for tagging."""
        x = hidden if HEAD_TYPES[self.head_type].per_token else hidden[:, 0]
        act = ACTIVATIONS[self.activation] if self.activation else None
        for i, (weight, bias) in enumerate(self.layers):
            x = torch.nn.functional.linear(x.to(weight.dtype), weight, bias)
            if i < len(self.layers) - 1 and act is not None:
                x = act(x)
        return x
