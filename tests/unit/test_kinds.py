"""Adapter kinds: the paper's defaults, overrides, computed parameter counts, and a working adapter on tiny models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import adapters
import pytest
import torch
from adapters import LoRAConfig, SeqBnConfig, SeqBnInvConfig
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, BertConfig, XLMRobertaConfig

from langadapt.models import kinds
from langadapt.models.kinds import (
    ADAPTER_KINDS,
    ARTIFACT_KINDS,
    HEAD_TYPES,
    TASKS,
    AdapterKind,
    count_parameters,
    get_kind,
    get_task,
    register_artifact,
    register_head_type,
    register_kind,
    register_task,
)

KINDS = ["seq_bn", "seq_bn_inv", "lora"]

# The embedded default (multilingual-e5-small) and XLM-R base, built locally: nothing is downloaded.
BASE_CONFIGS = {
    "e5-small": BertConfig(
        vocab_size=250037,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    ),
    "xlmr-base": XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
    ),
}

# xlmr-base values are the paper's Table 9.
EXPECTED_COUNTS = {
    ("e5-small", "seq_bn"): 226_080,
    ("e5-small", "seq_bn_inv"): 300_384,
    ("e5-small", "lora"): 147_456,
    ("xlmr-base", "seq_bn"): 894_528,
    ("xlmr-base", "seq_bn_inv"): 1_190_592,
    ("xlmr-base", "lora"): 294_912,
}


@pytest.fixture(scope="module")
def paper_counts() -> dict[tuple[str, str], int]:
    """Every kind counted once on each base configuration."""
    return {(base, kind): count_parameters(kind, BASE_CONFIGS[base]) for base, kind in EXPECTED_COUNTS}


def test_registry_holds_the_tasks_head_types_and_artifact_kinds() -> None:
    assert {name: (t.head_type, t.served, t.selection_metric) for name, t in TASKS.items()} == {
        "ner": ("tagging", True, "f1"),
        "sentiment": ("classification", True, "macro_f1"),
        "topic": ("classification", True, "macro_f1"),
        "mlm": ("masked_lm", False, None),
        "lid": ("language_id", False, "accuracy"),
    }
    assert {name: h.per_token for name, h in HEAD_TYPES.items()} == {
        "classification": False,
        "tagging": True,
        "masked_lm": True,
        "language_id": False,
    }
    assert {name: a.backend for name, a in ARTIFACT_KINDS.items()} == {
        "adapter": "torch",
        "model": None,
        "onnx-fused": "onnx-fused",
        "onnx-swappable": "onnx-swappable",
    }
    registries = (TASKS, HEAD_TYPES, ADAPTER_KINDS, ARTIFACT_KINDS)
    assert all(entry.name == name and entry.help for registry in registries for name, entry in registry.items())


def test_derived_lists_follow_the_registry() -> None:
    assert kinds.SERVED_TASKS == ("ner", "sentiment", "topic")
    assert kinds.LANGUAGE_TASK == "mlm" and not TASKS[kinds.LANGUAGE_TASK].served
    assert kinds.LID_TASK == "lid" and not TASKS[kinds.LID_TASK].served
    assert dict(kinds.TASK_HEAD_TYPES) == {"ner": "tagging", "sentiment": "classification", "topic": "classification"}
    assert kinds.LABEL_HEAD_TYPES == ("classification", "tagging")
    assert kinds.BANK_KINDS == ("seq_bn", "seq_bn_inv", "lora") == tuple(ADAPTER_KINDS)
    assert (*ADAPTER_KINDS, kinds.FULL_KIND, kinds.LID_KIND) == kinds.MODEL_KINDS
    assert kinds.DEFAULT_KIND in ADAPTER_KINDS
    assert kinds.BACKENDS == ("auto", "torch", "onnx-fused", "onnx-swappable")
    assert {kinds.ADAPTER_ARTIFACT, kinds.MODEL_ARTIFACT, kinds.FUSED_ARTIFACT, kinds.SWAPPABLE_ARTIFACT} == set(
        ARTIFACT_KINDS
    )
    assert {kinds.CLASSIFICATION, kinds.TAGGING, kinds.MASKED_LM, kinds.LANGUAGE_ID} == set(HEAD_TYPES)


def test_lists_elsewhere_are_the_registry_s() -> None:
    from langadapt.inference import routing
    from langadapt.label import formats
    from langadapt.models import heads, manifest
    from langadapt.serve import schemas
    from langadapt.training import metrics

    assert routing.Router.__init__.__kwdefaults__["tasks"] == kinds.SERVED_TASKS
    assert get_args(schemas.ServedTask) == kinds.SERVED_TASKS
    assert tuple(schemas.MultiTaskResult.model_fields)[: len(kinds.SERVED_TASKS)] == kinds.SERVED_TASKS  # then auto's
    assert heads.LABEL_HEAD_TYPES == kinds.LABEL_HEAD_TYPES
    assert metrics.SELECTION_METRICS == {"ner": "f1", "sentiment": "macro_f1", "topic": "macro_f1", "lid": "accuracy"}
    assert formats.NER == "ner" and formats.ENTITIES_COLUMN == "ner_entities"
    assert manifest.Manifest.model_fields["artifact"].default == kinds.ADAPTER_ARTIFACT


def test_backends_are_named_as_registered() -> None:
    from langadapt.inference import auto_backend, backends

    classes = (auto_backend.AutoBackend, backends.TorchBackend, backends.FusedBackend, backends.SwappableBackend)
    assert sorted(cls.name for cls in classes) == sorted(kinds.BACKENDS)
    assert auto_backend.BACKENDS == kinds.BACKENDS  # create_backend (there) knows every registered backend


def test_get_task() -> None:
    assert get_task("NER") is TASKS["ner"]
    with pytest.raises(ValueError, match="choose one of: ner, sentiment, topic, mlm, lid"):
        get_task("pos")


def test_each_entry_is_registered_once() -> None:
    with pytest.raises(ValueError, match="task 'ner' is already registered"):
        register_task("ner", head_type="tagging", served=True, selection_metric="f1", help="again")
    with pytest.raises(ValueError, match="unknown head type 'span'"):
        register_task("spans", head_type="span", served=True, selection_metric="f1", help="no such head")
    with pytest.raises(ValueError, match="head type 'tagging' is already registered"):
        register_head_type("tagging", per_token=True, help="again")
    with pytest.raises(ValueError, match="artifact kind 'onnx-fused' is already registered"):
        register_artifact("onnx-fused", backend="onnx-fused", help="again")
    assert list(TASKS) == ["ner", "sentiment", "topic", "mlm", "lid"]


def test_importing_the_registry_imports_no_model_library() -> None:
    code = "import sys, langadapt.models.kinds; print(sorted({'torch', 'adapters', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_holds_the_three_kinds() -> None:
    assert list(ADAPTER_KINDS) == KINDS
    assert all(kind.name == name and kind.help for name, kind in ADAPTER_KINDS.items())


@pytest.mark.parametrize(
    ("name", "config_class", "expected"),
    [
        ("seq_bn", SeqBnConfig, {"reduction_factor": 16, "original_ln_before": True, "inv_adapter": None}),
        (
            "seq_bn_inv",
            SeqBnInvConfig,
            {"reduction_factor": 16, "inv_adapter": "nice", "inv_adapter_reduction_factor": 2},
        ),
        (
            "lora",
            LoRAConfig,
            {
                "r": 8,
                "alpha": 8,
                "selfattn_lora": True,
                "attn_matrices": ["q", "v"],
                "intermediate_lora": False,
                "output_lora": False,
            },
        ),
    ],
)
def test_paper_defaults(name: str, config_class: type, expected: dict) -> None:
    config = get_kind(name).build_config()
    assert type(config) is config_class
    assert {key: getattr(config, key) for key in expected} == expected


def test_every_value_can_be_overridden() -> None:
    config = get_kind("lora").build_config(r=4, alpha=16, attn_matrices=["q", "k", "v"], dropout=0.1)
    assert (config.r, config.alpha, config.attn_matrices, config.dropout) == (4, 16, ["q", "k", "v"], 0.1)
    assert get_kind("seq_bn").build_config(reduction_factor=8, non_linearity="gelu").reduction_factor == 8


def test_built_configs_do_not_share_state_with_the_defaults() -> None:
    kind = get_kind("lora")
    kind.build_config().attn_matrices.append("k")
    assert kind.build_config().attn_matrices == ["q", "v"]
    with pytest.raises(TypeError):
        kind.defaults["r"] = 4  # type: ignore[index]


def test_unknown_override_names_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown lora override 'rank'.*valid keys: .*attn_matrices.*\br\b"):
        get_kind("lora").build_config(rank=4)
    with pytest.raises(ValueError, match="reduction_factor"):
        count_parameters("seq_bn", BASE_CONFIGS["e5-small"], reduction=8)


def test_architecture_is_not_an_override() -> None:
    with pytest.raises(ValueError, match="'architecture'"):
        get_kind("lora").build_config(architecture="prefix_tuning")


def test_get_kind() -> None:
    assert get_kind("seq_bn") is ADAPTER_KINDS["seq_bn"]
    assert get_kind("SEQ-BN-INV") is ADAPTER_KINDS["seq_bn_inv"]
    with pytest.raises(ValueError, match="choose one of: seq_bn, seq_bn_inv, lora"):
        get_kind("prefix_tuning")


def test_a_kind_is_registered_once_with_known_defaults() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind("lora", config="LoRAConfig", defaults={}, help="again")
    with pytest.raises(ValueError, match="unknown seq_bn2 default 'rank'"):
        AdapterKind(name="seq_bn2", help="bad", config="SeqBnConfig", defaults={"rank": 4}).build_config()
    assert list(ADAPTER_KINDS) == KINDS


def test_config_class_is_looked_up_by_name() -> None:
    assert [kind.config_class for kind in ADAPTER_KINDS.values()] == [SeqBnConfig, SeqBnInvConfig, LoRAConfig]


@pytest.mark.parametrize(("base", "kind"), EXPECTED_COUNTS)
def test_parameter_counts_match_the_paper(paper_counts: dict[tuple[str, str], int], base: str, kind: str) -> None:
    assert paper_counts[base, kind] == EXPECTED_COUNTS[base, kind]


@pytest.mark.parametrize(
    ("kind", "overrides", "expected"),
    [
        ("seq_bn", {"reduction_factor": 8}, 1_779_840),  # bottleneck 96 instead of 48
        ("seq_bn", {"reduction_factor": 32}, 451_872),
        ("seq_bn_inv", {"inv_adapter_reduction_factor": 4}, 1_042_944),  # NICE halves shrink
        ("lora", {"r": 4}, 147_456),
        ("lora", {"attn_matrices": ["q", "k", "v"]}, 442_368),
    ],
)
def test_overrides_change_the_count(kind: str, overrides: dict, expected: int) -> None:
    base = BASE_CONFIGS["xlmr-base"]
    default = EXPECTED_COUNTS["xlmr-base", kind]
    count = count_parameters(kind, base, **overrides)
    assert count == expected
    assert count != default


def test_count_accepts_a_kind_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    base = BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    calls: list[int] = []
    real = kinds._count_on_meta

    def counting(*args: object) -> int:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(kinds, "_count_on_meta", counting)
    first = count_parameters(get_kind("seq_bn"), base)
    assert count_parameters("seq_bn", base) == first == 3 * (64 * 4 + 4 + 4 * 64 + 64)
    assert count_parameters("seq_bn", base, reduction_factor=16) == first  # an override equal to the default
    assert len(calls) == 1
    count_parameters("seq_bn", base, reduction_factor=8)
    assert len(calls) == 2


def _adapter_parameters(model: torch.nn.Module, name: str, part: str = "") -> list[torch.nn.Parameter]:
    """The parameters of adapter `name` (optionally only those whose path contains `part`)."""
    return [p for n, p in model.named_parameters() if name in n.split(".") and part in n]


@pytest.mark.parametrize("kind", KINDS)
def test_kind_builds_a_working_adapter_on_tiny_models(kind: str, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tokenizer(["Ọmọ náà lọ sí ilé ìwé.", "Yaran sun tafi makaranta a Kano."], padding=True, return_tensors="pt")
    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return model(**batch).logits

    base = logits()
    adapters.init(model)
    model.add_adapter("lang", config=get_kind(kind).build_config())
    params = _adapter_parameters(model, "lang")
    assert sum(p.numel() for p in params) == count_parameters(kind, AutoConfig.from_pretrained(tiny_model_dir))
    assert torch.equal(logits(), base), "an added but inactive adapter must not change outputs"

    model.set_active_adapters("lang")
    active = logits()
    # LoRA starts as the identity (B = 0); Pfeiffer bottlenecks re-apply the layer norm and start from random
    # weights, so they change the outputs from the start.
    assert torch.allclose(active, base, atol=1e-6) == (kind == "lora")

    torch.manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.5)
    perturbed = logits()
    assert torch.isfinite(perturbed).all()
    assert not torch.allclose(perturbed, active, atol=1e-4), "the active adapter's weights must reach the outputs"

    if kind == "seq_bn_inv":  # the invertible embedding adapter is wired in too
        with torch.no_grad():
            for p in _adapter_parameters(model, "lang", "invertible_adapters"):
                p.add_(torch.randn_like(p) * 0.5)
        assert not torch.allclose(logits(), perturbed, atol=1e-4)

    model.set_active_adapters(None)
    assert torch.equal(logits(), base), "with the adapter inactive the base model is untouched"
