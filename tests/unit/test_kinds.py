"""Adapter kinds: the paper's defaults, overrides, computed parameter counts, and a working adapter on tiny models."""

from __future__ import annotations

from pathlib import Path

import adapters
import pytest
import torch
from adapters import LoRAConfig, SeqBnConfig, SeqBnInvConfig
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, BertConfig, XLMRobertaConfig

from langadapt.models import kinds
from langadapt.models.kinds import ADAPTER_KINDS, AdapterKind, count_parameters, get_kind, register_kind

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
        register_kind("lora", config_class=LoRAConfig, defaults={}, help="again")
    with pytest.raises(ValueError, match="unknown seq_bn2 default 'rank'"):
        AdapterKind(name="seq_bn2", help="bad", config_class=SeqBnConfig, defaults={"rank": 4})
    assert list(ADAPTER_KINDS) == KINDS


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
