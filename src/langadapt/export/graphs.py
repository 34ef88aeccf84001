"""The torch modules that are traced to ONNX, and the one tracing call both export modes share.

`FusedModel` is one adapter stack baked into a BERT or XLM-R encoder plus its head: LoRA folded into the attention
weights (``W' = W + (a b)^T`` per layer, chains of LoRAs folded first, as `AdapterBank` folds them), each present
bottleneck applied with constant weights at the FFN output, the first adapter's NICE block on the embeddings. It
computes exactly what `BankedEncoder` computes for one stack (whose parity with `adapters.Stack` the bank's tests
prove), with plain matrix products instead of per-row gathers, and in the op pattern of Hugging Face's eager BERT
attention so ONNX Runtime's transformer optimiser recognises it. Tracing the `adapters` model itself was measured
and rejected: its traced graph bakes the attention-mask branch of the trace batch (max logit error 1.6 on a padded
batch), see docs/performance.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from langadapt.models.bank import AdapterBank, AdapterWeights, BankLayout, embed_tokens
from langadapt.models.heads import ACTIVATIONS, Head
from langadapt.models.kinds import HEAD_TYPES

__all__ = ["FUSED_INPUTS", "FUSED_OUTPUT", "OPSET", "SWAPPABLE_OUTPUT", "FusedModel", "fused_dynamic_axes", "trace"]

OPSET = 17  # LayerNormalization is a standard op from 17; every ONNX Runtime since 1.14 runs it
FUSED_INPUTS = ("input_ids", "attention_mask")
FUSED_OUTPUT = "logits"
SWAPPABLE_OUTPUT = "last_hidden_state"


def _activation(name: str | None) -> nn.Module:
    """The activation module the `adapters` library builds for a `non_linearity` name."""
    from adapters.methods.modeling import Activation_Function_Class

    return Activation_Function_Class(name.lower() if name else None)


def fused_dynamic_axes(head_type: str) -> dict[str, dict[int, str]]:
    """Dynamic batch and sequence axes of a fused graph; tagging logits keep the sequence axis."""
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in FUSED_INPUTS}
    axes[FUSED_OUTPUT] = {0: "batch", 1: "sequence"} if HEAD_TYPES[head_type].per_token else {0: "batch"}
    return axes


class _Bottleneck(nn.Module):
    """One Pfeiffer bottleneck with constant ``[in, out]`` weights, scaling folded into ``up``."""

    down_w: Tensor
    down_b: Tensor
    up_w: Tensor
    up_b: Tensor

    def __init__(self, weights: tuple[Tensor, Tensor, Tensor, Tensor], activation: nn.Module) -> None:
        super().__init__()
        down_w, down_b, up_w, up_b = weights
        self.register_buffer("down_w", down_w.clone())
        self.register_buffer("down_b", down_b.clone())
        self.register_buffer("up_w", up_w.clone())
        self.register_buffer("up_b", up_b.clone())
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """``up(act(down(x)))``, the residual branch of the adapter."""
        return torch.matmul(self.activation(torch.matmul(x, self.down_w) + self.down_b), self.up_w) + self.up_b


class FusedModel(nn.Module):
    """An encoder with one adapter stack baked in, and its head: ``(input_ids, attention_mask) -> logits``.

    ``members`` are the stack's adapters in `Stack` order (None for an empty position); the model's own modules
    and weights are reused, only the LoRA-merged attention matrices are new tensors. Eval only (no dropout).
    """

    base: Any  # the wrapped transformers BertModel / XLMRobertaModel

    def __init__(self, model: nn.Module, members: Sequence[AdapterWeights | None], head: Head) -> None:
        super().__init__()
        base: Any = getattr(model, "base_model", model)
        config = base.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not supported")
        self.base = base
        self.num_heads = int(config.num_attention_heads)
        self.head_size = int(config.hidden_size) // self.num_heads
        self.padding_idx: int | None = getattr(base.embeddings, "padding_idx", None)
        self.split = int(config.hidden_size) // 2  # the NICE split, as the library splits the hidden vector
        present = [m for m in members if m is not None]
        self.merged = self._merge_loras(config, members)
        layers = len(base.encoder.layer)
        self.bottlenecks = nn.ModuleList(
            nn.ModuleList(
                _Bottleneck(m.bottleneck[i], _activation(m.non_linearity)) for m in present if i in m.bottleneck
            )
            for i in range(layers)
        )
        first = present[0] if present else None
        self.nice: nn.ModuleList | None = None
        if first is not None and first.invertible is not None:
            nice, act = first.invertible, _activation(first.non_linearity)
            self.nice = nn.ModuleList(
                [
                    _Bottleneck((nice.f_down_w, nice.f_down_b, nice.f_up_w, nice.f_up_b), act),
                    _Bottleneck((nice.g_down_w, nice.g_down_b, nice.g_up_w, nice.g_up_b), act),
                ]
            )
        self.head_type = head.head_type
        self.head_activation = head.activation
        self.head_weights = nn.ParameterList(
            nn.Parameter(w.float().clone(), requires_grad=False) for w, _ in head.layers
        )
        self.head_biases = nn.ParameterList(
            nn.Parameter((b if b is not None else torch.zeros(w.shape[0])).float().clone(), requires_grad=False)
            for w, b in head.layers
        )

    def _merge_loras(self, config: Any, members: Sequence[AdapterWeights | None]) -> nn.ParameterDict:
        """Each LoRA-adapted attention weight with its (folded) update added: ``W + (a b)^T``, keyed ``q3``."""
        matrices = sorted({matrix for m in members if m is not None for matrix, _ in m.lora}, key="qkv".index)
        merged = nn.ParameterDict()
        if not matrices:
            return merged
        layout = BankLayout.from_model_config(config, slots=max(1, len(members)), lora_matrices=tuple(matrices))
        bank = AdapterBank(layout, capacity=2)
        bank.set_members(1, [m if m is None or m.lora else None for m in members])  # LoRA members only: fold chains
        tensors = bank.tensors()
        names = {"q": "query", "k": "key", "v": "value"}
        for matrix in matrices:
            for i, layer in enumerate(self.base.encoder.layer):
                a, b = tensors[f"lora_{matrix}_a"][1, i], tensors[f"lora_{matrix}_b"][1, i]
                if not bool(a.any()):
                    continue
                linear = getattr(layer.attention.self, names[matrix])
                delta = (a.double() @ b.double()).t()
                weight = (linear.weight.detach().double() + delta).to(linear.weight.dtype)
                merged[f"{matrix}{i}"] = nn.Parameter(weight, requires_grad=False)
        return merged

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[B, C]`` (classification, first token) or ``[B, T, C]`` (tagging)."""
        hidden = embed_tokens(self.base.embeddings, input_ids, self.padding_idx)
        if self.nice is not None:
            hidden = self._invertible(hidden)
        dtype = hidden.dtype
        extended = attention_mask[:, None, None, :].to(dtype)
        extended = (1.0 - extended) * torch.finfo(dtype).min
        for i, layer in enumerate(self.base.encoder.layer):
            hidden = self._layer(i, layer, hidden, extended)
        return self._head(hidden)

    def _invertible(self, x: Tensor) -> Tensor:
        """The NICE coupling block: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``."""
        assert self.nice is not None
        x1, x2 = x[..., : self.split], x[..., self.split :]
        y1 = x1 + self.nice[0](x2)
        y2 = x2 + self.nice[1](y1)
        return torch.cat((y1, y2), dim=-1)

    def _weight(self, matrix: str, i: int, linear: nn.Linear) -> Tensor:
        key = f"{matrix}{i}"
        return self.merged.get(key, linear.weight)

    def _split_heads(self, x: Tensor) -> Tensor:
        shape = (*x.size()[:-1], self.num_heads, self.head_size)
        return x.view(shape).permute(0, 2, 1, 3)

    def _layer(self, i: int, layer: Any, x: Tensor, extended: Tensor) -> Tensor:
        """One transformer layer (eager BERT attention pattern), then the stack's bottlenecks at the FFN output."""
        sa = layer.attention.self
        q = self._split_heads(functional.linear(x, self._weight("q", i, sa.query), sa.query.bias))
        k = self._split_heads(functional.linear(x, self._weight("k", i, sa.key), sa.key.bias))
        v = self._split_heads(functional.linear(x, self._weight("v", i, sa.value), sa.value.bias))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = functional.softmax(scores + extended, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        context = context.view((*context.size()[:-2], self.num_heads * self.head_size))
        so = layer.attention.output
        attended = so.LayerNorm(functional.linear(context, so.dense.weight, so.dense.bias) + x)
        inter = layer.intermediate
        ffn = inter.intermediate_act_fn(functional.linear(attended, inter.dense.weight, inter.dense.bias))
        out = layer.output
        h = functional.linear(ffn, out.dense.weight, out.dense.bias)
        adapters: Any = self.bottlenecks[i]
        for adapter in adapters:
            h = h + adapter(out.LayerNorm(h + attended))
        return out.LayerNorm(h + attended)

    def _head(self, hidden: Tensor) -> Tensor:
        """The `Head` computation: first token for classification, every token for tagging."""
        x = hidden if HEAD_TYPES[self.head_type].per_token else hidden[:, 0]
        act = ACTIVATIONS[self.head_activation] if self.head_activation else None
        last = len(self.head_weights) - 1
        for i, (weight, bias) in enumerate(zip(self.head_weights, self.head_biases, strict=True)):
            x = functional.linear(x, weight, bias)
            if i < last and act is not None:
                x = act(x)
        return x


def trace(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> Path:
    """Trace `module` on `args` into an ONNX file at `path` (TorchScript exporter, `OPSET`), weights inline."""
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter announces its own retirement and warns about traced shape arithmetic, which
        # the dynamic-shape tests cover.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            do_constant_folding=True,
        )
    return path
