"""Swappable export: one graph, per-row stacks from weight packs, row for row equal to each stack alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from adapters import AutoAdapterModel, Stack
from export_support import (  # noqa: F401 (one_torch_thread: autouse fixture)
    ATOL,
    TASK_ADAPTERS,
    TinyStore,
    build_tiny_store,
    needs_cuda,
    one_torch_thread,
    perturb,
)

from langadapt.errors import StoreError
from langadapt.export.errors import ExportError
from langadapt.export.runtime import SwappableRuntime
from langadapt.export.swappable import export_swappable, load_pack
from langadapt.export.verify import verify_artifact
from langadapt.models.bank import BARE_INDEX, AdapterBank, BankLayout
from langadapt.models.kinds import get_kind
from langadapt.models.manifest import Manifest


@pytest.fixture(scope="module")
def tiny(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyStore:
    return build_tiny_store(tiny_xlmr_dir, tmp_path_factory.mktemp("swappable") / "store")


@pytest.fixture(scope="module")
def exported(tiny: TinyStore) -> Manifest:
    return export_swappable(tiny.store, base=str(tiny.info.path))


def test_export_is_checked_on_a_mixed_batch_of_every_kind(tiny: TinyStore, exported: Manifest) -> None:
    assert exported.artifact == "onnx-swappable" and exported.base_fingerprint == tiny.info.fingerprint
    assert exported.id == f"onnx-swappable-{tiny.info.fingerprint[:16]}"
    parity = exported.metrics["parity"]["fp32"]
    assert parity["passed"] and parity["max_abs_diff"] <= ATOL
    assert parity["stacks"] >= 6 + 4 and len(parity["lengths"]) > 3, "synthetic and stored stacks, varied lengths"
    stacks = exported.extra["check_stacks"]
    assert {"lora+lora", "seq_bn_inv+seq_bn", "task:seq_bn_inv"} <= set(stacks)
    assert sum(key.startswith("store:") for key in stacks) == 4 and exported.extra["check_skipped"] == {}
    assert exported.extra["inputs"][:3] == ["input_ids", "attention_mask", "stack_index"]
    assert exported.layout == {
        "num_layers": 2,
        "hidden_size": 32,
        "slots": 2,
        "lora_matrices": ["q", "v"],
        "non_linearity": "relu",
    }


def stack_reference(tiny: TinyStore, task_id: str, lang_id: str | None, ids: list[int]) -> torch.Tensor:
    """Logits of one unpadded row under `Stack(lang, task)`, loaded straight from the store folders."""
    model = AutoAdapterModel.from_pretrained(tiny.info.path).eval()
    if lang_id:
        model.load_adapter(str(tiny.store.path(lang_id)), load_as="lang", with_head=False, use_safetensors=True)
    model.load_adapter(str(tiny.store.path(task_id)), load_as="task", with_head=True, use_safetensors=True)
    model.set_active_adapters(Stack("lang", "task") if lang_id else Stack("task"))
    model.active_head = "task"
    row = torch.tensor([ids])
    with torch.no_grad():
        return model(input_ids=row, attention_mask=torch.ones_like(row)).logits[0]


def publish_new_language(tiny: TinyStore, folder: Path) -> tuple[str, str]:
    """After the export: a new language adapter (wider than any traced) and a task adapter on it."""
    model = AutoAdapterModel.from_pretrained(tiny.info.path).eval()
    model.add_adapter("wol", config=get_kind("seq_bn_inv").build_config(reduction_factor=2))
    model.add_adapter("wol_task", config=get_kind("seq_bn").build_config())
    model.add_classification_head("wol_task", num_labels=2, id2label={0: "no", 1: "yes"})
    perturb(model, ["wol", "wol_task"], seed=3)
    model.save_adapter(str(folder / "lang"), "wol", with_head=False, use_safetensors=True)
    model.save_adapter(str(folder / "task"), "wol_task", with_head=True, use_safetensors=True)
    fields = {"base_model": str(tiny.info.path), "base_fingerprint": tiny.info.fingerprint}
    lang = tiny.store.import_adapters_folder(
        folder / "lang", language="wol_Latn", task="mlm", kind="seq_bn_inv", **fields
    )
    task = tiny.store.import_adapters_folder(
        folder / "task", language="wol_Latn", task="topic", kind="seq_bn", **fields
    )
    return lang.id, task.id


def test_mixed_rows_equal_each_stack_alone_including_a_language_added_after_export(
    tiny: TinyStore, exported: Manifest, tmp_path: Path
) -> None:
    runtime = SwappableRuntime(tiny.store.path(exported.id), device="cpu", threads=1)
    assert exported.layout is not None
    layout = BankLayout(**{**exported.layout, "lora_matrices": ("q", "v")})
    assert runtime.tensor_names == layout.tensor_names()
    new_lang, new_task = publish_new_language(tiny, tmp_path)
    stacks = {task_id: lang_id for task_id, (_, _, _, lang_id) in TASK_ADAPTERS.items()}
    stacks[new_task] = new_lang
    bank = AdapterBank(layout, capacity=2)  # grows past the traced capacity and ranks
    heads = {}
    for task_id, lang_id in stacks.items():
        task = load_pack(tiny.store, task_id, fingerprint=tiny.info.fingerprint)
        lang = load_pack(tiny.store, lang_id, fingerprint=tiny.info.fingerprint) if lang_id else None
        bank.add_stack(task_id, lang.weights if lang else None, None, task.weights)
        heads[task_id] = task.head
    assert bank.tensors()["bn_down_w"].shape[-1] == 16, "the new adapter's rank is wider than any traced"

    pad = 1
    keys = [*stacks, *reversed(stacks), "bare"]
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(5, tiny.info.vocab_size, n).tolist(), 2] for n in rng.integers(1, 30, len(keys))]
    ids = np.full((len(rows), max(map(len, rows))), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = row, 1
    index = np.array([BARE_INDEX if k == "bare" else bank.index_of(k) for k in keys])
    tensors = {name: t.numpy() for name, t in bank.tensors().items()}
    hidden = torch.from_numpy(runtime.hidden_states(ids, mask, index, tensors))
    assert hidden.shape == (len(rows), ids.shape[1], 32)

    for b, key in enumerate(keys[:-1]):
        got = heads[key](hidden[b : b + 1, : len(rows[b])])[0]
        ref = stack_reference(tiny, key, stacks[key], rows[b])
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0, msg=lambda m, k=key, b=b: f"row {b} ({k}): {m}")
    alone = runtime.hidden_states(ids[-1:], mask[-1:], index[-1:], tensors)
    np.testing.assert_allclose(hidden[-1].numpy(), alone[0], atol=ATOL, rtol=0)  # the bare row


def test_verify_reruns_the_check_and_catches_a_tampered_graph(tiny: TinyStore, exported: Manifest) -> None:
    result = verify_artifact(tiny.store, exported.id, exported.version)
    assert result["parity"]["passed"] and result["parity"]["stacks"] >= 10
    copy = tiny.store.publish(tiny.store.path(exported.id), exported.model_copy(update={"files": {}, "version": 0}))
    graph = tiny.store.path(copy.id, copy.version) / "model.onnx"
    graph.chmod(0o644)
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StoreError, match="sha256"):
        verify_artifact(tiny.store, copy.id, copy.version)
    tiny.store.remove(copy.id, copy.version)


def test_packs_are_only_bank_adapters(tiny: TinyStore, exported: Manifest) -> None:
    pack = load_pack(tiny.store, "hau_Latn-ner")
    assert pack.head is not None and pack.head.head_type == "tagging" and pack.weights.kind == "bottleneck"
    assert load_pack(tiny.store, "yor_Latn-mlm-lora").head is None
    with pytest.raises(ExportError, match="export it fused"):
        load_pack(tiny.store, exported.id)


def test_runtime_refuses_malformed_bank_feeds(tiny: TinyStore, exported: Manifest) -> None:
    runtime = SwappableRuntime(tiny.store.path(exported.id), device="cpu")
    layout = BankLayout(num_layers=2, hidden_size=32)
    tensors = {n: t.numpy() for n, t in AdapterBank(layout, capacity=2).tensors().items()}
    ids = np.array([[0, 7, 2]])
    mask = np.ones_like(ids)
    with pytest.raises(ValueError, match="missing"):
        runtime.hidden_states(ids, mask, np.array([0]), {k: v for k, v in tensors.items() if k != "bn_up_b"})
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        runtime.hidden_states(ids, mask, np.array([2]), tensors)
    with pytest.raises(ValueError, match="entries for a batch"):
        runtime.hidden_states(ids, mask, np.array([0, 1]), tensors)
    out = runtime.hidden_states(ids.astype(np.int32), mask, np.array([1]), tensors)  # zero stack: the bare base
    np.testing.assert_allclose(out, runtime.hidden_states(ids, mask, np.array([0]), tensors), atol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_swappable_fp16_on_the_cuda_provider(tiny: TinyStore, exported: Manifest) -> None:
    fp16 = export_swappable(tiny.store, base=str(tiny.info.path), precision="fp16")
    assert fp16.id.endswith("-fp16") and fp16.metrics["parity"]["fp16"]["checked_on"] == "cuda"
    layout = BankLayout(num_layers=2, hidden_size=32)
    bank = AdapterBank(layout, capacity=2)
    pack = load_pack(tiny.store, "yor_Latn-topic")
    lang = load_pack(tiny.store, "yor_Latn-mlm-seq_bn")
    index = bank.add_stack("s", lang.weights, None, pack.weights)
    tensors = {n: t.numpy() for n, t in bank.tensors().items()}
    ids = np.array([[0, 9, 17, 33, 2], [0, 12, 2, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    cpu = SwappableRuntime(tiny.store.path(exported.id), device="cpu").hidden_states(ids, mask, [index, 0], tensors)
    cuda = SwappableRuntime(tiny.store.path(exported.id), device="cuda")
    assert cuda.device == "cuda"
    # fp32 on CUDA: ONNX Runtime uses TF32 matmuls on Ampere and later, so ~1e-3, not the CPU's 1e-6.
    np.testing.assert_allclose(cuda.hidden_states(ids, mask, [index, 0], tensors), cpu, atol=2e-2, rtol=0)
