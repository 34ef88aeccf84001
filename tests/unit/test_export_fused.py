"""Fused export: every stack shape matches the `adapters` reference; int8, fp16, failures and re-verification."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from adapters import AutoAdapterModel, Stack
from export_support import (  # noqa: F401 (one_torch_thread: autouse fixture)
    ATOL,
    TAGS,
    TOPICS,
    TinyStore,
    build_tiny_store,
    needs_cuda,
    one_torch_thread,
    perturb,
)

from langadapt.errors import StoreError
from langadapt.export import graphs
from langadapt.export.errors import ExportError, ParityError
from langadapt.export.fused import export_fused
from langadapt.export.graphs import FusedModel
from langadapt.export.parity import LabelledSet
from langadapt.export.precision import precision_label
from langadapt.export.runtime import FusedRuntime
from langadapt.export.verify import verify_artifact
from langadapt.models.bank import AdapterWeights
from langadapt.models.heads import Head
from langadapt.models.kinds import get_kind
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import LayeredStore


@pytest.fixture(scope="module")
def xlmr(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyStore:
    return build_tiny_store(tiny_xlmr_dir, tmp_path_factory.mktemp("export-xlmr") / "store")


@pytest.fixture(scope="module")
def bert(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyStore:
    return build_tiny_store(tiny_bert_dir, tmp_path_factory.mktemp("export-bert") / "store")


def reference_model(tiny: TinyStore, task_id: str, lang_id: str | None) -> Any:
    """The `adapters` model with `Stack(lang, task)` loaded straight from the store folders (not via langadapt)."""
    model = AutoAdapterModel.from_pretrained(tiny.info.path).eval()
    if lang_id:
        model.load_adapter(str(tiny.store.path(lang_id)), load_as="lang", with_head=False, use_safetensors=True)
    model.load_adapter(str(tiny.store.path(task_id)), load_as="task", with_head=True, use_safetensors=True)
    model.set_active_adapters(Stack("lang", "task") if lang_id else Stack("task"))
    model.active_head = "task"
    return model


def padded_batch(vocab: int, pad: int, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random token rows of the given lengths, right-padded: `<s> … </s>` like the tokenizer's."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, vocab, n)
        ids[i, 0] = 0
        if n > 1:
            ids[i, n - 1] = 2
        mask[i, :n] = 1
    return ids, mask


def max_diff(ref: np.ndarray, got: np.ndarray, mask: np.ndarray) -> float:
    """Largest difference over real (unpadded) positions."""
    diff = np.abs(ref - got)
    return float(diff[mask.astype(bool)].max() if diff.ndim == 3 else diff.max())


def reference_logits(model: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


STACKS = [  # (task adapter, language adapter, optimise): every kind and stack shape
    ("ibo_Latn-topic", None, True),
    ("yor_Latn-topic", "yor_Latn-mlm-seq_bn", True),
    ("hau_Latn-ner", "yor_Latn-mlm-seq_bn_inv", False),
    ("swh_Latn-sentiment", "yor_Latn-mlm-lora", True),
    ("kin_Latn-topic", "yor_Latn-mlm-seq_bn_inv", False),
    ("lug_Latn-topic", "yor_Latn-mlm-lora", False),  # LoRA under LoRA: the chain is folded, then merged
]


@pytest.mark.parametrize(("task_id", "lang_id", "optimize"), STACKS, ids=[s[0] for s in STACKS])
def test_fused_graph_matches_the_adapters_stack(
    xlmr: TinyStore, task_id: str, lang_id: str | None, optimize: bool
) -> None:
    manifest = export_fused(xlmr.store, lang_id, task_id, optimize=optimize)
    assert manifest.artifact == manifest.kind == "onnx-fused"
    assert manifest.id == ".".join([task_id, *([lang_id] if lang_id else []), "onnx-fp32"])
    assert manifest.base_fingerprint == xlmr.info.fingerprint
    assert [s.id for s in manifest.sources or []] == [x for x in (lang_id, task_id) if x]
    assert all(s.version == 1 for s in manifest.sources or [])
    assert manifest.extra["opset"] == graphs.OPSET and manifest.precision == "fp32"
    assert manifest.extra["optimizer"]["applied"] is optimize
    parity = manifest.metrics["parity"]["fp32"]
    assert parity["passed"] and parity["max_abs_diff"] <= ATOL and parity["texts"] >= 40

    folder = xlmr.store.path(manifest.id)
    assert set(manifest.files) >= {"model.onnx", "model.onnx.data"}  # the weights beside the graph, checksummed too
    assert (folder / "model.onnx").stat().st_size < (folder / "model.onnx.data").stat().st_size
    runtime = FusedRuntime(folder, device="cpu", threads=1)
    assert runtime.labels == manifest.labels and runtime.head_type == manifest.head_type
    model = reference_model(xlmr, task_id, lang_id)
    ids, mask = padded_batch(model.config.vocab_size, model.config.pad_token_id, [9, 3, 14, 1, 6])
    ref = reference_logits(model, ids, mask)
    assert max_diff(ref, runtime.run(ids, mask), mask) <= ATOL
    model.set_active_adapters(None)  # the stack must matter, or parity would prove nothing
    assert max_diff(ref, reference_logits(model, ids, mask), mask) > 0.05


def test_fused_on_bert_with_an_invertible_language_adapter_and_a_tagging_head(bert: TinyStore) -> None:
    manifest = export_fused(bert.store, "yor_Latn-mlm-seq_bn_inv", "hau_Latn-ner")
    runtime = FusedRuntime(bert.store.path(manifest.id), device="cpu")
    model = reference_model(bert, "hau_Latn-ner", "yor_Latn-mlm-seq_bn_inv")
    ids, mask = padded_batch(model.config.vocab_size, model.config.pad_token_id, [12, 4, 7])
    logits = runtime.run(ids, mask)
    assert logits.shape == (3, 12, len(TAGS)) and runtime.labels == TAGS
    assert max_diff(reference_logits(model, ids, mask), logits, mask) <= ATOL


def test_dynamic_batch_and_sequence_axes(xlmr: TinyStore) -> None:
    manifest = export_fused(xlmr.store, "yor_Latn-mlm-seq_bn_inv", "hau_Latn-ner", optimize=False)
    runtime = FusedRuntime(xlmr.store.path(manifest.id), device="cpu")
    model = reference_model(xlmr, "hau_Latn-ner", "yor_Latn-mlm-seq_bn_inv")
    vocab, pad = model.config.vocab_size, model.config.pad_token_id
    for lengths in ([1], [2, 1], [512], [5, 512, 33], [7] * 9, [130, 1, 64, 2]):
        ids, mask = padded_batch(vocab, pad, lengths, seed=len(lengths))
        logits = runtime.run(ids, mask)
        assert logits.shape[:2] == ids.shape
        assert max_diff(reference_logits(model, ids, mask), logits, mask) <= ATOL, lengths


def test_lora_merge_equals_the_libraries_merge(xlmr: TinyStore) -> None:
    model = AutoAdapterModel.from_pretrained(xlmr.info.path).eval()
    folder = xlmr.store.path("yor_Latn-mlm-lora")
    model.load_adapter(str(folder), load_as="lora", with_head=False, use_safetensors=True)
    head = Head.from_folder(xlmr.store.path("ibo_Latn-topic"))
    fused = FusedModel(model, [AdapterWeights.from_folder(folder), None], head)
    assert sorted(fused.merged) == ["q0", "q1", "v0", "v1"]
    model.merge_adapter("lora")
    for i, layer in enumerate(model.base_model.encoder.layer):
        sa = layer.attention.self
        torch.testing.assert_close(fused.merged[f"q{i}"], sa.query.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(fused.merged[f"v{i}"], sa.value.weight, atol=1e-6, rtol=0)
        assert (fused.merged[f"q{i}"] - sa.key.weight).abs().max() > 0.01


def test_unmerged_lora_is_caught_and_nothing_is_published(
    xlmr: TinyStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(FusedModel, "_merge_loras", lambda self, config, members: torch.nn.ParameterDict())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    artifact = "swh_Latn-sentiment.yor_Latn-mlm-lora.onnx-fp32"
    generation, versions = xlmr.store.generation(), xlmr.store.versions(artifact)
    with pytest.raises(ParityError, match="does not match the PyTorch reference") as caught:
        export_fused(xlmr.store, "yor_Latn-mlm-lora", "swh_Latn-sentiment", out=tmp_path / "copy")
    assert caught.value.figures["max_abs_diff"] > ATOL and caught.value.figures["passed"] is False
    assert xlmr.store.versions(artifact) == versions and xlmr.store.generation() == generation
    assert list(tmp_path.iterdir()) == [], "staging folders and --out must be left empty"
    assert not any((xlmr.store.root / ".staging").iterdir())


PLACES = {"Èkó", "Abuja", "Kano", "Legas", "Nairobi", "Tanzania", "Enugu", "Kigali", "Lagos", "Ibadan"}


@pytest.fixture(scope="module")
def toy(xlmr: TinyStore, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, LabelledSet]:
    """A NER adapter trained for a few steps on a toy task: place names are `B-LOC`, every other word `O`."""
    from conftest import SYNTHETIC_SENTENCES
    from langadapt.models.base import load_tokenizer

    tokenizer = load_tokenizer(xlmr.info)
    words = [f"{s} {i}".split() for i in range(6) for s in SYNTHETIC_SENTENCES]
    tags = [["B-LOC" if w.strip(".") in PLACES else "O" for w in sentence] for sentence in words]
    model = AutoAdapterModel.from_pretrained(xlmr.info.path)
    model.add_adapter("toy", config=get_kind("seq_bn").build_config())
    model.add_tagging_head("toy", num_labels=len(TAGS), id2label=dict(enumerate(TAGS)))
    model.train_adapter("toy")
    encoded = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    gold = torch.full(encoded["input_ids"].shape, -100)
    for i, sentence in enumerate(tags):
        firsts = {w: j for j, w in reversed(list(enumerate(encoded.word_ids(i)))) if w is not None}
        for w, j in firsts.items():
            gold[i, j] = TAGS.index(sentence[w])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(40):
        model(**encoded, labels=gold).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("toy") / "toy"
    model.save_adapter(str(folder), "toy", with_head=True, use_safetensors=True)
    xlmr.store.import_adapters_folder(
        folder,
        language="ewe_Latn",
        task="ner",
        kind="seq_bn",
        base_model=str(xlmr.info.path),
        base_fingerprint=xlmr.info.fingerprint,
    )
    return "ewe_Latn-ner", LabelledSet(words, tags, source="toy")


def test_int8_agrees_with_the_reference_on_a_toy_task(xlmr: TinyStore, toy: tuple[str, LabelledSet]) -> None:
    task_id, labelled = toy
    manifest = export_fused(xlmr.store, None, task_id, quantize="int8", labelled=labelled)
    assert manifest.id == f"{task_id}.onnx-int8" and manifest.precision == "int8"
    int8 = manifest.metrics["parity"]["int8"]
    assert int8["agreement"] >= 0.99 and abs(int8["metric"]["delta"]) <= 0.01
    assert int8["metric"]["name"] == "f1" and int8["metric"]["reference"] > 0.5, "the toy task was learned"
    assert int8["metric"]["source"] == "labelled set: toy"
    assert 0 < int8["max_abs_diff"] < 1.0, "int8 is close, not exact"
    graph = onnx.load(str(xlmr.store.path(manifest.id) / "model.onnx"))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.graph.node)
    quantization = manifest.extra["quantization"]
    assert quantization["recipe"] == "all" and quantization["rejected"] == [], "the fastest recipe passed"
    assert quantization["float_matmuls"] == {"ffn_output": 0, "adapter_sized": 5}, "2 x (down, up) + the head"
    assert manifest.extra["optimizer"]["applied"] is False, "CPU graphs skip the offline fusions by default"


def test_int8_falls_back_to_float_ffn_outputs_when_the_fast_recipe_fails(
    xlmr: TinyStore, toy: tuple[str, LabelledSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langadapt.export import precision as precision_module

    real = precision_module.quantize_int8

    def broken_fast_recipe(source: Path, target: Path, recipe: str = "all") -> dict[str, Any]:
        details = real(source, target, recipe)
        if recipe == "all":  # stand-in for a recipe too coarse for this adapter: the head's weights negated
            graph = onnx.load(str(target))
            head = next(t for t in graph.graph.initializer if list(t.dims) == [32, len(TAGS)])
            head.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(head), head.name))
            onnx.save(graph, str(target))
        return details

    monkeypatch.setattr(precision_module, "quantize_int8", broken_fast_recipe)
    task_id, labelled = toy
    manifest = export_fused(xlmr.store, None, task_id, quantize="int8", labelled=labelled)
    quantization = manifest.extra["quantization"]
    assert quantization["recipe"] == "ffn-float" and quantization["float_matmuls"]["ffn_output"] == 2
    assert [r["recipe"] for r in quantization["rejected"]] == ["all"]
    assert quantization["rejected"][0]["figures"]["agreement"] < 0.5
    assert manifest.metrics["parity"]["int8"]["agreement"] >= 0.99


def test_fp16_graph_runs_and_agrees(xlmr: TinyStore, toy: tuple[str, LabelledSet]) -> None:
    task_id, labelled = toy
    manifest = export_fused(xlmr.store, None, task_id, precision="fp16", labelled=labelled)
    fp16 = manifest.metrics["parity"]["fp16"]
    assert fp16["passed"] and fp16["agreement"] >= 0.99
    assert manifest.extra["optimizer"]["applied"] is True, "fp16 graphs get the offline fusions by default"
    graph = onnx.load(str(xlmr.store.path(manifest.id) / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "io stays float32"
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)


def test_precision_combinations_are_checked_before_any_work() -> None:
    assert precision_label("fp32", None) == "fp32" and precision_label("fp32", "int8") == "int8"
    with pytest.raises(ExportError, match="int8 is for CPU"):
        precision_label("fp16", "int8")
    with pytest.raises(ExportError, match="unknown precision"):
        precision_label("bf16", None)


def test_language_adapter_in_the_task_slot_is_refused(xlmr: TinyStore) -> None:
    with pytest.raises(ExportError, match="without a classification or tagging head"):
        export_fused(xlmr.store, None, "yor_Latn-mlm-seq_bn")
    with pytest.raises(ExportError, match="not a language"):
        export_fused(xlmr.store, "ibo_Latn-topic", "yor_Latn-topic")


def test_verify_passes_then_fails_on_tampering_and_on_altered_weights(xlmr: TinyStore, tmp_path: Path) -> None:
    manifest = export_fused(xlmr.store, "yor_Latn-mlm-seq_bn", "yor_Latn-topic", out=tmp_path / "copy")
    assert (tmp_path / "copy" / "model.onnx").is_file() and (tmp_path / "copy" / "manifest.json").is_file()
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text())["id"] == manifest.id
    result = verify_artifact(xlmr.store, manifest.id)
    assert result["parity"]["passed"] and result["version"] == manifest.version

    # Altered weights, republished with consistent checksums: only the parity check can notice.
    graph = onnx.load(str(xlmr.store.path(manifest.id) / "model.onnx"))
    largest = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(largest).copy()
    values.flat[: values.size // 50] += 0.5
    largest.CopyFrom(onnx.numpy_helper.from_array(values, largest.name))
    altered = tmp_path / "altered"
    altered.mkdir()
    onnx.save(graph, str(altered / "model.onnx"))
    republished = xlmr.store.publish(altered, manifest.model_copy(update={"files": {}, "version": 0}))
    with pytest.raises(ParityError, match="does not match"):
        verify_artifact(xlmr.store, republished.id, republished.version)

    # Tampered bytes in place: the store's checksum refuses the file before any graph is run.
    target = xlmr.store.path(manifest.id, manifest.version) / "model.onnx"
    target.chmod(0o644)
    with target.open("r+b") as handle:
        handle.seek(-64, 2)
        handle.write(b"\0" * 8)
    with pytest.raises(StoreError, match="sha256"):
        verify_artifact(xlmr.store, manifest.id, manifest.version)
    xlmr.store.remove(manifest.id)


def test_a_default_exports_through_the_view_into_the_writable_store(xlmr: TinyStore, tmp_path: Path) -> None:
    """The tiny store as the read-only defaults layer under an empty writable store, as a fresh install has it."""
    view = LayeredStore(AdapterStore(tmp_path / "store"), defaults=xlmr.store)
    before = xlmr.store.generation()
    manifest = export_fused(view, "yor_Latn-mlm-seq_bn", "yor_Latn-topic")
    assert manifest.id == "default-yor_Latn-topic.default-yor_Latn-mlm-seq_bn.onnx-fp32"
    assert [(s.id, s.source) for s in manifest.sources or []] == [
        ("yor_Latn-mlm-seq_bn", "default"),
        ("yor_Latn-topic", "default"),
    ]
    assert view.writable.ids() == [manifest.id] and xlmr.store.generation() == before  # defaults untouched

    # A store adapter of the same id, with other weights, now shadows the default: re-verifying the artifact still
    # reads the default it was exported from, and a new export of the id reads the store's, under its own id.
    view.writable.publish(xlmr.store.path("ibo_Latn-topic"), xlmr.store.get("yor_Latn-topic"))
    assert verify_artifact(view, manifest.id)["parity"]["passed"]
    mine = export_fused(view, None, "yor_Latn-topic")
    assert mine.id == "yor_Latn-topic.onnx-fp32" and (mine.sources or [])[0].source == "store"


def test_verify_refuses_what_is_not_an_export(xlmr: TinyStore) -> None:
    with pytest.raises(ExportError, match="not an ONNX export"):
        verify_artifact(xlmr.store, "ibo_Latn-topic")


def test_out_must_be_new_or_empty(xlmr: TinyStore, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_fused(xlmr.store, None, "ibo_Latn-topic", out=tmp_path / "full")


def test_fused_model_uses_the_head_of_the_task_adapter(xlmr: TinyStore) -> None:
    model = AutoAdapterModel.from_pretrained(xlmr.info.path).eval()
    folder = xlmr.store.path("ibo_Latn-topic")
    head = Head.from_folder(folder)
    fused = FusedModel(model, [None, AdapterWeights.from_folder(folder)], head).eval()
    ids = torch.tensor([[0, 10, 11, 2]])
    logits = fused(ids, torch.ones_like(ids))
    perturb(fused, ["head_weights"], scale=1.0)
    assert logits.shape == (1, len(TOPICS))
    assert (fused(ids, torch.ones_like(ids)) - logits).abs().max() > 0.1


@pytest.mark.gpu
@needs_cuda
def test_fp16_on_the_cuda_provider(xlmr: TinyStore, toy: tuple[str, LabelledSet]) -> None:
    task_id, labelled = toy
    manifest = export_fused(xlmr.store, None, task_id, precision="fp16", labelled=labelled)
    assert manifest.metrics["parity"]["fp16"]["checked_on"] == "cuda"
    runtime = FusedRuntime(xlmr.store.path(manifest.id), device="cuda")
    assert runtime.providers[0] == "CUDAExecutionProvider" and runtime.device == "cuda"
    assert verify_artifact(xlmr.store, manifest.id, device="cuda", labelled=labelled)["parity"]["passed"]


def test_a_fully_fine_tuned_model_exports_fused_too(xlmr: TinyStore, tmp_path: Path) -> None:
    from safetensors.torch import save_model

    model = AutoAdapterModel.from_pretrained(xlmr.info.path).eval()
    model.add_classification_head("full", num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    perturb(model, ["heads", "encoder"], scale=0.05, seed=11)  # a "fine-tuned" base: every weight moved
    folder = tmp_path / "full"
    folder.mkdir()
    save_model(model.base_model, str(folder / "model.safetensors"))  # as the trainer saves a `full` model
    model.save_head(str(folder), "full", use_safetensors=True)
    xlmr.store.publish(
        folder,
        {
            "id": "yor_Latn-sentiment-full",
            "language": "yor_Latn",
            "task": "sentiment",
            "kind": "full",
            "artifact": "model",
            "labels": ["negative", "neutral", "positive"],
            "head_type": "classification",
            "base_model": str(xlmr.info.path),
            "base_fingerprint": xlmr.info.fingerprint,
        },
    )
    manifest = export_fused(xlmr.store, None, "yor_Latn-sentiment-full", optimize=False)
    runtime = FusedRuntime(xlmr.store.path(manifest.id), device="cpu")
    model.active_head = "full"
    ids, mask = padded_batch(model.config.vocab_size, model.config.pad_token_id, [8, 3])
    assert max_diff(reference_logits(model, ids, mask), runtime.run(ids, mask), mask) <= ATOL
    with pytest.raises(ExportError, match="takes no language adapter"):
        export_fused(xlmr.store, "yor_Latn-mlm-seq_bn", "yor_Latn-sentiment-full")
