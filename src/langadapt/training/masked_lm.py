"""The base as a masked-language model with a language adapter: built fresh for training, or loaded from the store.

Bases that ship an MLM head (XLM-R, mBERT) keep it, frozen. Bases without one (the embedded multilingual-e5-small
is a plain `BertModel`) get a head whose decoder *is* the input embedding matrix (tied, frozen) and whose
transform and output bias are freshly initialised and trained with the adapter; it is saved beside the adapter
as `mlm_head.safetensors`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from langadapt.errors import BaseModelError, LangadaptError, StoreError
from langadapt.models.kinds import LANGUAGE_TASK, MANIFEST_FILE, get_kind

__all__ = [
    "HEAD_FILE",
    "MaskedLM",
    "adapters_off",
    "add_language_adapter",
    "load_language_adapter_mlm",
    "load_masked_lm",
    "save_language_adapter",
]


HEAD_FILE = "mlm_head.safetensors"


HeadSource = Literal["pretrained", "fresh"]


@dataclass
class MaskedLM:
    """A `*ForMaskedLM` model made adapter-capable, and which of its head parameters were freshly created."""

    model: Any
    head_source: HeadSource
    fresh_head: list[str]

    def head_state(self) -> dict[str, torch.Tensor]:
        """The fresh head parameters (empty for a pretrained head), by parameter name."""
        params = dict(self.model.named_parameters())
        return {name: params[name].detach().clone().contiguous() for name in self.fresh_head}


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence notices that are expected here: transformers' "newly initialized" head (explained in the manifest)
    and the `adapters` warning that no adapter is active, which it also logs while adapters are being switched."""
    from transformers.utils import logging as hf_logging

    hf_level = hf_logging.get_verbosity()
    mixin_log = logging.getLogger("adapters.model_mixin")
    mixin_level = mixin_log.level
    hf_logging.set_verbosity_error()
    mixin_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        mixin_log.setLevel(mixin_level)
        hf_logging.set_verbosity(hf_level)


def load_masked_lm(info: Any, *, seed: int = 0) -> MaskedLM:
    """The base as a `*ForMaskedLM` with `adapters.init` applied; a missing MLM head is created tied and fresh.

    The fresh part (transform and output bias) is initialised from `seed` alone, as BERT initialises it: dense
    weights N(0, initializer_range), biases 0, LayerNorm 1/0. The decoder is the input embedding matrix.
    """
    import adapters
    from transformers import AutoModelForMaskedLM

    try:
        with _quiet_libraries():
            model, loading = AutoModelForMaskedLM.from_pretrained(
                str(info.path), local_files_only=True, dtype=torch.float32, output_loading_info=True
            )
    except ValueError as err:
        raise BaseModelError(
            f"{info.id} cannot be loaded as a masked language model: {err}",
            "use an encoder with a masked-LM architecture (BERT, XLM-R, DistilBERT, ...)",
        ) from None
    prefix = model.base_model_prefix
    missing = set(loading["missing_keys"])
    missing_encoder = sorted(k for k in missing if k.startswith(f"{prefix}.") and "pooler" not in k)
    if missing_encoder:
        raise BaseModelError(
            f"{info.id} lacks encoder weights {missing_encoder[:3]}; it is not a complete encoder",
            "point --base at a full model directory",
        )
    decoder, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if decoder is None:
        raise BaseModelError(f"{type(model).__name__} exposes no output embeddings", "use a BERT-style MLM model")
    tied = decoder.weight.data_ptr() == embeddings.weight.data_ptr()
    decoder_names = {n for n, p in model.named_parameters(remove_duplicate=False) if p is decoder.weight}
    if not tied and decoder_names & missing:
        decoder.weight = embeddings.weight  # no pretrained decoder: the decoder is the embedding matrix
    fresh = sorted(n for n, _ in model.named_parameters() if n in missing)
    _init_fresh(model, fresh, seed)
    model.eval()
    adapters.init(model)
    return MaskedLM(model=model, head_source="fresh" if fresh else "pretrained", fresh_head=fresh)


def _init_fresh(model: Any, names: Sequence[str], seed: int) -> None:
    """BERT's initialisation for the named parameters, from a generator seeded with `seed` alone."""
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            param = params[name]
            if "norm" in name.lower() and name.endswith("weight"):
                param.fill_(1.0)
            elif param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
            else:
                param.zero_()


def add_language_adapter(mlm: MaskedLM, name: str, kind: str, seed: int) -> dict[str, Any]:
    """Add a fresh adapter of `kind` and make it (plus the fresh head) the only trainable parameters."""
    model = mlm.model
    config = get_kind(kind).build_config()
    torch.manual_seed(seed)  # the adapter's initial weights come from the global generator
    with _quiet_libraries():
        model.add_adapter(name, config=config)
        model.train_adapter(name)
    prefix = f"{model.base_model_prefix}."
    adapter_params = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)}
    if not adapter_params:
        raise LangadaptError(f"the {kind} adapter added no trainable parameters to this base", "try another kind")
    trainable = adapter_params | set(mlm.fresh_head)
    for n, p in model.named_parameters():
        p.requires_grad = n in trainable
    with _quiet_libraries():
        model.set_active_adapters(name)
    return dict(config.to_dict())


@contextlib.contextmanager
def adapters_off(model: Any) -> Iterator[None]:
    """Run the model as the bare base (no adapter active), then restore the active adapters."""
    active = model.active_adapters
    with _quiet_libraries():
        model.set_active_adapters(None)
        try:
            yield
        finally:
            model.set_active_adapters(active)


def save_language_adapter(masked: MaskedLM, name: str, folder: Path) -> Path:
    """Write the adapter (no head) as the `adapters` library does, plus the fresh MLM head when there is one."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (folder / HEAD_FILE, folder / MANIFEST_FILE):
        stale.unlink(missing_ok=True)
    masked.model.save_adapter(str(folder), name, with_head=False, use_safetensors=True)
    if masked.fresh_head:
        save_file(masked.head_state(), str(folder / HEAD_FILE))
    return folder


def load_language_adapter_mlm(
    info: Any, store: Any, adapter_id: str, version: int | None = None
) -> tuple[MaskedLM, Any]:
    """The base as an MLM model with a stored language adapter active (and its trained head, if it has one)."""
    from langadapt.models.modeling import module_name

    manifest, folder = store.open(adapter_id, version, expected_fingerprint=info.fingerprint)
    if manifest.task != LANGUAGE_TASK:
        raise LangadaptError(
            f"{manifest.id} is a {manifest.task} adapter, not a language (mlm) adapter",
            "pass the id of an adapter trained with `langadapt train lang`",
        )
    masked = load_masked_lm(info)
    with _quiet_libraries():
        name = masked.model.load_adapter(
            str(folder), load_as=module_name(manifest.id), with_head=False, use_safetensors=True
        )
        masked.model.set_active_adapters(name)
    if masked.fresh_head:
        if HEAD_FILE not in manifest.files:
            raise StoreError(
                f"{manifest.id} v{manifest.version} has no {HEAD_FILE}, and base {info.id} has no MLM head",
                "score it on a base with a pretrained MLM head, or retrain it with this version of langadapt",
            )
        state = load_file(str(folder / HEAD_FILE))
        if set(state) != set(masked.fresh_head):
            raise StoreError(
                f"{HEAD_FILE} of {manifest.id} holds {sorted(state)[:3]}..., not this base's head parameters",
                "load it on the base model it was trained on",
            )
        params = dict(masked.model.named_parameters())
        with torch.no_grad():
            for key, tensor in state.items():
                params[key].copy_(tensor)
    masked.model.eval()
    return masked, manifest
