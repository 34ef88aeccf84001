"""Pseudo-perplexity of a masked language model on held-out text (Salazar et al., 2020, "Masked Language Model
Scoring").

For a sentence W = w_1 … w_n, PLL(W) = Σ_t log P(w_t | W without w_t), where each w_t is replaced by the mask
token in its own copy of the sentence; over a corpus, PPPL = exp(−Σ_W PLL(W) / N), N the number of scored tokens.
Special tokens (`<s>`, `</s>`, `[CLS]`, `[SEP]`) are never scored and padding is never attended to. Sentences are
tokenized with truncation at `max_length` tokens (special tokens included); the result says how many were cut.

All masked copies of all sentences are flattened, ordered by length so that padding stays small, and run in
chunks of `batch_size` rows; only the hidden state at each copy's masked position goes through the MLM head, so the
vocabulary projection costs one row per copy rather than one per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["PseudoPerplexity", "masked_lm_parts", "masked_token_logits", "pseudo_perplexity"]


@dataclass(frozen=True)
class PseudoPerplexity:
    """PPPL over a set of sentences, with what it was computed on."""

    pppl: float
    nll: float
    tokens: int
    sentences: int
    truncated: int
    empty: int
    max_length: int

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict (for manifests and run records)."""
        return asdict(self)


def masked_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The encoder and the MLM head (`lm_head`, `cls`) of a Hugging Face `*ForMaskedLM` model, or None when the
    head is not one module."""
    prefix = getattr(model, "base_model_prefix", None)
    encoder = getattr(model, prefix, None) if isinstance(prefix, str) else None
    if not isinstance(encoder, torch.nn.Module):
        return None
    heads = [module for name, module in model.named_children() if name != prefix]
    return (encoder, heads[0]) if len(heads) == 1 else None


def masked_token_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """Vocabulary logits `[len(rows), vocab]` at positions (rows[i], cols[i]) only.

    Runs the encoder once, then the MLM head on the selected hidden states alone (adapters' invertible inverse,
    hooked on the output embeddings, still applies). Falls back to the full forward when the head is not one module.
    """
    parts = masked_lm_parts(model)
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[rows, cols]
    encoder, head = parts
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
    return head(hidden[rows, cols])


def _tokenize(
    tokenizer: Any, sentences: Sequence[str], max_length: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids and the positions that can be scored (non-special), plus how many sentences were truncated."""
    if not sentences:
        return [], [], 0
    enc = tokenizer(
        list(sentences),
        truncation=False,
        add_special_tokens=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
    )
    ids_out: list[list[int]] = []
    positions: list[list[int]] = []
    truncated = 0
    for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True):
        if len(ids) > max_length:
            truncated += 1
            # Keep the leading tokens and the closing special token(s), as the tokenizer's own truncation does.
            trailing = 0
            while trailing < len(special) and special[len(special) - 1 - trailing]:
                trailing += 1
            keep = max_length - trailing
            ids = ids[:keep] + ids[len(ids) - trailing :]
            special = special[:keep] + special[len(special) - trailing :]
        ids_out.append(list(ids))
        positions.append([i for i, s in enumerate(special) if not s])
    return ids_out, positions, truncated


@torch.no_grad()
def pseudo_perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
    description: str = "pppl",
) -> PseudoPerplexity:
    """PPPL of `model` on `sentences`: every non-special token masked once, scored by the true token's log-prob.

    `batch_size` is the number of masked copies per forward pass; the result does not depend on it (up to float
    rounding). Sentences longer than `max_length` tokens are truncated, keeping their closing special token.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs a mask token and a pad token for pseudo-perplexity")
    ids, positions, truncated = _tokenize(tokenizer, sentences, max_length)
    copies = [(s, p) for s in sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i)) for p in positions[s]]
    log_probs = torch.zeros(len(copies), dtype=torch.float64)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bar = tqdm(total=len(copies), desc=description, disable=not progress, unit="tok")
    try:
        for start in range(0, len(copies), batch_size):
            chunk = copies[start : start + batch_size]
            width = max(len(ids[s]) for s, _ in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            targets = torch.empty(len(chunk), dtype=torch.long)
            cols = torch.empty(len(chunk), dtype=torch.long)
            for row, (s, p) in enumerate(chunk):
                input_ids[row, : len(ids[s])] = torch.tensor(ids[s])
                attention[row, : len(ids[s])] = 1
                targets[row] = ids[s][p]
                cols[row] = p
                input_ids[row, p] = tokenizer.mask_token_id
            rows = torch.arange(len(chunk))
            logits = masked_token_logits(model, input_ids.to(device), attention.to(device), rows, cols.to(device))
            scores = torch.log_softmax(logits.float(), dim=-1)
            log_probs[start : start + len(chunk)] = scores[rows, targets.to(device)].double().cpu()
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    tokens = len(copies)
    nll = -float(log_probs.sum())
    return PseudoPerplexity(
        pppl=math.exp(nll / tokens) if tokens else math.nan,
        nll=nll,
        tokens=tokens,
        sentences=len(ids),
        truncated=truncated,
        empty=sum(1 for p in positions if not p),
        max_length=max_length,
    )
