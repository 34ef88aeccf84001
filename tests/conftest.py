"""Shared fixtures: tiny random XLM-R and BERT encoders with a tiny Unigram tokenizer, built locally (no download)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

# A small synthetic multilingual corpus: enough pieces for realistic sub-word splits in several scripts.
SYNTHETIC_SENTENCES = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "Yaran sun tafi makaranta a Kano jiya.",
    "Shugaban kasa ya ziyarci Legas ranar Litinin.",
    "Mtoto alienda shuleni Nairobi jana asubuhi.",
    "Rais wa Tanzania alizungumza na waandishi wa habari.",
    "Nwa ahụ gara ụlọ akwụkwọ na Enugu ụnyaahụ.",
    "Umwana yagiye ku ishuri i Kigali ejo hashize.",
    "The child went to school in Lagos yesterday.",
    "ሰላም እንዴት ነህ ዛሬ ጥሩ ቀን ነው",
    "नमस्ते आप कैसे हैं आज अच्छा दिन है",
    "今天天气很好我们去公园散步",
    "Football match ended two to one in Ibadan.",
    "Ijọba ti kede pé àwọn ilé-ìwé yóò ṣí padà.",
]


def synthetic_corpus(repeats: int = 20) -> list[str]:
    """The synthetic sentences repeated, with numbers mixed in so the vocabulary covers digits."""
    lines: list[str] = []
    for i in range(repeats):
        for s in SYNTHETIC_SENTENCES:
            lines.append(f"{s} {i}")
    return lines


def canonical_unigram(tokenizer: Any) -> Any:
    """The trained Unigram model with its pieces in a fixed order (the trainer orders score ties per run)."""
    from tokenizers import models

    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    specials = [(piece, score) for piece, score in vocab if piece in SPECIAL_TOKENS]
    specials.sort(key=lambda item: SPECIAL_TOKENS.index(item[0]))
    rest = sorted(((p, round(s, 3)) for p, s in vocab if p not in SPECIAL_TOKENS), key=lambda item: (-item[1], item[0]))
    return models.Unigram([*specials, *rest], unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)


def build_tiny_tokenizer(out_dir: Path, vocab_size: int = 600):
    """Train a tiny XLM-R-style Unigram tokenizer (Metaspace, `<s> … </s>`) and save it as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(synthetic_corpus(), trainer=trainer)
    tok.model = canonical_unigram(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model_dir(out_dir: Path, arch: str, seed: int = 0) -> Path:
    """Save a tiny random encoder (`xlmr` or `bert`) with the tiny tokenizer into `out_dir`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, XLMRobertaConfig, XLMRobertaForMaskedLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(out_dir)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=520,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    if arch == "xlmr":
        model = XLMRobertaForMaskedLM(XLMRobertaConfig(**common, type_vocab_size=1))
    elif arch == "bert":
        model = BertForMaskedLM(BertConfig(**common, type_vocab_size=2))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLM-R masked-LM directory (2 layers, hidden 32) with its tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-xlmr"), "xlmr")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT masked-LM directory (2 layers, hidden 32) with the same tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(params=["xlmr", "bert"])
def tiny_model_dir(request: pytest.FixtureRequest) -> Path:
    """Each tiny architecture in turn."""
    return request.getfixturevalue(f"tiny_{request.param}_dir")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real data; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (CI provides it beside the checkout)")
    return SHARED_DATA
