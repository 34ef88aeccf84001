"""Language adapters: masked-language modelling on a language's text and knowledge-graph sentences.

A run is a sequence of named phases: plan (adapter id, run directory), read the text, tokenise, build the model
(`masked_lm`: the base as a `*ForMaskedLM` with a fresh adapter and, for bases without one, a fresh MLM head),
train (`mlm_batches`: BERT masking; the loop resumes from its checkpoint), and publish (`publish`, shared with task
adapters). Only the adapter (and a fresh head) trains: every base weight is left bit-identical.

What is published is the adapter alone, in the `adapters` library's `save_adapter(..., with_head=False,
use_safetensors=True)` layout, so it loads onto a plain encoder under a task adapter (`Stack(lang, task)`) where
no MLM head exists; a freshly trained head travels beside it as `mlm_head.safetensors`, used only to score MLM
(pseudo-perplexity) again. The manifest says which of the two heads it was. Each step's masks come from the
loop's per-step generator and the validation masks are drawn once from the seed, so a resumed run reproduces an
uninterrupted one exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langadapt.errors import BaseModelError, LangadaptError
from langadapt.models.kinds import DEFAULT_KIND, LANGUAGE_TASK, MASKED_LM, get_kind
from langadapt.training.kg import read_conceptnet_edges, verbalise
from langadapt.training.loop import LoopConfig, LoopResult, TrainLoop, announce, load_trainable_state
from langadapt.training.masked_lm import (
    HEAD_FILE,
    MaskedLM,
    adapters_off,
    add_language_adapter,
    load_language_adapter_mlm,
    load_masked_lm,
    save_language_adapter,
)
from langadapt.training.mlm_batches import Example, MlmBatches, mask_tokens, tokenize
from langadapt.training.mlm_text import read_mlm_text
from langadapt.training.pppl import PseudoPerplexity, pseudo_perplexity
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

SETTINGS_FILE = "settings.json"
PPPL_BEFORE_FILE = "pppl_before.json"

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
        if not edges.examples:
            raise LangadaptError(
                f"{path} has no edge with an end in {language} ({edges.dropped.get('other language', 0)} edges in "
                f"other languages, {len(edges.skipped)} bad rows)",
                "pass the ConceptNet edges of this language (an end /c/<code>/...), or the --lang the file is for",
            )
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
    adapter_config = add_language_adapter(masked, name, settings.kind, settings.seed)
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
