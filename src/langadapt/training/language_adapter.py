"""Language adapters: masked-language modelling on a language's text and knowledge-graph sentences.

The base model is loaded as a Hugging Face `*ForMaskedLM` and made adapter-capable with `adapters.init`. Bases
that ship an MLM head (XLM-R, mBERT) keep it, frozen. Bases without one (the embedded multilingual-e5-small is a
plain `BertModel`) get a head whose decoder *is* the input embedding matrix (tied, frozen) and whose transform
(dense + LayerNorm) and output bias are freshly initialised and trained together with the adapter. Nothing else
trains: every base weight is left bit-identical.

What is published is the adapter alone, in the `adapters` library's `save_adapter(..., with_head=False,
use_safetensors=True)` layout, so it loads onto a plain encoder under a task adapter (`Stack(lang, task)`) where
no MLM head exists; a freshly trained head travels beside it as `mlm_head.safetensors`, used only to score MLM
(pseudo-perplexity) again. The manifest says which of the two heads it was.

Masking follows BERT: per sentence, round(p * n) of its n non-special tokens (at least one) are chosen; 80% of
those become the mask token, 10% a random non-special token, 10% stay. Each step's masks come from the loop's
per-step generator, and the validation masks are drawn once from the seed, so validation loss is comparable
across evaluations and a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import load_file, save_file

from langadapt.errors import BaseModelError, LangadaptError, StoreError
from langadapt.models.kinds import DEFAULT_KIND, LANGUAGE_TASK, MANIFEST_FILE, MASKED_LM, get_kind
from langadapt.training.kg import read_conceptnet_edges, verbalise
from langadapt.training.loop import LoopConfig, LoopResult, TrainLoop, announce, load_trainable_state
from langadapt.training.mlm_text import read_mlm_text
from langadapt.training.pppl import PseudoPerplexity, masked_token_logits, pseudo_perplexity
from langadapt.training.publish import ADAPTER_DIR, WORK_DIR, fresh_adapter_dir, publish_run
from langadapt.training.readers import read_verbalised_triples
from langadapt.training.runs import RUN_FILE, RunRecord
from langadapt.training.settings_file import settings_data

__all__ = [
    "ADAPTER_DIR",
    "HEAD_FILE",
    "LanguageAdapterResult",
    "LanguageAdapterSettings",
    "MaskedLM",
    "MlmBatches",
    "PppEvaluation",
    "adapters_off",
    "evaluate_pppl",
    "load_language_adapter_mlm",
    "load_masked_lm",
    "mask_tokens",
    "read_training_sentences",
    "save_language_adapter",
    "split_validation",
    "tokenize",
    "train_language_adapter",
]

HEAD_FILE = "mlm_head.safetensors"
SETTINGS_FILE = "settings.json"
PPPL_BEFORE_FILE = "pppl_before.json"
IGNORE_INDEX = -100
HeadSource = Literal["pretrained", "fresh"]

# Settings that do not change what is trained, so a run may be resumed with other values of them.
NOT_TRAINING_SETTINGS = frozenset(
    {"store", "out_dir", "publish", "progress", "licence", "pppl_sentences", "pppl_batch_size"}
)


class LanguageAdapterSettings(BaseModel):
    """Everything a language-adapter run needs; defaults are the paper's (batch 16, lr 1e-4, mask 0.15)."""

    model_config = ConfigDict(extra="forbid")

    # The flags of `langadapt train lang`, in `--help` order; the other fields are set in a `--config` file.
    FLAGS: ClassVar[tuple[str, ...]] = (
        "language", "kind", "text", "kg_edges", "kg_triples", "dev", "base", "store", "out_dir", "max_steps",
        "epochs", "learning_rate", "batch_size", "mask_probability", "max_length", "eval_every", "patience",
        "max_examples", "pppl_sentences", "seed", "licence", "on_bad_row", "publish", "progress",
    )  # fmt: skip

    language: str = Field(description="language code in any accepted form (yo, yor, yor_Latn); stored canonical")
    kind: str = Field(default=DEFAULT_KIND, description="adapter kind (a registered one: seq_bn, seq_bn_inv, lora)")
    text: list[Path] = Field(default_factory=list, description="text files (one sentence a line) or text tables")
    kg_edges: list[Path] = Field(default_factory=list, description="ConceptNet edge TSVs, verbalised to sentences")
    kg_triples: list[Path] = Field(default_factory=list, description="CSVs of verbalised triples (`text` column)")
    dev: Path | None = Field(default=None, description="validation text; else a seeded held-out fraction")
    base: str = Field(default="embedded", description='base model: "embedded", a local directory or a hub id')
    store: Path | None = Field(default=None, description="adapter store (default: $LANGADAPT_STORE or the cache)")
    out_dir: Path | None = Field(
        default=None, description="run directory for checkpoint, adapter and run.json (default: runs/<adapter id>)"
    )
    learning_rate: float = Field(default=1e-4, gt=0, description="AdamW learning rate (paper: 1e-4)")
    batch_size: int = Field(default=16, ge=1, description="sentences per optimiser step (paper: 16)")
    mask_probability: float = Field(default=0.15, gt=0, lt=1, description="share of non-special tokens predicted")
    max_length: int = Field(default=256, ge=8, description="tokens per sentence, special tokens included")
    epochs: float = Field(default=1.0, gt=0, description="passes over the training text (--max-steps wins)")
    max_steps: int | None = Field(default=None, ge=1, description="cap on optimiser steps (wins over epochs)")
    eval_every: int = Field(default=500, ge=1, description="validate (and checkpoint) every N steps")
    patience: int | None = Field(default=None, ge=1, description="stop after N evaluations without improvement")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="share of steps with linear warm-up")
    max_grad_norm: float = Field(default=1.0, ge=0, description="gradient clipping norm (0: none)")
    dev_fraction: float = Field(default=0.05, gt=0, lt=1, description="held-out share when no dev file is given")
    max_dev_sentences: int = Field(default=1000, ge=1, description="cap on validation sentences (loss)")
    max_examples: int | None = Field(default=None, ge=1, description="cap on training sentences (seeded sample)")
    eval_batch_size: int = Field(default=32, ge=1, description="sentences per validation batch")
    pppl_sentences: int = Field(default=200, ge=0, description="validation sentences scored by PPPL (0: skip)")
    pppl_batch_size: int = Field(default=64, ge=1, description="masked copies per PPPL forward pass")
    seed: int = Field(default=42, description="seed for the split, data order, masks and initialisation")
    licence: str | None = Field(default=None, description="licence of the training data, recorded in the manifest")
    on_bad_row: Literal["error", "skip"] = Field(default="error", description="malformed rows: error or skip")
    progress: bool = Field(default=True, description="show progress bars")
    publish: bool = Field(default=True, description="publish the adapter to the store when done")

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, value: str) -> str:
        """A registered adapter kind, by its registry name."""
        return get_kind(value).name

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> LanguageAdapterSettings:
        """Settings from a JSON, YAML or TOML file, with `overrides` (e.g. command-line flags) winning."""
        return cls.validated(settings_data(path, overrides), origin=str(path))

    @classmethod
    def load(cls, config: Path | None, flags: Mapping[str, Any]) -> LanguageAdapterSettings:
        """Settings from the flags given, over the `--config` file if there is one, over the defaults."""
        if config is not None:
            return cls.from_file(config, **flags)
        return cls.validated({k: v for k, v in flags.items() if v is not None}, origin="the command line")

    @classmethod
    def validated(cls, data: dict[str, Any], origin: str = "the settings") -> LanguageAdapterSettings:
        """Validate settings, turning pydantic's errors into one LangadaptError that names each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            fields = ", ".join(sorted(cls.model_fields))
            raise LangadaptError(f"invalid settings in {origin}: {problems}", f"known settings: {fields}") from None


@dataclass
class LanguageAdapterResult:
    """A finished language-adapter run: the manifest published, where everything is, and its figures."""

    manifest: Any
    run: RunRecord
    run_dir: Path
    adapter_dir: Path
    loop: LoopResult
    pppl_before: PseudoPerplexity | None
    pppl_after: PseudoPerplexity | None
    seconds_per_step: float
    model: Any = field(default=None, repr=False)


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


def _add_language_adapter(mlm: MaskedLM, name: str, kind: str, seed: int) -> dict[str, Any]:
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


# ------------------------------------------------------------------------------------------------- data


@dataclass
class TrainingText:
    """Sentences to train on, where they came from, and what the readers left out."""

    sentences: list[str]
    sources: list[str]
    skipped: int
    counts: dict[str, int]


def read_training_sentences(settings: LanguageAdapterSettings, language: str) -> TrainingText:
    """Sentences from the text files, the verbalised ConceptNet edges and the verbalised triples, in that order."""
    sentences: list[str] = []
    skipped = 0
    counts: dict[str, int] = {}
    for path in settings.text:
        data = read_mlm_text(path, on_bad_row=settings.on_bad_row)
        sentences += data.examples
        skipped += len(data.skipped)
        counts[str(path)] = len(data.examples)
    for path in settings.kg_edges:
        edges = read_conceptnet_edges(path, language, on_bad_row=settings.on_bad_row)
        verbalised = verbalise(edges.examples).sentences
        sentences += verbalised
        skipped += len(edges.skipped)
        counts[str(path)] = len(verbalised)
    for path in settings.kg_triples:
        data = read_verbalised_triples(path, on_bad_row=settings.on_bad_row)
        sentences += data.examples
        skipped += len(data.skipped)
        counts[str(path)] = len(data.examples)
    sources = [str(p) for p in [*settings.text, *settings.kg_edges, *settings.kg_triples]]
    if not sources:
        raise LangadaptError("no training data given", "pass --text FILE, --kg-edges FILE or --kg-triples FILE")
    if not sentences:
        raise LangadaptError(f"no sentences in {', '.join(sources)}", "check the files are not empty")
    return TrainingText(sentences=sentences, sources=sources, skipped=skipped, counts=counts)


def split_validation(sentences: Sequence[str], fraction: float, max_dev: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded held-out split: (train, dev), dev being `fraction` of the sentences (at least 1, at most `max_dev`)."""
    if len(sentences) < 2:
        raise LangadaptError(
            f"only {len(sentences)} sentence(s): too few to hold some out for validation",
            "pass more text, or a validation file with --dev",
        )
    k = min(max_dev, max(1, round(len(sentences) * fraction)), len(sentences) - 1)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    dev = sorted(order[:k])
    train = sorted(order[k:])
    return [sentences[i] for i in train], [sentences[i] for i in dev]


Example = tuple[list[int], list[int]]  # token ids, special-token mask


def tokenize(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[Example]:
    """Token ids (truncated to `max_length`) and special-token masks; sentences with no real token are left out."""
    out: list[Example] = []
    for start in range(0, len(sentences), 4096):
        enc = tokenizer(
            list(sentences[start : start + 4096]),
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_attention_mask=False,
        )
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True):
            if not all(special):
                out.append((list(ids), list(special)))
    return out


def mask_tokens(
    rows: Sequence[Example],
    generator: torch.Generator,
    *,
    mask_probability: float,
    mask_id: int,
    pad_id: int,
    random_ids: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Pad `rows` and mask them as BERT does; returns input_ids, attention_mask and labels (-100: not predicted)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, special) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        candidates = torch.tensor([i for i, s in enumerate(special) if not s])
        count = max(1, round(len(candidates) * mask_probability))
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
        labels[r, chosen] = input_ids[r, chosen]
    selected = labels != IGNORE_INDEX
    draw = torch.rand(labels.shape, generator=generator)
    replacement = random_ids[torch.randint(len(random_ids), labels.shape, generator=generator)]
    masked = input_ids.clone()
    masked[selected & (draw < 0.8)] = mask_id
    swap = selected & (draw >= 0.8) & (draw < 0.9)
    masked[swap] = replacement[swap]
    return {"input_ids": masked, "attention_mask": attention, "labels": labels}


class MlmBatches:
    """Collate and loss for the training loop, and a fixed-mask validation set for comparable evaluations."""

    def __init__(self, tokenizer: Any, mask_probability: float) -> None:
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise BaseModelError("the tokenizer has no mask or pad token", "use a masked-LM tokenizer")
        special = set(tokenizer.all_special_ids)
        self.mask_probability = mask_probability
        self.mask_id = int(tokenizer.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)

    def collate(self, rows: Sequence[Example], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One masked training batch; all randomness from the loop's per-step generator."""
        return mask_tokens(
            rows,
            generator,
            mask_probability=self.mask_probability,
            mask_id=self.mask_id,
            pad_id=self.pad_id,
            random_ids=self.random_ids,
        )

    @staticmethod
    def token_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of each predicted token (only masked positions go through the vocabulary projection)."""
        device = next(model.parameters()).device
        labels = batch["labels"].to(device)
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        logits = masked_token_logits(
            model, batch["input_ids"].to(device), batch["attention_mask"].to(device), rows, cols
        )
        return torch.nn.functional.cross_entropy(logits.float(), labels[rows, cols], reduction="none")

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's predicted tokens."""
        return self.token_losses(model, batch).mean()

    def validation_batches(self, rows: Sequence[Example], batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
        """Validation batches, masked once from `seed` (sorted by length to keep padding small)."""
        generator = torch.Generator().manual_seed(seed)
        ordered = sorted(rows, key=lambda r: len(r[0]))
        return [self.collate(ordered[i : i + batch_size], generator) for i in range(0, len(ordered), batch_size)]

    def evaluator(self, batches: Sequence[dict[str, torch.Tensor]]) -> Any:
        """The loop's evaluation callback: token-weighted validation loss and its perplexity."""

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            total, count = 0.0, 0
            for batch in batches:
                losses = self.token_losses(model, batch)
                total += float(losses.double().sum())
                count += losses.numel()
            loss = total / count
            return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}

        return evaluate


# ----------------------------------------------------------------------------------------------- training


def _run_settings(settings: LanguageAdapterSettings) -> dict[str, Any]:
    """The settings as JSON-ready data."""
    return settings.model_dump(mode="json")


def _guard_resume(out_dir: Path, settings: LanguageAdapterSettings) -> None:
    """Refuse a finished run directory, or a checkpoint made with other training settings; record ours."""
    if (out_dir / RUN_FILE).is_file():
        raise LangadaptError(
            f"{out_dir} already holds a finished run ({RUN_FILE})",
            "choose a new --out directory, or delete that one to train again",
        )
    work = out_dir / WORK_DIR
    saved = work / SETTINGS_FILE
    ours = {k: v for k, v in _run_settings(settings).items() if k not in NOT_TRAINING_SETTINGS}
    if saved.is_file():
        theirs = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        if changed:
            raise LangadaptError(
                f"{out_dir} holds a checkpoint trained with other settings ({', '.join(changed)})",
                "resume with the same settings, or choose a new --out directory",
            )
    work.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(ours, indent=1, sort_keys=True), encoding="utf-8")


def _pppl(
    masked: MaskedLM, tokenizer: Any, sentences: Sequence[str], settings: LanguageAdapterSettings, what: str
) -> PseudoPerplexity | None:
    """PPPL on the first `pppl_sentences` validation sentences, or None when PPPL is switched off."""
    if settings.pppl_sentences == 0:
        return None
    return pseudo_perplexity(
        masked.model,
        tokenizer,
        list(sentences[: settings.pppl_sentences]),
        batch_size=settings.pppl_batch_size,
        max_length=settings.max_length,
        progress=settings.progress,
        description=f"pppl {what}",
    )


def _pppl_before(
    masked: MaskedLM, tokenizer: Any, dev: Sequence[str], settings: LanguageAdapterSettings
) -> PseudoPerplexity | None:
    """PPPL of the base without the adapter (cached in the work dir, so a resumed run does not recompute it)."""
    assert settings.out_dir is not None
    cache = settings.out_dir / WORK_DIR / PPPL_BEFORE_FILE
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return PseudoPerplexity(**data) if data else None
    with adapters_off(masked.model):
        result = _pppl(masked, tokenizer, dev, settings, "before")
    cache.write_text(json.dumps(result.as_dict() if result else None), encoding="utf-8")
    return result


@dataclass
class _Run:
    """What a run is, fixed before any work: its settings (with the run directory), language and adapter id."""

    settings: LanguageAdapterSettings
    language: str
    adapter_id: str
    out_dir: Path
    started: float


@dataclass
class _Text:
    """The training and validation sentences, where they came from, and how validation was chosen."""

    data: TrainingText
    train: list[str]
    dev: list[str]
    validation: dict[str, Any]


@dataclass
class _Rows:
    """The tokenised training and validation sentences."""

    train: list[Example]
    dev: list[Example]


@dataclass
class _Model:
    """The MLM model with its fresh adapter, the batches and evaluation of the loop, and PPPL before training."""

    masked: MaskedLM
    name: str
    adapter_config: dict[str, Any]
    batches: MlmBatches
    evaluate: Any
    pppl_before: PseudoPerplexity | None


@dataclass
class _Trained:
    """The loop's result (best state loaded back into the model) and PPPL after training."""

    loop: LoopResult
    seconds_per_step: float
    pppl_after: PseudoPerplexity | None


def train_language_adapter(
    settings: LanguageAdapterSettings, *, stop_at_step: int | None = None
) -> LanguageAdapterResult:
    """Train a language adapter by MLM, keep the best by validation loss, publish it, and write `run.json`.

    Rerunning with the same settings and output directory resumes from the last checkpoint and gives the
    same adapter as an uninterrupted run. `stop_at_step` simulates an interruption (TrainingInterruptedError).
    """
    from langadapt.models.base import load_tokenizer, resolve_base_model

    run = _plan(settings)
    text = _read_text(run)  # bad input fails before anything is written
    announce(f"loading the base model {run.settings.base}")
    info = resolve_base_model(run.settings.base)
    tokenizer = load_tokenizer(info)
    _guard_resume(run.out_dir, run.settings)
    rows = _tokenise(run, text, tokenizer)
    model = _build_model(run, info, tokenizer, text, rows)
    trained = _train(run, model, tokenizer, rows, text, stop_at_step)
    return _publish(run, info, text, rows, model, trained)


def _plan(settings: LanguageAdapterSettings) -> _Run:
    """The run's language, adapter id and directory (default: runs/<adapter id>)."""
    from langadapt.models.language import canonical_language
    from langadapt.models.manifest import adapter_id

    started = time.perf_counter()
    language = canonical_language(settings.language)
    aid = adapter_id(language, LANGUAGE_TASK, settings.kind)
    out_dir = settings.out_dir or Path("runs") / aid
    settings = settings.model_copy(update={"out_dir": out_dir})
    return _Run(settings=settings, language=language, adapter_id=aid, out_dir=out_dir, started=started)


def _read_text(run: _Run) -> _Text:
    """The training sentences, and the validation ones: the --dev file's, else a seeded held-out share."""
    settings = run.settings
    announce("reading the training text")
    data = read_training_sentences(settings, run.language)
    if settings.dev is not None:
        dev_data = read_mlm_text(settings.dev, on_bad_row=settings.on_bad_row, language=run.language)
        dev = dev_data.examples[: settings.max_dev_sentences]
        return _Text(data, data.sentences, dev, {"source": str(settings.dev), "sentences": len(dev)})
    train, dev = split_validation(data.sentences, settings.dev_fraction, settings.max_dev_sentences, settings.seed)
    validation = {"source": f"held out: {settings.dev_fraction:g} of the training text", "seed": settings.seed}
    return _Text(data, train, dev, validation)


def _tokenise(run: _Run, text: _Text, tokenizer: Any) -> _Rows:
    """Token rows of the training sentences (a seeded sample under --max-examples) and the validation ones."""
    settings = run.settings
    train_text = text.train
    if settings.max_examples is not None and len(train_text) > settings.max_examples:
        keep = torch.randperm(len(train_text), generator=torch.Generator().manual_seed(settings.seed + 1))
        train_text = [train_text[i] for i in sorted(keep[: settings.max_examples].tolist())]
    train_rows = tokenize(tokenizer, train_text, settings.max_length)
    dev_rows = tokenize(tokenizer, text.dev, settings.max_length)
    if not train_rows or not dev_rows:
        raise LangadaptError(
            f"{'training' if not train_rows else 'validation'} text has no tokens the tokenizer can mask",
            "check the files hold text in the language",
        )
    text.validation |= {"sentences": len(dev_rows), "pppl_sentences": min(settings.pppl_sentences, len(text.dev))}
    return _Rows(train=train_rows, dev=dev_rows)


def _build_model(run: _Run, info: Any, tokenizer: Any, text: _Text, rows: _Rows) -> _Model:
    """The base as an MLM model with a fresh adapter, its fixed-mask validation, and PPPL without the adapter."""
    from langadapt.models.modeling import module_name

    settings = run.settings
    name = module_name(run.adapter_id)
    masked = load_masked_lm(info, seed=settings.seed)
    adapter_config = _add_language_adapter(masked, name, settings.kind, settings.seed)
    batches = MlmBatches(tokenizer, settings.mask_probability)
    return _Model(
        masked=masked,
        name=name,
        adapter_config=adapter_config,
        batches=batches,
        evaluate=batches.evaluator(batches.validation_batches(rows.dev, settings.eval_batch_size, settings.seed)),
        pppl_before=_pppl_before(masked, tokenizer, text.dev, settings),
    )


def _train(run: _Run, model: _Model, tokenizer: Any, rows: _Rows, text: _Text, stop_at_step: int | None) -> _Trained:
    """Run (or resume) the loop, load the best state by validation loss, and score PPPL after training."""
    settings = run.settings
    batches = model.batches
    loop_config = LoopConfig(
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        weight_decay=settings.weight_decay,
        warmup_ratio=settings.warmup_ratio,
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        eval_every=settings.eval_every,
        patience=settings.patience,
        metric="loss",
        greater_is_better=False,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        progress=settings.progress,
        description=f"lang {run.language} {settings.kind}",
    )
    loop = TrainLoop(
        model.masked.model,
        rows.train,
        batches.collate,
        batches.loss,
        model.evaluate,
        loop_config,
        work_dir=run.out_dir / WORK_DIR,
        stop_at_step=stop_at_step,
        lengths=[len(ids) for ids, _ in rows.train],
    )
    train_started = time.perf_counter()
    first_step = _checkpoint_step(run.out_dir / WORK_DIR)
    result = loop.run()
    seconds_per_step = (time.perf_counter() - train_started) / max(1, result.steps - first_step)
    load_trainable_state(model.masked.model, result.best_state)
    pppl_after = _pppl(model.masked, tokenizer, text.dev, settings, "after")
    return _Trained(loop=result, seconds_per_step=seconds_per_step, pppl_after=pppl_after)


def _head_record(masked: MaskedLM) -> dict[str, Any]:
    """What the manifest says of the MLM head: pretrained and frozen, or fresh and trained with the adapter."""
    return {
        "source": masked.head_source,
        "trained": masked.head_source == "fresh",
        "file": HEAD_FILE if masked.head_source == "fresh" else None,
        "parameters": masked.fresh_head,
        "note": (
            "the base's pretrained MLM head, frozen; not stored here"
            if masked.head_source == "pretrained"
            else "decoder tied to the (frozen) input embeddings; transform and bias trained with the adapter"
        ),
    }


def _publish(run: _Run, info: Any, text: _Text, rows: _Rows, model: _Model, trained: _Trained) -> LanguageAdapterResult:
    """Save the adapter (and fresh head), describe it in a manifest and a run record, and publish the run."""
    from langadapt.models.manifest import Manifest, TrainingInfo
    from langadapt.models.store import AdapterStore

    settings, result, masked = run.settings, trained.loop, model.masked
    pppl_before, pppl_after = model.pppl_before, trained.pppl_after
    adapter_dir = fresh_adapter_dir(run.out_dir, lambda folder: save_language_adapter(masked, model.name, folder))
    best_loss = result.best_metric
    metrics: dict[str, Any] = {"val_loss": best_loss, "val_perplexity": math.exp(min(best_loss, 700.0))}
    if pppl_before is not None and pppl_after is not None:
        metrics |= {"pppl_before": pppl_before.pppl, "pppl_after": pppl_after.pppl}
    params = {k: v for k, v in _run_settings(settings).items() if k not in {"store", "out_dir", "progress"}}
    data = text.data
    manifest = Manifest(
        id=run.adapter_id,
        language=run.language,
        task=LANGUAGE_TASK,
        kind=settings.kind,
        head_type=MASKED_LM,
        base_model=info.id,
        base_fingerprint=info.fingerprint,
        adapter_config=model.adapter_config,
        metrics=metrics,
        training=TrainingInfo(data=data.sources, licence=settings.licence, steps=result.steps, params=params),
        extra={
            "mlm_head": _head_record(masked),
            "best_step": result.best_step,
            "stopped_early": result.stopped_early,
            "validation": text.validation,
            "examples": {"train": len(rows.train), "skipped_rows": data.skipped, "per_file": data.counts},
            "pppl": {
                "before": pppl_before.as_dict() if pppl_before else None,
                "after": pppl_after.as_dict() if pppl_after else None,
                "before_is": "the base model without the adapter"
                + (", with the untrained fresh MLM head" if masked.head_source == "fresh" else ""),
            },
            "history": result.history,
        },
    )
    run_metrics = {"val_loss": best_loss}
    if pppl_after is not None:
        run_metrics["pppl"] = pppl_after.pppl
    if pppl_before is not None:
        run_metrics["pppl_before"] = pppl_before.pppl
    record = RunRecord(
        kind_of_run="train-lang",
        language=run.language,
        task=LANGUAGE_TASK,
        variant=f"lang:{settings.kind}",
        adapter_kind=settings.kind,
        base_model=info.id,
        adapter_id=run.adapter_id,
        metrics=run_metrics,
        validation={k: float(v) for k, v in result.best_metrics.items()},
        data=data.sources,
        licence=settings.licence,
        steps=result.steps,
        throughput=result.throughput,
        settings=_run_settings(settings)
        | {"seconds_per_step": trained.seconds_per_step, "mlm_head": masked.head_source},
    )
    store = AdapterStore(settings.store) if settings.publish else None
    published = publish_run(run.out_dir, manifest, record, store=store, started=run.started)
    return LanguageAdapterResult(
        manifest=published.manifest,
        run=published.record,
        run_dir=run.out_dir,
        adapter_dir=adapter_dir,
        loop=result,
        pppl_before=pppl_before,
        pppl_after=pppl_after,
        seconds_per_step=trained.seconds_per_step,
        model=masked.model,
    )


def _checkpoint_step(work_dir: Path) -> int:
    """The step a run will resume from (0 without a checkpoint), for an honest seconds-per-step figure."""
    from langadapt.training.loop import CHECKPOINT_DIR, STATE_FILE

    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        state = work_dir / name / STATE_FILE
        if state.is_file():
            return int(json.loads(state.read_text(encoding="utf-8"))["step"])
    return 0


# ------------------------------------------------------------------------------------------ save and load


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


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass
class PppEvaluation:
    """PPPL of a base model, or of a base with a stored language adapter, on a text file."""

    score: PseudoPerplexity
    base_model: str
    adapter_id: str | None
    adapter_version: int | None
    language: str | None
    run_dir: Path | None

    def summary(self) -> dict[str, Any]:
        """The figures and what they are of, for the command line."""
        return {
            "base_model": self.base_model,
            "adapter_id": self.adapter_id,
            "adapter_version": self.adapter_version,
            "language": self.language,
            **self.score.as_dict(),
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def evaluate_pppl(
    text: Path,
    *,
    lang_adapter: str | None = None,
    version: int | None = None,
    base: str | None = None,
    store: Path | None = None,
    language: str | None = None,
    max_sentences: int | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    out: Path | None = None,
    progress: bool = True,
) -> PppEvaluation:
    """Pseudo-perplexity on `text` of the base (it needs an MLM head) or of base + a stored language adapter.

    The base defaults to the one the adapter was trained on, else the embedded one. With `out`, a `run.json`
    (kind `eval-pppl`, variant `base` or `lang:<kind>`) is written there for reports.
    """
    from langadapt.models.base import load_tokenizer, resolve_base_model
    from langadapt.models.language import canonical_language
    from langadapt.models.store import AdapterStore

    started = time.perf_counter()
    adapter_store = AdapterStore(store)
    manifest = adapter_store.get(lang_adapter, version) if lang_adapter else None
    info = resolve_base_model(base or (manifest.base_model if manifest else "embedded"))
    if manifest is not None:
        masked, manifest = load_language_adapter_mlm(info, adapter_store, manifest.id, manifest.version)
    else:
        masked = load_masked_lm(info)
        if masked.head_source == "fresh":
            raise BaseModelError(
                f"base model {info.id} has no masked-LM head, so it cannot score pseudo-perplexity on its own",
                "pass --lang-adapter with a language adapter trained on it (it carries a trained head), "
                "or use a base with an MLM head (xlm-roberta-base, bert-base-multilingual-cased)",
            )
    sentences = read_mlm_text(text, language=language).examples[:max_sentences]
    if not sentences:
        raise LangadaptError(f"no sentences in {text}", "pass a text file with one sentence a line")
    tokenizer = load_tokenizer(info)
    score = pseudo_perplexity(
        masked.model, tokenizer, sentences, batch_size=batch_size, max_length=max_length, progress=progress
    )
    lang = canonical_language(language) if language else (manifest.language if manifest else None)
    evaluation = PppEvaluation(
        score=score,
        base_model=info.id,
        adapter_id=manifest.id if manifest else None,
        adapter_version=manifest.version if manifest else None,
        language=lang,
        run_dir=out,
    )
    if out is not None:
        RunRecord(
            kind_of_run="eval-pppl",
            language=lang,
            task=LANGUAGE_TASK,
            variant=f"lang:{manifest.kind}" if manifest else "base",
            adapter_kind=manifest.kind if manifest else None,
            base_model=info.id,
            adapter_id=evaluation.adapter_id,
            adapter_version=evaluation.adapter_version,
            metrics={"pppl": score.pppl},
            data=[str(text)],
            duration_s=time.perf_counter() - started,
            settings={"max_sentences": max_sentences, "batch_size": batch_size, **score.as_dict()},
        ).write(out)
    return evaluation
