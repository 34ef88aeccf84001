"""The language-identification head on the shared base: a softmax over the mean of a text's sub-word embeddings.

What it reads is the base model's own input embedding matrix `E` (vocabulary × hidden): the mean of the rows of
a text's sub-words (special tokens left out), a bag of sub-words in the base's own space. e5 is trained to bring
translations together, so its upper layers say little about the language; its input embeddings say a lot (measured
on SIB-200 in docs/language-id.md). The head is linear, `logits = W · mean(E[ids]) + b`, so it also reads as a
table of per-sub-word scores `E Wᵀ` (vocabulary × languages): `LanguageIdHead.table` computes it once, and a text's
logits are then the mean of its sub-words' rows plus `b`, whatever backend holds the base model.

A mean says as much about a two-word text as about a paragraph, so the logits are then scaled by the text's length,
`scale · n^power` for n sub-words (two numbers fitted on dev by likelihood): short texts get soft probabilities,
long ones sharp, and one confidence threshold serves both.

Stored like any adapter (`task: lid`, labels = the canonical language codes in output order), in two files::

    lid_config.json         {"labels": [...], "features": "token_embeddings_mean", "threshold": 0.9, ...}
    lid_head.safetensors    weight [C, H] and bias [C], float32
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from langadapt.errors import StoreError
from langadapt.models.kinds import LID_CONFIG, LID_WEIGHTS

FEATURES = "token_embeddings_mean"  # the only feature this head format knows: mean of input embedding rows
WORD_START = "▁"  # SentencePiece's word-start piece


@dataclass
class LanguageIdHead:
    """Labels (canonical codes), the linear layer over mean sub-word embeddings, and the confidence threshold."""

    labels: list[str]
    weight: torch.Tensor  # [C, H]
    bias: torch.Tensor  # [C]
    threshold: float = 0.0  # the confidence below which a text's language is not given (chosen on dev)
    scale: float = 1.0  # length calibration: logits × scale · n^power for a text of n sub-words
    power: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.weight.shape[0] != len(self.labels) or self.bias.shape != (len(self.labels),):
            raise StoreError(
                f"language-ID head shapes {tuple(self.weight.shape)} / {tuple(self.bias.shape)} do not fit "
                f"{len(self.labels)} labels",
                "retrain it with `langadapt train lid`",
            )

    @property
    def hidden_size(self) -> int:
        """The width of the embeddings it reads."""
        return int(self.weight.shape[1])

    def save(self, folder: Path) -> None:
        """Write the two files into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "labels": self.labels,
            "features": FEATURES,
            "threshold": self.threshold,
            "scale": self.scale,
            "power": self.power,
            **self.extra,
        }
        (folder / LID_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tensors = {"weight": self.weight.float().contiguous(), "bias": self.bias.float().contiguous()}
        save_file(tensors, str(folder / LID_WEIGHTS))

    @classmethod
    def from_folder(cls, folder: Path) -> LanguageIdHead:
        """Read a head written by `save` (safetensors only)."""
        config_path, weights_path = folder / LID_CONFIG, folder / LID_WEIGHTS
        if not config_path.is_file() or not weights_path.is_file():
            raise StoreError(f"{folder} has no language-ID head ({LID_CONFIG} + {LID_WEIGHTS})", "publish one first")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("features") != FEATURES:
            raise StoreError(f"unknown language-ID features {config.get('features')!r}", f"expected {FEATURES!r}")
        tensors = load_file(str(weights_path))
        known = ("labels", "features", "threshold", "scale", "power")
        extra = {k: v for k, v in config.items() if k not in known}
        return cls(
            list(config["labels"]),
            tensors["weight"],
            tensors["bias"],
            float(config["threshold"]),
            float(config.get("scale", 1.0)),
            float(config.get("power", 0.0)),
            extra,
        )

    def calibrated(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Logits (`[N, C]`, from mean features) scaled by each text's sub-word count (`[N]`)."""
        return logits * (self.scale * counts.float().clamp(min=1.0).pow(self.power))[:, None]

    def table(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Per-sub-word scores `E Wᵀ` ([V, C], float32, on the CPU): a text's logits are the mean of its rows plus
        the bias. Computed where the embeddings are (a CUDA worker's base stays on its GPU); identifying a text is
        then a gather of a few rows on the CPU, where its token ids are."""
        if embeddings.shape[1] != self.hidden_size:
            raise StoreError(
                f"the language-ID head reads {self.hidden_size}-wide embeddings, the base has {embeddings.shape[1]}",
                "train a head on this base model with `langadapt train lid`",
            )
        with torch.inference_mode():
            return (embeddings.float() @ self.weight.to(embeddings.device, torch.float32).T).cpu()


def mean_rows(matrix: torch.Tensor, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """For each id list, the mean of `matrix`'s rows at those ids ([N, D]); an empty list gives zeros."""
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
    owners = torch.tensor([n for n, row in enumerate(ids) for _ in row], dtype=torch.long)
    sums = torch.zeros((len(ids), matrix.shape[1]), dtype=torch.float32)
    if len(flat):
        sums.index_add_(0, owners, matrix.index_select(0, flat).float())
    counts = torch.tensor([max(1, len(row)) for row in ids], dtype=torch.float32)
    return sums / counts[:, None]


def content_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's sub-word ids that say something about its language: no special tokens, no unknown piece and no
    bare word-start piece (`▁`, what spaces and unknown characters leave); the whole text, untruncated (embedding
    lookups are cheap)."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
    silent = {tokenizer.unk_token_id, tokenizer.convert_tokens_to_ids(WORD_START)}
    return [[i for i in ids if i not in silent] for ids in encoded["input_ids"]]


def input_embeddings(model: Any) -> torch.Tensor:
    """The input (word) embedding matrix of a transformers encoder."""
    base = getattr(model, "base_model", model)
    return base.embeddings.word_embeddings.weight.detach()


def read_input_embeddings(model_dir: Path) -> torch.Tensor:
    """The word embedding matrix from a model directory's safetensors, without building the model."""
    from safetensors import safe_open

    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                if key.endswith("embeddings.word_embeddings.weight"):
                    return handle.get_tensor(key)
    raise StoreError(f"no word embeddings in the safetensors of {model_dir}", "point at a BERT or XLM-R model")
