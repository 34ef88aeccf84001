"""AdapterBank and BankedEncoder: one forward, a different adapter stack per row, checked against `adapters` itself."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from adapters import (
    AutoAdapterModel,
    DoubleSeqBnConfig,
    LoRAConfig,
    ParBnConfig,
    SeqBnConfig,
    SeqBnInvConfig,
    Stack,
)
from adapters.loading import AdapterLoader

from langadapt.models.bank import (
    BARE_INDEX,
    AdapterBank,
    AdapterWeights,
    BankedEncoder,
    BankLayout,
)

ATOL = 1e-5


def _lora(r: int, alpha: int) -> LoRAConfig:
    return LoRAConfig(
        r=r, alpha=alpha, attn_matrices=["q", "v"], selfattn_lora=True, intermediate_lora=False, output_lora=False
    )


# Two adapters of every kind, with different sizes so that padding to the largest is exercised.
ADAPTER_CONFIGS: dict[str, Any] = {
    "bn_a": SeqBnConfig(reduction_factor=16),
    "bn_b": SeqBnConfig(reduction_factor=8),
    "inv_a": SeqBnInvConfig(reduction_factor=16, inv_adapter="nice", inv_adapter_reduction_factor=2),
    "inv_b": SeqBnInvConfig(reduction_factor=16, inv_adapter="nice", inv_adapter_reduction_factor=4),
    "lora_a": _lora(8, 8),
    "lora_b": _lora(4, 16),
    "task_a": SeqBnConfig(reduction_factor=16),
    "task_b": SeqBnConfig(reduction_factor=16),
}
# Stack key → (language adapter or None, task adapter), as `Stack(lang, task)` applies them.
STACKS: dict[str, tuple[str | None, str]] = {
    "task_a": (None, "task_a"),
    "bn_a+task_a": ("bn_a", "task_a"),
    "bn_b+task_b": ("bn_b", "task_b"),
    "inv_a+task_a": ("inv_a", "task_a"),
    "inv_b+task_b": ("inv_b", "task_b"),
    "lora_a+task_a": ("lora_a", "task_a"),
    "lora_b+task_b": ("lora_b", "task_b"),
    "lora_a+lora_b": ("lora_a", "lora_b"),  # the library chains LoRAs in a Stack; the bank folds the chain
}
ROW_KEYS = ["bare", *STACKS]
ROW_LENGTHS = [6, 9, 3, 12, 7, 4, 10, 5, 8]


@dataclass
class Setup:
    """One tiny architecture with every adapter loaded and perturbed, its bank, and per-stack reference outputs."""

    model: Any
    weights: dict[str, AdapterWeights]
    bank: AdapterBank
    encoder: BankedEncoder
    rows: dict[str, torch.Tensor]
    refs: dict[str, torch.Tensor]


def reference(model: Any, stack: tuple[str | None, str] | None, ids: torch.Tensor) -> torch.Tensor:
    """The `adapters` model's last hidden states for one unpadded row under `Stack(lang, task)` (or the bare base)."""
    if stack is None:
        model.set_active_adapters(None)
    else:
        lang, task = stack
        model.set_active_adapters(Stack(lang, task) if lang else task)
    with torch.no_grad():
        out = model.base_model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None])
    model.set_active_adapters(None)
    return out.last_hidden_state[0]


def add_stack(bank: AdapterBank, weights: dict[str, AdapterWeights], key: str, stack: tuple[str | None, str]) -> int:
    lang, task = stack
    return bank.add_stack(key, weights[lang] if lang else None, None, weights[task])


def make_batch(
    setup: Setup, keys: list[str], bank: AdapterBank | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask for the rows of `keys`, and each row's stack index in `bank` (the shared one)."""
    bank = bank or setup.bank
    pad = setup.model.config.pad_token_id
    longest = max(len(setup.rows[k]) for k in keys)
    ids = torch.full((len(keys), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, key in enumerate(keys):
        row = setup.rows[key]
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return ids, mask, torch.tensor([BARE_INDEX if k == "bare" else bank.index_of(k) for k in keys])


def run(setup: Setup, keys: list[str], bank: AdapterBank | None = None) -> torch.Tensor:
    bank = bank or setup.bank
    ids, mask, index = make_batch(setup, keys, bank)
    with torch.no_grad():
        return setup.encoder(ids, mask, index, **bank.tensors())


def assert_rows_match(setup: Setup, keys: list[str], out: torch.Tensor) -> None:
    """Row for row, non-padding positions equal the reference of the row's stack within ATOL."""
    for b, key in enumerate(keys):
        n = len(setup.rows[key])
        torch.testing.assert_close(out[b, :n], setup.refs[key], atol=ATOL, rtol=0, msg=lambda m, k=key: f"row {k}: {m}")


@pytest.fixture(scope="module", params=["xlmr", "bert"])
def setup(request: pytest.FixtureRequest) -> Setup:
    model_dir: Path = request.getfixturevalue(f"tiny_{request.param}_dir")
    model = AutoAdapterModel.from_pretrained(model_dir).eval()
    for name, config in ADAPTER_CONFIGS.items():
        model.add_adapter(name, config=config)
    # The library initialises up-projections and LoRA B at or near zero: perturb every adapter weight so it matters.
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if any(f".{name}." in key for name in ADAPTER_CONFIGS):
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    weights = {name: AdapterWeights.from_model(model, name) for name in ADAPTER_CONFIGS}
    bank = AdapterBank.for_model(model, capacity=2)  # small on purpose: adding stacks must grow it
    for key, stack in STACKS.items():
        add_stack(bank, weights, key, stack)

    rows: dict[str, torch.Tensor] = {}
    for key, length in zip(ROW_KEYS, ROW_LENGTHS, strict=True):
        row = torch.randint(5, model.config.vocab_size, (length,), generator=gen)
        row[0], row[-1] = 0, 2  # <s> … </s>
        rows[key] = row
    refs = {key: reference(model, STACKS.get(key), rows[key]) for key in ROW_KEYS}
    return Setup(model, weights, bank, BankedEncoder(model).eval(), rows, refs)


def test_references_differ_so_parity_means_something(setup: Setup) -> None:
    bare = setup.refs["bare"]
    firsts = {key: ref[:3] for key, ref in setup.refs.items()}
    for key in STACKS:
        assert (setup.refs[key][:3] - bare[:3]).abs().max() > 0.1, f"{key} barely changes the base"
    for a in firsts:
        for b in firsts:
            if a < b:
                assert (firsts[a] - firsts[b]).abs().max() > 0.05, f"{a} and {b} give the same output"


def test_mixed_batch_matches_each_stack_alone(setup: Setup) -> None:
    assert_rows_match(setup, ROW_KEYS, run(setup, ROW_KEYS))


def test_row_order_and_repeats_do_not_matter(setup: Setup) -> None:
    reordered = [*reversed(ROW_KEYS), "inv_a+task_a", "inv_b+task_b", "bare", "lora_a+task_a"]
    assert_rows_match(setup, reordered, run(setup, reordered))


@pytest.mark.parametrize("key", ROW_KEYS)
def test_batch_of_one(setup: Setup, key: str) -> None:
    assert_rows_match(setup, [key], run(setup, [key]))


def test_only_the_bank_decides_not_the_models_active_adapters(setup: Setup) -> None:
    setup.model.set_active_adapters(Stack("inv_a", "task_a"))
    try:
        out = run(setup, ["bare", "bn_b+task_b"])
    finally:
        setup.model.set_active_adapters(None)
    assert_rows_match(setup, ["bare", "bn_b+task_b"], out)
    base = setup.model.base_model
    assert setup.encoder.base is base
    word = base.embeddings.word_embeddings.weight
    assert any(p.data_ptr() == word.data_ptr() for p in setup.encoder.parameters()), "the base must not be copied"


def fresh_bank(setup: Setup, keys: list[str], **kwargs: Any) -> AdapterBank:
    bank = AdapterBank.for_model(setup.model, **kwargs)
    for key in keys:
        add_stack(bank, setup.weights, key, STACKS[key])
    return bank


def test_reset_makes_a_row_the_bare_base_and_set_restores_it(setup: Setup) -> None:
    keys = ["inv_a+task_a", "lora_b+task_b", "bn_a+task_a"]
    bank = fresh_bank(setup, keys)
    index = bank.index_of("inv_a+task_a")
    bank.reset(index)
    out = run(setup, keys, bank)
    # The row keeps the inv_a row's tokens; its expected output is now the bare base on those tokens.
    row = setup.rows[keys[0]]
    torch.testing.assert_close(out[0, : len(row)], reference(setup.model, None, row), atol=ATOL, rtol=0)
    assert (out[0, :3] - setup.refs[keys[0]][:3]).abs().max() > 0.1
    assert_rows_match(setup, keys[1:], out[1:])
    assert "inv_a+task_a" in bank, "reset clears weights, not the key"

    bank.set(index, setup.weights["inv_a"], None, setup.weights["task_a"])
    assert_rows_match(setup, keys, run(setup, keys, bank))


def test_remove_frees_the_index_and_add_reuses_it(setup: Setup) -> None:
    bank = fresh_bank(setup, ["bn_a+task_a", "inv_b+task_b", "lora_a+task_a"])
    index = bank.remove("inv_b+task_b")
    assert "inv_b+task_b" not in bank and len(bank) == 2
    with pytest.raises(KeyError, match="inv_b"):
        bank.index_of("inv_b+task_b")
    assert all(float(t[index].abs().sum()) == 0.0 for t in bank.tensors().values())

    new_key = "inv_a+task_b"  # a combination no other test builds
    assert bank.add_stack(new_key, setup.weights["inv_a"], None, setup.weights["task_b"]) == index
    ids, mask, _ = make_batch(setup, ["inv_b+task_b", "bn_a+task_a"])  # the inv_b row's tokens, under the new stack
    stack_index = torch.tensor([index, bank.index_of("bn_a+task_a")])
    with torch.no_grad():
        out = setup.encoder(ids, mask, stack_index, **bank.tensors())
    row = setup.rows["inv_b+task_b"]
    torch.testing.assert_close(out[0, : len(row)], reference(setup.model, ("inv_a", "task_b"), row), atol=ATOL, rtol=0)
    assert_rows_match(setup, ["bn_a+task_a"], out[1:])
    with pytest.raises(ValueError, match="already at index"):
        bank.add_stack(new_key, None, None, setup.weights["task_a"])


def test_layout_shapes_padding_and_growth(setup: Setup) -> None:
    bank = setup.bank
    cfg = setup.model.config
    n, layers, hidden = bank.capacity, cfg.num_hidden_layers, cfg.hidden_size
    assert n >= len(STACKS) + 1 and n & (n - 1) == 0, "capacity doubles from 2"
    t = bank.tensors()
    assert list(t) == list(bank.layout.tensor_names())
    assert t["bn_down_w"].shape == (n, 2, layers, hidden, hidden // 8)  # bn_b (reduction 8) is the widest
    assert t["bn_up_w"].shape == (n, 2, layers, hidden // 8, hidden)
    assert t["lora_q_a"].shape == (n, layers, hidden, 8) and t["lora_v_b"].shape == (n, layers, 8, hidden)
    assert t["inv_f_down_w"].shape == (n, hidden // 2, hidden // 4) and t["inv_g_up_b"].shape == (n, hidden // 2)
    assert all(float(x[BARE_INDEX].abs().sum()) == 0.0 for x in t.values())
    assert bank.nbytes == sum(x.numel() * 4 for x in t.values())
    # Stack members land in their slots: a task-only stack fills the task slot and leaves the language slot zero.
    task_only = bank.index_of("task_a")
    assert float(t["bn_up_w"][task_only, 0].abs().sum()) == 0.0 and float(t["bn_up_w"][task_only, 1].abs().sum()) > 0
    # LoRA scaling alpha/r is folded into b: lora_b has r=4, alpha=16.
    a, b = setup.weights["lora_b"].lora[("q", 0)]
    state = setup.model.state_dict()
    prefix = setup.model.base_model_prefix
    raw_b = state[f"{prefix}.encoder.layer.0.attention.self.query.loras.lora_b.lora_B"]
    torch.testing.assert_close(b, raw_b.t() * 4.0)
    assert a.shape == (hidden, 4)


def test_loads_from_saved_safetensors_and_raw_state_dicts(setup: Setup, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    for name in ("inv_b", "task_b", "lora_a"):
        setup.model.save_adapter(str(tmp_path / name), name, with_head=False, use_safetensors=True)
    from_folders = AdapterBank.for_model(setup.model)
    from_folders.add_stack(
        "inv", AdapterWeights.from_folder(tmp_path / "inv_b"), None, AdapterWeights.from_folder(tmp_path / "task_b")
    )
    raw = {
        name: (
            load_file(str(tmp_path / name / "adapter.safetensors")),
            json.loads((tmp_path / name / "adapter_config.json").read_text()),
        )
        for name in ("lora_a", "task_b")
    }
    from_folders.add_stack("lora", *raw["lora_a"], *raw["task_b"])
    from_model = fresh_bank(setup, [])
    add_stack(from_model, setup.weights, "inv", ("inv_b", "task_b"))
    add_stack(from_model, setup.weights, "lora", ("lora_a", "task_b"))
    for name, tensor in from_model.tensors().items():
        torch.testing.assert_close(from_folders.tensors()[name], tensor, atol=0, rtol=0, msg=name)

    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_adapter.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle"):
        AdapterWeights.from_folder(tmp_path / "pickled")


def test_refuses_adapters_it_cannot_compute_exactly(setup: Setup) -> None:
    state, _ = AdapterLoader(setup.model).save_to_state_dict("task_a")
    AdapterWeights.from_state_dict(state, SeqBnConfig())  # the supported shape parses
    with pytest.raises(ValueError, match="original_ln_before"):
        AdapterWeights.from_state_dict(state, DoubleSeqBnConfig())
    with pytest.raises(ValueError, match="is_parallel"):
        AdapterWeights.from_state_dict(state, ParBnConfig())
    with pytest.raises(ValueError, match="cannot apply exactly"):
        extra = {"encoder.layer.0.intermediate.dense.loras.task_a.lora_A": torch.zeros(8, 32)}
        AdapterWeights.from_state_dict({**state, **extra}, SeqBnConfig())
    lora_state, _ = AdapterLoader(setup.model).save_to_state_dict("lora_a")
    with pytest.raises(ValueError, match="several adapters"):
        renamed = {k.replace(".lora_a.", ".other."): v for k, v in lora_state.items()}
        AdapterWeights.from_state_dict({**lora_state, **renamed}, _lora(8, 8))
    with pytest.raises(ValueError, match="use_dora"):
        AdapterWeights.from_state_dict(lora_state, LoRAConfig(use_dora=True))

    bank = fresh_bank(setup, [])
    with pytest.raises(ValueError, match="bare base"):
        bank.set(BARE_INDEX, None, None, setup.weights["task_a"])
    with pytest.raises(IndexError):
        bank.set(bank.capacity, None, None, setup.weights["task_a"])
    wide = AdapterBank(BankLayout(num_layers=2, hidden_size=64))
    with pytest.raises(ValueError, match="different base model"):
        wide.add_stack("x", None, None, setup.weights["task_a"])
    q_only = AdapterBank.for_model(setup.model, lora_matrices=("q",))
    with pytest.raises(ValueError, match="lora_matrices"):
        q_only.add_stack("x", setup.weights["lora_a"], None, setup.weights["task_a"])
    assert len(q_only) == 0 and len(wide) == 0


def test_onnx_export_serves_a_grown_bank_without_re_export(setup: Setup, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    bank = fresh_bank(setup, ["task_a", "bn_a+task_a"], capacity=4)  # ranks at their smallest when traced
    encoder = setup.encoder
    ids, mask, index = make_batch(setup, ["task_a", "bare"], bank)
    path = tmp_path / "banked.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its own retirement
        torch.onnx.export(
            encoder,
            (ids, mask, index, *bank.tensors().values()),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=encoder.input_names,
            output_names=["last_hidden_state"],
            dynamic_axes=encoder.dynamic_axes(),
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == encoder.input_names

    # Grow the bank past its traced shapes: more stacks than capacity, wider bottleneck, LoRA and NICE ranks.
    for key in STACKS:
        if key not in bank:
            add_stack(bank, setup.weights, key, STACKS[key])
    assert bank.capacity > 4 and bank.tensors()["bn_down_w"].shape[-1] > 2
    keys = ["lora_a+lora_b", "bare", "inv_b+task_b", "inv_a+task_a", "bn_b+task_b", "task_a"]
    ids, mask, index = make_batch(setup, keys, bank)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "stack_index": index.numpy()}
    feeds.update({name: t.numpy() for name, t in bank.tensors().items()})
    (onnx_out,) = session.run(["last_hidden_state"], feeds)
    with torch.no_grad():
        torch_out = encoder(ids, mask, index, *bank.tensors().values())  # positional bank, as traced
    torch.testing.assert_close(torch.from_numpy(onnx_out), torch_out, atol=ATOL, rtol=0)
    assert_rows_match(setup, keys, torch.from_numpy(onnx_out))
