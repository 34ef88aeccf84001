"""Heads rebuilt from saved `adapters` folders give the library's own logits."""

from __future__ import annotations

from pathlib import Path

import adapters
import pytest
import torch

from langadapt.errors import StoreError
from langadapt.models.heads import Head


@pytest.mark.parametrize("head_type", ["classification", "tagging"])
def test_head_matches_library_logits(tiny_xlmr_dir: Path, tmp_path: Path, head_type: str) -> None:
    torch.manual_seed(0)
    model = adapters.AutoAdapterModel.from_pretrained(tiny_xlmr_dir)
    model.add_adapter("t", config="seq_bn")
    labels = {0: "neg", 1: "neu", 2: "pos"}
    if head_type == "classification":
        model.add_classification_head("t", num_labels=3, id2label=labels)
    else:
        model.add_tagging_head("t", num_labels=3, id2label=labels)
    model.set_active_adapters("t")
    model.eval()
    model.save_adapter(str(tmp_path), "t", use_safetensors=True)

    batch = {"input_ids": torch.tensor([[0, 5, 9, 11, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**batch).logits
        hidden = model.base_model(**batch).last_hidden_state
    head = Head.from_folder(tmp_path)
    assert head.labels == ["neg", "neu", "pos"]
    assert head.head_type == head_type
    torch.testing.assert_close(head(hidden), expected, atol=1e-6, rtol=1e-5)


def test_missing_head_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no prediction head"):
        Head.from_folder(tmp_path)


def test_label_count_mismatch_is_refused() -> None:
    config = {"head_type": "tagging", "layers": 1, "num_labels": 2, "label2id": {"O": 0, "B-PER": 1}}
    state = {"heads.x.1.weight": torch.zeros(3, 4), "heads.x.1.bias": torch.zeros(3)}
    with pytest.raises(StoreError, match="scores 3 labels"):
        Head.from_state_dict(config, state)
