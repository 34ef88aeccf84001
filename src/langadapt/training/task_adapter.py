"""Task adapters: train topic, sentiment and NER adapters (and their baselines), evaluate them, publish them.

Three variants, compared in reports by their `variant` name:

- `task-only:<kind>`: a task adapter and head on the frozen base.
- `lang+task:<language kind>`: a language adapter from the store under the task adapter, `Stack(lang, task)`;
  only the task adapter and head train, the language adapter stays bit-identical.
- `full-ft`: no adapter; every base weight and the head train (published as kind `full`, a whole model).

Paper defaults: seq_bn task adapter (reduction factor 16), lr 1e-4, batch 32, weight decay 0.01, warm-up 5%;
the best checkpoint by validation macro-F1 (topic, sentiment) or seqeval entity F1 (NER), early stopping. The
learning rates default to the recipe measured for the base model where there is one (`recipes`): on the embedded
base, 1e-3 for the adapter and 1e-2 for the head.

A run is a sequence of named phases: plan, read the data, tokenise (`task_encoding`), build the model, train,
test (`task_scoring`) and publish (`publish`, shared with language adapters). It says what it does as it goes
(one line per phase on stderr) and, at its end, what reading and encoding did to each split (`intake`): examples
used, rows skipped, IOB tags repaired, texts cut or windowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from langadapt.errors import LangadaptError
from langadapt.models.alignment import (
    window_stride,
)
from langadapt.training.intake import cut_warnings, split_intake
from langadapt.training.loop import announce
from langadapt.training.publish import WORK_DIR, fresh_adapter_dir, publish_run
from langadapt.training.reading import ReadOptions, options_error, read_split, recorded_options
from langadapt.training.recipes import Recipe, rate, recipe_for, recipes_help
from langadapt.training.runs import RunRecord
from langadapt.training.settings_file import settings_data
from langadapt.training.task_encoding import (
    EncodedClassification,
    EncodedTagging,
    collate_rows,
    encode_split,
    training_rows,
)
from langadapt.training.task_scoring import (
    OUTSIDE,
    Predictions,
    majority_figures,
    predict_classification,
    predict_tagging,
    score_split,
    task_loss,
)

if TYPE_CHECKING:
    import torch

    from langadapt.models.store_view import LayeredStore

# torch, transformers, scikit-learn and seqeval are imported inside the functions that use them, so that
# importing this module (the CLI does, for its flag help) stays fast.

__all__ = [
    "DEFAULT_EPOCHS",
    "EvalResult",
    "Predictions",
    "TaskRunResult",
    "TaskTrainSettings",
    "complete_iob2_labels",
    "encode_split",
    "evaluate_task_adapter",
    "guess_licence",
    "load_settings",
    "majority_figures",
    "predict_classification",
    "predict_tagging",
    "read_split",
    "score_split",
    "seeded_sample",
    "train_task_adapter",
]

log = logging.getLogger(__name__)

Task = Literal["topic", "sentiment", "ner"]

# Epochs per task when not given: the small topic set needs many passes, the large sentiment sets few.
DEFAULT_EPOCHS: dict[str, float] = {"topic": 10.0, "sentiment": 3.0, "ner": 5.0}

# Licences of the public data sets in ../shared/data, recognised by a folder name in the data path.
KNOWN_LICENCES = {
    "sib200": "CC-BY-SA-4.0",
    "afrisenti": "CC-BY-4.0",
    "masakhaner2": "CC-BY-NC-4.0",
    "nusax_senti": "CC-BY-SA-4.0",
}


def _kinds() -> tuple[str, ...]:
    """The registered adapter kinds (from the one registry)."""
    from langadapt.models.kinds import ADAPTER_KINDS

    return tuple(ADAPTER_KINDS)


def _bottleneck_kinds() -> tuple[str, ...]:
    """The adapter kinds sized by a reduction factor (hidden size / bottleneck size)."""
    from langadapt.models.kinds import ADAPTER_KINDS

    return tuple(name for name, kind in ADAPTER_KINDS.items() if "reduction_factor" in kind.defaults)


class TaskTrainSettings(ReadOptions):
    """Everything one `langadapt train task` run needs; each field is also a CLI flag and a config-file key.

    The reader options (`--format`, `--text-column`, ...) come from `ReadOptions`, which the manifest records.
    """

    model_config = ConfigDict(extra="forbid")

    # Every field is a flag of `langadapt train task`, listed in `--help` in this order.
    FLAGS: ClassVar[tuple[str, ...]] = (
        "language", "task", "train", "dev", "test", "lang_adapter", "lang_adapter_version", "full_finetune", "kind",
        "reduction_factor", "base", "store", "out", "adapter_id", "epochs", "learning_rate", "head_learning_rate",
        "batch_size", "eval_batch_size", "weight_decay", "warmup_ratio", "max_length", "stride", "eval_every",
        "patience", "seed", "max_train_examples", "max_eval_examples", "max_test_examples", "fp16_weights", "licence",
        "data_format", "text_column", "label_column", "quoting", "label_names", "on_bad_row", "repair_iob", "publish",
        "keep_checkpoint", "progress",
    )  # fmt: skip

    language: str = Field(description="Language of the data (any alias: yo, yor, yor_Latn).")
    task: Task = Field(description="topic, sentiment or ner.")
    train: Path = Field(description="Training file.")
    dev: Path | None = Field(default=None, description="Validation file (default: a seeded 10% of train).")
    test: Path | None = Field(default=None, description="Test file, scored with the best checkpoint.")
    lang_adapter: str | None = Field(default=None, description="Language adapter id in the store to stack under.")
    lang_adapter_version: int | None = Field(default=None, description="Its version (default: latest).")
    full_finetune: bool = Field(default=False, description="Baseline: train every base weight, no adapter.")
    kind: str = Field(default="seq_bn", description=f"Task adapter kind: {', '.join(_kinds())}.")
    reduction_factor: int | None = Field(
        default=None,
        ge=1,
        description="seq_bn, seq_bn_inv: hidden size / bottleneck size (default 16, the paper's; 8 on 384-wide bases"
        " matches its 48-unit bottleneck).",
    )
    base: str = Field(default="embedded", description="Base model: embedded, a local directory or a hub id.")
    store: Path | None = Field(default=None, description="Adapter store (default: $LANGADAPT_STORE or cache).")
    out: Path | None = Field(default=None, description="Run directory for run.json, the adapter and checkpoints.")
    adapter_id: str | None = Field(default=None, description="Store id (default: <lang>-<task>[-full]).")
    epochs: float | None = Field(default=None, gt=0, description="Epochs (default: topic 10, sentiment 3, ner 5).")
    learning_rate: float | None = Field(
        default=None, gt=0, description=f"Peak learning rate (default: {recipes_help()})."
    )
    head_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Peak learning rate of the head (default: the base's measured head rate, else --lr).",
    )
    batch_size: int = Field(default=32, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(default=64, ge=1, description="Batch size for validation and test.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Share of steps spent warming up.")
    max_length: int = Field(default=128, ge=8, description="Tokens per input (NER: per window).")
    stride: int | None = Field(default=None, ge=0, description="NER: tokens neighbouring windows share (32).")
    eval_every: int | None = Field(default=None, ge=1, description="Validate every N steps (default: each epoch).")
    patience: int = Field(default=3, ge=0, description="Stop after N validations without gain (0: never).")
    seed: int = Field(default=42, description="Seed for initialisation, data order, dropout and sampling.")
    max_train_examples: int | None = Field(default=None, ge=1, description="Cap: a seeded sample of train.")
    max_eval_examples: int | None = Field(default=None, ge=1, description="Cap: a seeded sample of dev.")
    max_test_examples: int | None = Field(default=None, ge=1, description="Cap: a seeded sample of test.")
    fp16_weights: bool = Field(default=False, description="Store the published weights as float16.")
    licence: str | None = Field(default=None, description="Licence of the training data (default: guessed).")
    publish: bool = Field(default=True, description="Publish the adapter to the store.")
    keep_checkpoint: bool = Field(default=False, description="Keep the resumable checkpoint after success.")
    progress: bool = Field(
        default=True, description="Show progress bars (without them: a line per phase and per validation)."
    )

    @model_validator(mode="after")
    def _one_variant(self) -> TaskTrainSettings:
        """A full fine-tune has no adapters, so it cannot stack on a language adapter."""
        if self.full_finetune and self.lang_adapter:
            raise ValueError("--full-finetune trains no adapter, so it cannot use --lang-adapter")
        if self.stride is not None and self.stride >= self.max_length - 2:
            raise ValueError(f"stride {self.stride} must be well below max_length {self.max_length}")
        if self.kind not in _kinds():
            raise ValueError(f"--kind {self.kind} is not an adapter kind; use one of {', '.join(_kinds())}")
        if self.reduction_factor is not None and (self.full_finetune or self.kind not in _bottleneck_kinds()):
            raise ValueError(
                f"--reduction-factor sets a bottleneck's size; {'--full-finetune' if self.full_finetune else self.kind}"
                f" has none (bottleneck kinds: {', '.join(_bottleneck_kinds())})"
            )
        self.for_task(self.task)
        return self

    @property
    def variant(self) -> str:
        """The name reports compare: task-only:<kind>, lang+task:<language kind> (set later) or full-ft."""
        if self.full_finetune:
            return "full-ft"
        return f"task-only:{self.kind}"

    def resolved_epochs(self) -> float:
        """Epochs given, else the task's default."""
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.task]

    def learning_rates(self, base_id: str) -> tuple[float, float, dict[str, str]]:
        """Peak rates of the adapter (or whole model) and the head on a base, and where each comes from.

        A rate not given is the base's measured recipe (`recipes`), else the paper's; the head's, when neither it
        nor a measured head rate exists, is the same as the adapter's.
        """
        recipe: Recipe = recipe_for(base_id, self.full_finetune)
        lr, source = self.learning_rate, {"learning_rate": "--lr", "head_learning_rate": "--head-lr"}
        if lr is None:
            lr, source["learning_rate"] = recipe.learning_rate, f"default for base {base_id!r}: {recipe.source}"
        head = self.head_learning_rate
        if head is None and recipe.head_learning_rate is not None:
            head, source["head_learning_rate"] = recipe.head_learning_rate, source["learning_rate"]
            if self.learning_rate is not None:
                source["head_learning_rate"] = f"default for base {base_id!r}: {recipe.source}"
        elif head is None:
            head, source["head_learning_rate"] = lr, "the same as the learning rate"
        return lr, head, source


def load_settings(config: Path | None = None, **values: Any) -> TaskTrainSettings:
    """Settings from a JSON, YAML or TOML file, overridden by `values` that are not None; errors say what to fix."""
    try:
        return TaskTrainSettings.model_validate(settings_data(config, values))
    except ValidationError as err:
        hint = "fix those flags (or the same keys in the --config file); `langadapt train task --help` lists each value"
        raise options_error(err, "training settings", hint) from None


def guess_licence(paths: Sequence[Path]) -> str | None:
    """The licence of a known public data set found in the paths' folder names, else None."""
    for path in paths:
        for part in Path(path).parts:
            if part.lower() in KNOWN_LICENCES:
                return KNOWN_LICENCES[part.lower()]
    return None


def complete_iob2_labels(labels: Sequence[str]) -> list[str]:
    """The label list with `O` first if missing and, for each entity type, both `B-` and `I-` (appended)."""
    if any(label != OUTSIDE and label[:2] not in ("B-", "I-") for label in labels):
        bad = [label for label in labels if label != OUTSIDE and label[:2] not in ("B-", "I-")]
        raise LangadaptError(f"NER tags must be IOB2 (O, B-X, I-X), found {bad[:5]}", "convert the tags to IOB2")
    out = list(labels)
    if OUTSIDE not in out:
        out.insert(0, OUTSIDE)
    for label in list(out):
        if label == OUTSIDE:
            continue
        for prefix in ("B-", "I-"):
            partner = prefix + label[2:]
            if partner not in out:
                out.append(partner)
    return out


# ------------------------------------------------------------------------------------------- data


def _permutation(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n), the same on every platform."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def seeded_sample(items: Sequence[Any], cap: int | None, seed: int) -> tuple[list[Any], dict[str, int] | None]:
    """At most `cap` items, a seeded sample kept in file order; plus a record of the cap (None if unused)."""
    if cap is None or cap >= len(items):
        return list(items), None
    chosen = sorted(_permutation(len(items), seed)[:cap])
    return [items[i] for i in chosen], {"used": cap, "available": len(items), "seed": seed}


# --------------------------------------------------------------------------------------- training


@dataclass
class TaskRunResult:
    """What a training run produced: its record, the published manifest (if any) and where things are."""

    record: RunRecord
    out_dir: Path
    adapter_dir: Path
    manifest: Any | None = None
    seconds_per_step: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained model, best checkpoint loaded, in eval mode

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest for the CLI."""
        details = self.record.settings.get("details", {})
        return {
            "id": self.record.adapter_id,
            "version": self.record.adapter_version,
            "variant": self.record.variant,
            "language": self.record.language,
            "task": self.record.task,
            "metrics": self.record.metrics,
            "majority": self.record.majority,
            "validation": self.record.validation,
            "steps": self.record.steps,
            "learning_rate": details.get("learning_rate"),
            "head_learning_rate": details.get("head_learning_rate"),
            "learning_rate_source": details.get("learning_rate_source"),
            "seconds_per_step": self.seconds_per_step,
            "duration_s": self.record.duration_s,
            "data": details.get("data"),
            "warnings": details.get("warnings", []),
            "out_dir": str(self.out_dir),
            "adapter_dir": str(self.adapter_dir),
        }


def _sha256(path: Path) -> str:
    """sha256 of a data file, for the manifest's provenance."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read(settings: TaskTrainSettings, path: Path, labels: Sequence[str] | None = None) -> Any:
    """Read one split with the settings' reader options."""
    return read_split(path, settings.task, settings.reading(), labels)


@dataclass
class _Splits:
    """Examples of each split after caps, with the label list, what was capped and what reading did to each."""

    train: list[Any]
    dev: list[Any]
    test: list[Any]
    labels: list[str]
    train_labels: list[str]
    caps: dict[str, Any]
    read: dict[str, Any]  # split → the reader's Dataset (dev: train's when held out of it)
    dev_held_out: bool


def _load_splits(settings: TaskTrainSettings) -> _Splits:
    """Read train/dev/test, take the label list from the whole training file, apply the seeded caps.

    Without a dev file a seeded 10% of train is held out for validation. Classification dev/test rows with a
    label the training file lacks are bad rows (the head could never predict them); NER tags are scored as
    strings, so unseen tags in dev/test simply count as misses.
    """
    announce(f"reading {settings.train}")
    train = _read(settings, settings.train)
    log.info("%s: %s", settings.train, train.describe())
    if not train.examples:
        raise LangadaptError(f"{settings.train} holds no examples", "check the file and its columns")
    labels = complete_iob2_labels(train.labels) if settings.task == "ner" else list(train.labels)
    fixed = None if settings.task == "ner" else labels
    caps: dict[str, Any] = {}
    read: dict[str, Any] = {"train": train, "dev": train}
    train_examples = list(train.examples)
    if settings.dev is not None:
        announce(f"reading {settings.dev}")
        read["dev"] = _read(settings, settings.dev, fixed)
        log.info("%s: %s", settings.dev, read["dev"].describe())
        dev_examples = list(read["dev"].examples)
    else:
        held = set(_permutation(len(train_examples), settings.seed)[: max(1, round(0.1 * len(train_examples)))])
        dev_examples = [ex for i, ex in enumerate(train_examples) if i in held]
        train_examples = [ex for i, ex in enumerate(train_examples) if i not in held]
        caps["dev_from_train"] = {"held_out": len(held), "seed": settings.seed}
    test_examples: list[Any] = []
    if settings.test is not None:
        announce(f"reading {settings.test}")
        read["test"] = _read(settings, settings.test, fixed)
        test_examples = list(read["test"].examples)
    train_examples, caps["train"] = seeded_sample(train_examples, settings.max_train_examples, settings.seed)
    dev_examples, caps["dev"] = seeded_sample(dev_examples, settings.max_eval_examples, settings.seed + 1)
    test_examples, caps["test"] = seeded_sample(test_examples, settings.max_test_examples, settings.seed + 2)
    if not train_examples or not dev_examples:
        raise LangadaptError("the training or validation split is empty", "pass --train and --dev files with examples")
    if settings.task == "ner":
        train_labels = [tag for ex in train_examples for tag in ex.tags]
    else:
        train_labels = [ex.label for ex in train_examples]
    caps = {k: v for k, v in caps.items() if v is not None}
    return _Splits(train_examples, dev_examples, test_examples, labels, train_labels, caps, read, settings.dev is None)


def _prepare_model(
    settings: TaskTrainSettings, info: Any, name: str, labels: Sequence[str], store: Any
) -> tuple[Any, Any]:
    """The model for the variant: task adapter (+ language adapter) + head, or the whole model + head."""
    import torch
    from adapters.composition import Stack

    from langadapt.models.modeling import (
        activate,
        add_head,
        add_task_adapter,
        drop_heads,
        load_adapter_model,
        load_language_adapter,
        module_name,
        quiet_activation,
    )

    model = load_adapter_model(info)
    drop_heads(model)
    torch.manual_seed(settings.seed)
    lang_manifest = None
    if settings.full_finetune:
        add_head(model, name, settings.task, labels)
        model.active_head = name
        model.train()
        for param_name, param in model.named_parameters():
            # The pooler feeds no head here (heads read the first token's hidden state directly).
            param.requires_grad = ".pooler." not in f".{param_name}"
        return model, None
    if settings.lang_adapter:
        lang_manifest = load_language_adapter(model, store, settings.lang_adapter, settings.lang_adapter_version)
    overrides = {} if settings.reduction_factor is None else {"reduction_factor": settings.reduction_factor}
    add_task_adapter(model, name, settings.kind, **overrides)
    add_head(model, name, settings.task, labels)
    with quiet_activation():
        model.train_adapter(Stack(name))
    activate(model, name, module_name(lang_manifest.id) if lang_manifest else None)
    for param_name, param in model.named_parameters():  # only this task's head trains among the heads
        if param_name.startswith("heads.") and not param_name.startswith(f"heads.{name}."):
            param.requires_grad = False
    return model, lang_manifest


def _task_loop(base: type, head_prefix: str, head_lr: float | None) -> type:
    """The training loop class, with the head's parameters in their own AdamW groups at `head_lr` when given.

    A small encoder's first-token state can vary little between texts (multilingual-e5-small: per-dimension
    std about 0.06 on SIB-200), so a head started from N(0, 0.02) weights needs a larger step than the adapters.
    """
    if head_lr is None:
        return base

    class TaskLoop(base):  # type: ignore[valid-type, misc]
        """TrainLoop whose optimizer gives the head its own peak learning rate (same warm-up and decay)."""

        def _build_optimizer(self) -> Any:
            import torch

            optimizer = super()._build_optimizer()
            head = {id(p) for name, p in self.params.items() if name.startswith(head_prefix)}
            groups = []
            for group in optimizer.param_groups:
                settings = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
                for is_head in (False, True):
                    params = [p for p in group["params"] if (id(p) in head) == is_head]
                    if params:
                        groups.append({**settings, "params": params} | ({"lr": head_lr} if is_head else {}))
            return torch.optim.AdamW(groups, lr=self.config.learning_rate)

    return TaskLoop


def _intake(
    settings: TaskTrainSettings, splits: _Splits, train_overflow: int, dev: Any, test: Any
) -> dict[str, dict[str, Any]]:
    """What reading and encoding did to each split (see `intake`)."""
    task, max_length = settings.task, settings.max_length
    cut, windowed = (None, train_overflow) if task == "ner" else (train_overflow, None)
    train = split_intake(splits.read["train"], len(splits.train), max_length, task=task, cut=cut, windowed=windowed)
    intake = {"train": train}
    held_out = str(settings.train) if splits.dev_held_out else None
    intake["dev"] = split_intake(
        splits.read["dev"], len(splits.dev), max_length, task=task, encoded=dev, held_out_of=held_out
    )
    if "test" in splits.read:
        intake["test"] = split_intake(splits.read["test"], len(splits.test), max_length, task=task, encoded=test)
    return intake


@dataclass
class _Run:
    """What a run is, fixed before any work: its settings, language, adapter id and head, metric and store."""

    settings: TaskTrainSettings
    language: str
    adapter_id: str
    name: str  # the adapter's (and head's) module name
    metric: str  # the validation figure the best checkpoint is chosen by
    store: Any
    started: float


@dataclass
class _Encoded:
    """The splits as the model reads them: training rows, encoded dev and test, and what encoding did."""

    labels: list[str]
    pad_id: int
    stride: int
    train_rows: list[tuple[list[int], Any]]
    dev: EncodedClassification | EncodedTagging
    test: EncodedClassification | EncodedTagging
    intake: dict[str, dict[str, Any]]


@dataclass
class _Model:
    """The model for the variant, the language adapter under it (if any), and the learning rates it trains at."""

    model: Any
    lang_manifest: Any
    variant: str
    learning_rate: float
    head_learning_rate: float
    rate_sources: dict[str, str]


@dataclass
class _Trained:
    """The loop's result (best state loaded, model in eval mode), the run directory and the loop's timings."""

    loop: Any
    config: Any
    out_dir: Path
    seconds_per_step: float | None
    eval_seconds: float


@dataclass
class _Tested:
    """Test figures of the best checkpoint and the majority baseline (empty without a test split)."""

    metrics: dict[str, float]
    majority: dict[str, float]
    train_majority: str | None


def train_task_adapter(settings: TaskTrainSettings) -> TaskRunResult:
    """Train, select by validation, test, save, publish and record one task adapter (or baseline) run."""
    from langadapt.models.base import load_tokenizer, resolve_base_model

    run = _plan(settings)
    splits = _read_data(run)  # data problems, and a missing language adapter, surface before any model is loaded
    announce(f"loading the base model {settings.base}")
    info = resolve_base_model(settings.base)
    tokenizer = load_tokenizer(info)
    encoded = _tokenise(run, splits, tokenizer)
    model = _build_model(run, splits, info)
    trained = _train(run, encoded, model)
    tested = _test(run, splits, encoded, model, trained)
    return _publish(run, info, splits, encoded, model, trained, tested)


def _plan(settings: TaskTrainSettings) -> _Run:
    """The run's language, adapter id (default: <lang>-<task>[-full]), selection metric and store."""
    from langadapt.models.kinds import FULL_KIND
    from langadapt.models.language import canonical_language
    from langadapt.models.manifest import adapter_id
    from langadapt.models.modeling import module_name
    from langadapt.models.store import AdapterStore
    from langadapt.training.metrics import selection_metric

    started = time.perf_counter()
    language = canonical_language(settings.language)
    aid = settings.adapter_id or adapter_id(language, settings.task, FULL_KIND if settings.full_finetune else None)
    return _Run(
        settings=settings,
        language=language,
        adapter_id=aid,
        name=module_name(aid),
        metric=selection_metric(settings.task),
        store=AdapterStore(settings.store),
        started=started,
    )


def _read_data(run: _Run) -> _Splits:
    """The splits, and a check that the language adapter to stack on is in the store."""
    splits = _load_splits(run.settings)
    if run.settings.lang_adapter:
        run.store.get(run.settings.lang_adapter, run.settings.lang_adapter_version)
    return splits


def _tokenise(run: _Run, splits: _Splits, tokenizer: Any) -> _Encoded:
    """Encode the splits (NER: in windows of `max_length` tokens) and announce what encoding cut."""
    settings, task = run.settings, run.settings.task
    labels = splits.labels
    label2id = {label: i for i, label in enumerate(labels)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    announce(f"tokenizing {len(splits.train)}/{len(splits.dev)}/{len(splits.test)} train/dev/test examples")
    stride = window_stride(tokenizer, settings.max_length, settings.stride)
    train_rows, train_overflow = training_rows(tokenizer, task, splits.train, label2id, settings.max_length, stride)
    dev_enc = encode_split(tokenizer, task, splits.dev, label2id, settings.max_length, stride)
    test_enc = encode_split(tokenizer, task, splits.test, label2id, settings.max_length, stride)
    intake = _intake(settings, splits, train_overflow, dev_enc, test_enc)
    for warning in cut_warnings(intake):
        announce(f"warning: {warning}")
    return _Encoded(labels, pad_id, stride, train_rows, dev_enc, test_enc, intake)


def _build_model(run: _Run, splits: _Splits, info: Any) -> _Model:
    """The variant's model on the base, with the learning rates it will train at."""
    learning_rate, head_learning_rate, rate_sources = run.settings.learning_rates(info.id)
    model, lang_manifest = _prepare_model(run.settings, info, run.name, splits.labels, run.store)
    variant = f"lang+task:{lang_manifest.kind}" if lang_manifest else run.settings.variant
    return _Model(model, lang_manifest, variant, learning_rate, head_learning_rate, rate_sources)


def _train(run: _Run, encoded: _Encoded, model: _Model) -> _Trained:
    """Run (or resume) the loop in the run directory, validating on dev; load the best state back."""
    from langadapt.training.loop import LoopConfig, TrainLoop, load_trainable_state

    settings, name = run.settings, run.name
    timer = {"eval_s": 0.0, "train_s": 0.0, "steps": 0}

    def evaluate(_: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        figures = score_split(model.model, name, encoded.dev, encoded.labels, encoded.pad_id, settings.eval_batch_size)
        timer["eval_s"] += time.perf_counter() - t0
        return figures

    base_loss = task_loss(name)

    def timed_loss(m: Any, batch: Any) -> torch.Tensor:
        timer["steps"] += 1
        return base_loss(m, batch)

    steps_per_epoch = math.ceil(len(encoded.train_rows) / settings.batch_size)
    variant = model.variant
    out_dir = settings.out or Path("runs") / f"{run.adapter_id}-{variant.replace(':', '-').replace('+', '_')}"
    out_dir = Path(out_dir)
    config = LoopConfig(
        learning_rate=model.learning_rate,
        batch_size=settings.batch_size,
        weight_decay=settings.weight_decay,
        warmup_ratio=settings.warmup_ratio,
        epochs=settings.resolved_epochs(),
        eval_every=settings.eval_every or steps_per_epoch,
        patience=settings.patience or None,
        metric=run.metric,
        greater_is_better=True,
        seed=settings.seed,
        progress=settings.progress,
        description=f"{run.adapter_id} {variant}",
    )
    model.model.train()
    separate_head_lr = model.head_learning_rate if model.head_learning_rate != model.learning_rate else None
    lengths = [len(row[0]) for row in encoded.train_rows]  # the loop batches similar lengths together
    loop = _task_loop(TrainLoop, f"heads.{name}.", separate_head_lr)(
        model.model,
        encoded.train_rows,
        collate_rows(encoded.pad_id),
        timed_loss,
        evaluate,
        config,
        work_dir=out_dir / WORK_DIR,
        lengths=lengths,
    )
    announce(
        f"training {run.adapter_id} ({variant}): {loop.total_steps} steps, lr {rate(model.learning_rate)}, "
        f"head lr {rate(model.head_learning_rate)}"
    )
    train_started = time.perf_counter()
    result = loop.run()
    timer["train_s"] = time.perf_counter() - train_started - timer["eval_s"]
    load_trainable_state(model.model, result.best_state)
    model.model.eval()
    seconds_per_step = timer["train_s"] / timer["steps"] if timer["steps"] else None
    return _Trained(result, config, out_dir, seconds_per_step, timer["eval_s"])


def _test(run: _Run, splits: _Splits, encoded: _Encoded, model: _Model, trained: _Trained) -> _Tested:
    """Score the best checkpoint on the test split, beside the majority baseline."""
    from langadapt.training.metrics import majority_label

    metric = run.metric
    train_majority = majority_label(splits.train_labels) if run.settings.task != "ner" else None
    if not splits.test:
        return _Tested({}, {}, train_majority)
    announce(f"scoring the best checkpoint (step {trained.loop.best_step}) on the test split")
    batch_size = run.settings.eval_batch_size
    test_metrics = score_split(model.model, run.name, encoded.test, encoded.labels, encoded.pad_id, batch_size)
    majority = majority_figures(encoded.test, train_majority)
    announce(f"test {metric} {test_metrics[metric]:.4f} (majority {majority.get(metric, float('nan')):.4f})")
    return _Tested(test_metrics, majority, train_majority)


def _publish(
    run: _Run, info: Any, splits: _Splits, encoded: _Encoded, model: _Model, trained: _Trained, tested: _Tested
) -> TaskRunResult:
    """Save the adapter and head (or the whole model), describe it in a manifest and a run record, publish the run."""
    import torch

    from langadapt.models.kinds import FULL_KIND, TASK_HEAD_TYPES
    from langadapt.models.manifest import Manifest, TrainingInfo
    from langadapt.models.modeling import save_task_adapter

    settings, result, lang_manifest = run.settings, trained.loop, model.lang_manifest
    adapter_dir = fresh_adapter_dir(
        trained.out_dir,
        lambda folder: save_task_adapter(
            model.model, run.name, folder, fp16=settings.fp16_weights, full_model=settings.full_finetune
        ),
    )
    data_paths = [p for p in (settings.train, settings.dev, settings.test) if p is not None]
    licence = settings.licence or guess_licence(data_paths)
    details: dict[str, Any] = {
        "variant": model.variant,
        "selection_metric": run.metric,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "epochs": trained.config.epochs,
        "learning_rate": model.learning_rate,
        "head_learning_rate": model.head_learning_rate,
        "learning_rate_source": model.rate_sources,
        "eval_every": trained.config.eval_every,
        "caps": splits.caps,
        "data": encoded.intake,
        "warnings": cut_warnings(encoded.intake),
        "examples": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "seconds_per_step": trained.seconds_per_step,
        "eval_seconds": trained.eval_seconds,
        "torch_threads": torch.get_num_threads(),
    }
    settings_dump = settings.model_dump(mode="json")
    extra: dict[str, Any] = {
        **details,
        "max_length": settings.max_length,
        "stride": encoded.stride,
        "weights_dtype": "float16" if settings.fp16_weights else "float32",
        "reading": settings.reading().model_dump(mode="json"),
        "data_sha256": {str(p): _sha256(p) for p in data_paths},
        "language_adapter": {"id": lang_manifest.id, "version": lang_manifest.version} if lang_manifest else None,
    }
    if tested.train_majority is not None:
        extra["majority_label"] = tested.train_majority
    adapter_config_file = adapter_dir / "adapter_config.json"
    adapter_config = {}
    if adapter_config_file.is_file():
        adapter_config = json.loads(adapter_config_file.read_text(encoding="utf-8"))
    kind = FULL_KIND if settings.full_finetune else settings.kind
    manifest = Manifest(
        id=run.adapter_id,
        language=run.language,
        task=settings.task,
        kind=kind,
        labels=encoded.labels,
        head_type=TASK_HEAD_TYPES[settings.task],
        base_model=info.id,
        base_fingerprint=info.fingerprint,
        adapter_config=adapter_config,
        metrics={
            "test": tested.metrics,
            "majority": tested.majority,
            "validation": result.best_metrics,
            "selection_metric": run.metric,
        },
        training=TrainingInfo(
            data=[str(p) for p in data_paths], licence=licence, steps=result.steps, params=settings_dump
        ),
        artifact="model" if settings.full_finetune else "adapter",
        extra=extra,
    )
    record = RunRecord(
        kind_of_run="train-task",
        language=run.language,
        task=settings.task,
        variant=model.variant,
        adapter_kind=kind,
        base_model=info.id,
        adapter_id=run.adapter_id,
        language_adapter_id=lang_manifest.id if lang_manifest else None,
        metrics=tested.metrics,
        majority=tested.majority,
        validation=result.best_metrics,
        data=[str(p) for p in data_paths],
        licence=licence,
        steps=result.steps,
        throughput=result.throughput,
        settings={**settings_dump, "details": details, "history": result.history},
    )
    store = run.store if settings.publish else None
    published = publish_run(
        trained.out_dir, manifest, record, store=store, started=run.started, keep_checkpoint=settings.keep_checkpoint
    )
    return TaskRunResult(
        published.record,
        trained.out_dir,
        adapter_dir,
        published.manifest if published.published else None,
        trained.seconds_per_step,
        result.history,
        model.model,
    )


# ------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Test figures of a stored task adapter, beside the majority baseline."""

    record: RunRecord
    manifest: Any
    metrics: dict[str, float]
    majority: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest for the CLI."""
        return {
            "id": self.manifest.id,
            "version": self.manifest.version,
            "task": self.manifest.task,
            "language": self.manifest.language,
            "variant": self.record.variant,
            "metrics": self.metrics,
            "majority": self.majority,
            "examples": self.record.settings.get("examples"),
            "reading": self.record.settings.get("reading"),
            "data": self.record.settings.get("data"),
            "warnings": self.record.settings.get("warnings", []),
        }


def _eval_options(values: Mapping[str, Any]) -> ReadOptions:
    """Reader options for evaluation, or a user error naming each flag whose value is wrong."""
    try:
        return ReadOptions.model_validate(values)
    except ValidationError as err:
        hint = "fix those flags; `langadapt eval task --help` lists each value"
        raise options_error(err, "evaluation options", hint) from None


def evaluate_task_adapter(
    adapter: str,
    test: Path,
    *,
    store: Path | LayeredStore | None = None,
    version: int | None = None,
    base: str | None = None,
    lang_adapter: str | None = None,
    reading: Mapping[str, Any] | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
    seed: int = 42,
    out: Path | None = None,
) -> EvalResult:
    """Score a stored task adapter (with its recorded language adapter) on a test file, beside the majority.

    The file is read with the reader options the adapter was trained with (its manifest records them), each
    overridden by `reading` (ReadOptions field names; None values are ignored). `adapter` is found through the
    store view (`store`, or a path: that store over the packaged defaults).
    """
    from langadapt.models.base import load_tokenizer, resolve_base_model
    from langadapt.models.kinds import FULL_KIND, TASK_HEAD_TYPES
    from langadapt.models.modeling import (
        drop_heads,
        load_adapter_model,
        load_stack,
        module_name,
    )
    from langadapt.models.store_view import LayeredStore, store_view

    started = time.perf_counter()
    given = {k: v for k, v in (reading or {}).items() if v is not None}
    _eval_options(given)  # a wrong flag value is an error before anything is loaded
    adapter_store = store if isinstance(store, LayeredStore) else store_view(store)
    manifest = adapter_store.get(adapter, version)
    if manifest.task not in TASK_HEAD_TYPES:
        raise LangadaptError(f"{manifest.id} is a {manifest.task} adapter", "pass a topic, sentiment or ner adapter")
    options = _eval_options(recorded_options(manifest) | given)
    announce(f"reading {test}")
    read = read_split(Path(test), manifest.task, options)
    examples, cap = seeded_sample(list(read.examples), max_examples, seed)
    if not examples:
        raise LangadaptError(f"{test} holds no examples", "check the file and its columns")
    announce(f"loading the base model {base or manifest.base_model} and {manifest.id} v{manifest.version}")
    info = resolve_base_model(base or manifest.base_model)
    tokenizer = load_tokenizer(info)
    model = load_adapter_model(info)
    drop_heads(model)
    manifest, lang_manifest = load_stack(model, adapter_store, adapter, manifest.version, language_adapter=lang_adapter)
    model.eval()
    labels = list(manifest.labels)
    name = module_name(manifest.id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_length = manifest.max_length or 128
    stride = window_stride(tokenizer, max_length, manifest.stride)
    label2id = {label: i for i, label in enumerate(labels)}
    encoded = encode_split(tokenizer, manifest.task, examples, label2id, max_length, stride)
    intake = {"test": split_intake(read, len(examples), max_length, task=manifest.task, encoded=encoded)}
    for warning in cut_warnings(intake):
        announce(f"warning: {warning}")
    announce(f"scoring {len(examples)} examples")
    metrics = score_split(model, name, encoded, labels, pad_id, batch_size)
    majority = majority_figures(encoded, manifest.majority_label)
    metric = manifest.metrics.get("selection_metric") or next(iter(metrics))
    announce(f"test {metric} {metrics.get(metric, float('nan')):.4f}")
    kind_variant = (
        "full-ft"
        if manifest.kind == FULL_KIND
        else (f"lang+task:{lang_manifest.kind}" if lang_manifest else f"task-only:{manifest.kind}")
    )
    record = RunRecord(
        kind_of_run="eval-task",
        language=manifest.language,
        task=manifest.task,
        variant=kind_variant,
        adapter_kind=manifest.kind,
        base_model=info.id,
        adapter_id=manifest.id,
        adapter_version=manifest.version,
        language_adapter_id=lang_manifest.id if lang_manifest else None,
        metrics=metrics,
        majority=majority,
        data=[str(test)],
        licence=manifest.training.licence,
        duration_s=time.perf_counter() - started,
        settings={
            "examples": len(examples),
            "cap": cap,
            "max_length": max_length,
            "stride": stride,
            "reading": options.model_dump(mode="json"),
            "data": intake,
            "warnings": cut_warnings(intake),
        },
    )
    if out is not None:
        record.write(Path(out))
    return EvalResult(record, manifest, metrics, majority)
