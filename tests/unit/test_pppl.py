"""Pseudo-perplexity: batched masking equals one-mask-at-a-time scoring, whatever the batch size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from langadapt.training.pppl import masked_token_logits, pseudo_perplexity

SENTENCES = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Yaran sun tafi makaranta a Kano jiya.",
    "Mtoto alienda shuleni Nairobi jana asubuhi.",
    "今天天气很好",
    "Umwana yagiye ku ishuri i Kigali ejo hashize 3.",
]


def brute_force(model: torch.nn.Module, tokenizer, sentences: list[str], max_length: int) -> tuple[float, int]:
    """Salazar et al.'s definition taken literally: one unpadded forward pass per masked token, full logits."""
    total, count = 0.0, 0
    for sentence in sentences:
        enc = tokenizer(sentence, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        ids = torch.tensor([enc["input_ids"]])
        for pos, special in enumerate(enc["special_tokens_mask"]):
            if special:
                continue
            masked = ids.clone()
            masked[0, pos] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=masked).logits[0, pos]
            total += float(torch.log_softmax(logits.double(), dim=-1)[ids[0, pos]])
            count += 1
    return math.exp(-total / count), count


def load(model_dir: Path):
    """A tiny MLM model in eval mode, with its tokenizer."""
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def test_pppl_equals_brute_force_reference(tiny_model_dir: Path) -> None:
    model, tokenizer = load(tiny_model_dir)
    expected, count = brute_force(model, tokenizer, SENTENCES, max_length=128)
    result = pseudo_perplexity(model, tokenizer, SENTENCES, batch_size=7, max_length=128)
    assert result.tokens == count
    assert result.sentences == len(SENTENCES)
    assert result.truncated == 0
    assert result.pppl == pytest.approx(expected, rel=1e-5)
    # A random tiny model is close to uniform over its vocabulary, nothing like a trained one.
    assert 0.2 * len(tokenizer) < result.pppl < 5 * len(tokenizer)


@pytest.mark.parametrize("batch_size", [1, 3, 16, 1000])
def test_pppl_does_not_depend_on_batch_size(tiny_xlmr_dir: Path, batch_size: int) -> None:
    model, tokenizer = load(tiny_xlmr_dir)
    reference = pseudo_perplexity(model, tokenizer, SENTENCES, batch_size=5)
    result = pseudo_perplexity(model, tokenizer, SENTENCES, batch_size=batch_size)
    assert result.tokens == reference.tokens
    assert result.nll == pytest.approx(reference.nll, rel=1e-6)


def test_truncation_is_counted_and_matches_tokenizer_truncation(tiny_bert_dir: Path) -> None:
    model, tokenizer = load(tiny_bert_dir)
    expected, count = brute_force(model, tokenizer, SENTENCES, max_length=8)
    result = pseudo_perplexity(model, tokenizer, SENTENCES, batch_size=4, max_length=8)
    lengths = [len(tokenizer(s)["input_ids"]) for s in SENTENCES]
    assert result.truncated == sum(n > 8 for n in lengths) > 0
    assert result.tokens == count <= 6 * len(SENTENCES)
    assert result.pppl == pytest.approx(expected, rel=1e-5)
    assert result.max_length == 8


def test_special_tokens_are_never_scored(tiny_xlmr_dir: Path) -> None:
    model, tokenizer = load(tiny_xlmr_dir)
    result = pseudo_perplexity(model, tokenizer, SENTENCES)
    non_special = sum(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES)
    assert result.tokens == non_special
    assert pseudo_perplexity(model, tokenizer, []).tokens == 0


def test_head_only_logits_match_full_forward_with_an_invertible_adapter(tiny_model_dir: Path) -> None:
    import adapters
    from adapters import SeqBnInvConfig

    model, tokenizer = load(tiny_model_dir)
    adapters.init(model)
    model.add_adapter("lang", SeqBnInvConfig(reduction_factor=4, inv_adapter_reduction_factor=2))
    model.set_active_adapters("lang")
    with torch.no_grad():  # move the adapter away from its near-identity start so a skipped inverse would show
        for name, param in model.named_parameters():
            if ".lang." in name:
                param.add_(0.2 * torch.randn_like(param))
    model.eval()
    enc = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    rows = torch.tensor([0, 1, 2, 2])
    cols = torch.tensor([1, 2, 1, 4])
    with torch.no_grad():
        full = model(**enc).logits[rows, cols]
        part = masked_token_logits(model, enc["input_ids"], enc["attention_mask"], rows, cols)
    torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-5)
