"""A base model and tokenizer loaded once in a process that forks workers, for each worker to take copy-on-write.

Inference never writes the weights or the tokenizer's vocabulary, so forked workers keep sharing those pages:
N CPU workers hold one copy of the base, not N (`langadapt.serve.shared_base` loads it in the fork server).
"""

from __future__ import annotations

from typing import Any

import torch

from langadapt.models.base import BaseModelInfo, load_tokenizer, quiet_transformers

ENCODER = "encoder"
TOKENIZER = "tokenizer"

_SHARED: dict[tuple[str, str], Any] = {}  # (ENCODER or TOKENIZER, base path) -> the loaded object


def load_encoder(info: BaseModelInfo) -> Any:
    """The plain base encoder (fp32, eval mode, on the CPU)."""
    from transformers import AutoModel

    with quiet_transformers():
        return AutoModel.from_pretrained(str(info.path), local_files_only=True, dtype=torch.float32).eval()


def share_base(info: BaseModelInfo) -> None:
    """Load the base's encoder and tokenizer for the workers this process will fork."""
    _SHARED[(ENCODER, str(info.path))] = load_encoder(info)
    _SHARED[(TOKENIZER, str(info.path))] = load_tokenizer(info)


def take_shared(kind: str, info: BaseModelInfo) -> Any | None:
    """The shared `kind` (ENCODER or TOKENIZER) of this base, once: a second taker in one process loads its own."""
    return _SHARED.pop((kind, str(info.path)), None)
