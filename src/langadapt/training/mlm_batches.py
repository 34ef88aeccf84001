"""Masked-LM batches: tokenised sentences, masked as BERT masks them, and a fixed-mask validation set.

Per sentence, round(p * n) of its n non-special tokens (at least one) are chosen; 80% of those become the mask
token, 10% a random non-special token, 10% stay. Training masks come from the loop's per-step generator and the
validation masks are drawn once from the seed, so validation loss is comparable across evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from langadapt.errors import BaseModelError
from langadapt.training.pppl import masked_token_logits

__all__ = ["Example", "MlmBatches", "mask_tokens", "tokenize"]


IGNORE_INDEX = -100


Example = tuple[list[int], list[int]]  # token ids, special-token mask


def tokenize(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[Example]:
    """Token ids (truncated to `max_length`) and special-token masks; sentences with no real token are left out."""
    out: list[Example] = []
    for start in range(0, len(sentences), 4096):
        enc = tokenizer(
            list(sentences[start : start + 4096]),
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_attention_mask=False,
        )
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True):
            if not all(special):
                out.append((list(ids), list(special)))
    return out


def mask_tokens(
    rows: Sequence[Example],
    generator: torch.Generator,
    *,
    mask_probability: float,
    mask_id: int,
    pad_id: int,
    random_ids: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Pad `rows` and mask them as BERT does; returns input_ids, attention_mask and labels (-100: not predicted)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, special) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        candidates = torch.tensor([i for i, s in enumerate(special) if not s])
        count = max(1, round(len(candidates) * mask_probability))
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
        labels[r, chosen] = input_ids[r, chosen]
    selected = labels != IGNORE_INDEX
    draw = torch.rand(labels.shape, generator=generator)
    replacement = random_ids[torch.randint(len(random_ids), labels.shape, generator=generator)]
    masked = input_ids.clone()
    masked[selected & (draw < 0.8)] = mask_id
    swap = selected & (draw >= 0.8) & (draw < 0.9)
    masked[swap] = replacement[swap]
    return {"input_ids": masked, "attention_mask": attention, "labels": labels}


class MlmBatches:
    """Collate and loss for the training loop, and a fixed-mask validation set for comparable evaluations."""

    def __init__(self, tokenizer: Any, mask_probability: float) -> None:
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise BaseModelError("the tokenizer has no mask or pad token", "use a masked-LM tokenizer")
        special = set(tokenizer.all_special_ids)
        self.mask_probability = mask_probability
        self.mask_id = int(tokenizer.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)

    def collate(self, rows: Sequence[Example], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One masked training batch; all randomness from the loop's per-step generator."""
        return mask_tokens(
            rows,
            generator,
            mask_probability=self.mask_probability,
            mask_id=self.mask_id,
            pad_id=self.pad_id,
            random_ids=self.random_ids,
        )

    @staticmethod
    def token_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of each predicted token (only masked positions go through the vocabulary projection)."""
        device = next(model.parameters()).device
        labels = batch["labels"].to(device)
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        logits = masked_token_logits(
            model, batch["input_ids"].to(device), batch["attention_mask"].to(device), rows, cols
        )
        return torch.nn.functional.cross_entropy(logits.float(), labels[rows, cols], reduction="none")

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's predicted tokens."""
        return self.token_losses(model, batch).mean()

    def validation_batches(self, rows: Sequence[Example], batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
        """Validation batches, masked once from `seed` (sorted by length to keep padding small)."""
        generator = torch.Generator().manual_seed(seed)
        ordered = sorted(rows, key=lambda r: len(r[0]))
        return [self.collate(ordered[i : i + batch_size], generator) for i in range(0, len(ordered), batch_size)]

    def evaluator(self, batches: Sequence[dict[str, torch.Tensor]]) -> Any:
        """The loop's evaluation callback: token-weighted validation loss and its perplexity."""

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            total, count = 0.0, 0
            for batch in batches:
                losses = self.token_losses(model, batch)
                total += float(losses.double().sum())
                count += losses.numel()
            loss = total / count
            return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}

        return evaluate
