"""Task adapters on tiny random encoders: they learn, round-trip through the store exactly, and leave a stacked
language adapter bit-identical; baselines, settings and the `train task` / `eval task` commands."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file

from langadapt.errors import LangadaptError
from langadapt.models.base import BaseModelInfo, resolve_base_model
from langadapt.models.manifest import AdapterVersion
from langadapt.models.modeling import (
    add_task_adapter,
    drop_heads,
    load_adapter_model,
    load_stack,
    load_task_adapter,
    module_name,
)
from langadapt.models.store import AdapterStore
from langadapt.training.runs import RunRecord
from langadapt.training.task_adapter import (
    TaskRunResult,
    TaskTrainSettings,
    complete_iob2_labels,
    guess_licence,
    load_settings,
    seeded_sample,
    train_task_adapter,
)

TOPICS = {
    "sport": ["football", "match", "ended", "two", "one", "Ibadan", "goal"],
    "politics": ["Rais", "Tanzania", "alizungumza", "waandishi", "habari", "Shugaban", "kasa"],
    "school": ["Mtoto", "alienda", "shuleni", "Nairobi", "jana", "asubuhi"],
}
# Words whose first text-carrying piece in the tiny 200-piece vocabulary tells them apart (a tiny random encoder
# can barely use context, so a word must be recognisable from its own first piece).
PEOPLE = ["Adébáyọ̀", "Rais", "Umwana", "Yaran", "Shugaban"]
PLACES = ["Kano", "Lagos", "Nairobi", "Tanzania", "Èkó", "Ibadan"]
FILLER = "ilé wa ya habari makaranta padà ahụ ti to in ụlọ ìwé ṣí alienda jana gara".split()  # noqa: SIM905


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep fingerprint caches and the default store out of the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("LANGADAPT_CACHE", str(root))
        mp.setenv("LANGADAPT_STORE", str(root / "store"))
        yield


@pytest.fixture(scope="module")
def learnable_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLM-R whose weights are large enough (init range 0.3) for its first token to tell texts
    apart; with the usual 0.02 every text's first-token state is nearly the same, and nothing can be learned."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from conftest import build_tiny_tokenizer

    out = tmp_path_factory.mktemp("learnable-xlmr")
    tokenizer = build_tiny_tokenizer(out)
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=520,
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1,
        initializer_range=0.3,
    )
    XLMRobertaForMaskedLM(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def info(learnable_dir: Path) -> BaseModelInfo:
    """The learnable tiny base, resolved."""
    return resolve_base_model(str(learnable_dir))


def write_topic_data(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """TSV files (text, label) whose label is told by which vocabulary the words come from."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in sizes.items():
        rows = ["text\tlabel"]
        for _ in range(n):
            label = rng.choice(sorted(TOPICS))
            rows.append(" ".join(rng.choice(TOPICS[label]) for _ in range(rng.randint(3, 8))) + f"\t{label}")
        paths[split] = folder / f"{split}.tsv"
        paths[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


def write_ner_data(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """MasakhaNER-style files: people and places among filler words, multi-word names included."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in sizes.items():
        lines: list[str] = []
        for _ in range(n):
            for _ in range(rng.randint(3, 7)):
                roll = rng.random()
                if roll < 0.2:
                    names = rng.sample(PEOPLE, 2 if rng.random() < 0.2 else 1)
                    lines += [f"{w} {'B' if i == 0 else 'I'}-PER" for i, w in enumerate(names)]
                elif roll < 0.35:
                    lines.append(f"{rng.choice(PLACES)} B-LOC")
                else:
                    lines.append(f"{rng.choice(FILLER)} O")
            lines.append("")
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def settings_for(info: BaseModelInfo, paths: dict[str, Path], tmp: Path, **overrides: Any) -> TaskTrainSettings:
    """Fast settings for tiny runs (fixed seed, no progress bar, store and run dir under `tmp`)."""
    values: dict[str, Any] = {
        "language": "yo",
        "task": "topic",
        "train": paths["train"],
        "dev": paths["dev"],
        "test": paths.get("test"),
        "base": str(info.path),
        "store": tmp / "store",
        "out": tmp / "run",
        "batch_size": 16,
        "epochs": 1,
        "learning_rate": 1e-2,
        "max_length": 32,
        "stride": 8,
        "progress": False,
        "licence": "CC0-1.0",
    }
    return TaskTrainSettings(**(values | overrides))


def logits_of(model: Any, head: str, tokenizer_dir: Path, texts: list[str]) -> torch.Tensor:
    """The head's logits for some texts, in eval mode."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], head=head).logits


def fresh_stack(info: BaseModelInfo, store: Path, adapter_id: str) -> Any:
    """A new model on the same base with the stored adapter (and its language adapter) loaded and active."""
    model = load_adapter_model(info)
    drop_heads(model)
    load_stack(model, AdapterStore(store), adapter_id)
    return model


@pytest.fixture(scope="module")
def topic_run(info: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> TaskRunResult:
    """A topic adapter trained for 10 epochs (train capped at 80 of 96 examples), its head at a higher rate."""
    tmp = tmp_path_factory.mktemp("topic")
    paths = write_topic_data(tmp / "data", {"train": 96, "dev": 32, "test": 64})
    settings = settings_for(info, paths, tmp, epochs=10, patience=0, max_train_examples=80, head_learning_rate=3e-2)
    return train_task_adapter(settings)


@pytest.fixture(scope="module")
def bert_info(tiny_bert_dir: Path) -> BaseModelInfo:
    """The conftest tiny BERT, resolved (its per-token states are informative enough for tagging)."""
    return resolve_base_model(str(tiny_bert_dir))


@pytest.fixture(scope="module")
def ner_run(bert_info: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> TaskRunResult:
    """An NER adapter trained on the tiny BERT for a few epochs."""
    tmp = tmp_path_factory.mktemp("ner")
    paths = write_ner_data(tmp / "data", {"train": 64, "dev": 24, "test": 24})
    settings = settings_for(bert_info, paths, tmp, task="ner", epochs=10, learning_rate=5e-2, patience=0)
    return train_task_adapter(settings)


def test_classification_training_lowers_the_loss_and_beats_the_majority(topic_run: TaskRunResult) -> None:
    losses = [h["loss"] for h in topic_run.history]
    assert len(losses) == 11  # before training and after each of 10 epochs
    assert min(losses[1:]) < 0.7 * losses[0]
    assert topic_run.record.metrics["macro_f1"] > topic_run.record.majority["macro_f1"] + 0.2
    assert topic_run.record.validation["macro_f1"] == max(h["macro_f1"] for h in topic_run.history)


def test_ner_training_lowers_the_loss_and_finds_entities(ner_run: TaskRunResult) -> None:
    losses = [h["loss"] for h in ner_run.history]
    assert min(losses[1:]) < 0.5 * losses[0]
    assert ner_run.record.metrics["f1"] > 0.3
    assert ner_run.record.majority["f1"] == 0.0
    assert ner_run.record.validation["f1"] == max(h["f1"] for h in ner_run.history)


@pytest.mark.parametrize(("run_name", "base_name"), [("topic_run", "info"), ("ner_run", "bert_info")])
def test_save_store_load_reproduces_logits_exactly(
    run_name: str, base_name: str, request: pytest.FixtureRequest
) -> None:
    run: TaskRunResult = request.getfixturevalue(run_name)
    info: BaseModelInfo = request.getfixturevalue(base_name)
    assert run.manifest is not None
    texts = ["Rais ya to Lagos jana", "football match Rais", "Adébáyọ̀ ni Kigali"]
    head = module_name(run.manifest.id)
    expected = logits_of(run.model, head, info.path, texts)
    loaded = fresh_stack(info, run.out_dir.parent / "store", run.manifest.id)
    assert torch.equal(logits_of(loaded, head, info.path, texts), expected)


def test_manifest_and_run_record_say_what_was_trained(topic_run: TaskRunResult, info: BaseModelInfo) -> None:
    manifest = topic_run.manifest
    assert manifest is not None
    assert (manifest.id, manifest.language, manifest.task, manifest.kind) == (
        "yor_Latn-topic",
        "yor_Latn",
        "topic",
        "seq_bn",
    )
    assert manifest.version == 1
    assert manifest.head_type == "classification"
    assert set(manifest.labels) == set(TOPICS)
    assert (manifest.base_model, manifest.base_fingerprint) == (str(info.path), info.fingerprint)
    assert manifest.adapter_config["config"]["reduction_factor"] == 16
    assert set(manifest.metrics) >= {"test", "majority", "validation"}
    assert manifest.metrics["test"] == topic_run.record.metrics
    assert manifest.training.licence == "CC0-1.0"
    assert manifest.training.steps == topic_run.record.steps == 5 * 10  # 80 examples / 16 a batch, 10 epochs
    assert manifest.training.params["learning_rate"] == 1e-2
    assert manifest.extra["head_learning_rate"] == 3e-2
    assert manifest.extra["caps"]["train"] == {"used": 80, "available": 96, "seed": 42}
    assert manifest.majority_label in TOPICS
    assert manifest.records_language_adapter and manifest.language_adapter is None
    assert set(manifest.files) == {
        "adapter_config.json",
        "adapter.safetensors",
        "head_config.json",
        "model_head.safetensors",
    }

    record = RunRecord.read(topic_run.out_dir)
    assert record.kind_of_run == "train-task"
    assert record.variant == "task-only:seq_bn"
    assert record.adapter_version == 1
    assert record.majority and record.metrics and record.validation
    assert not (topic_run.out_dir / "work").exists()  # the resumable checkpoint is gone after success


def test_fp16_weights_are_stored_as_float16_and_load_into_fp32(info: BaseModelInfo, tmp_path: Path) -> None:
    paths = write_topic_data(tmp_path / "data", {"train": 32, "dev": 16})
    run = train_task_adapter(settings_for(info, paths, tmp_path, fp16_weights=True))
    assert run.manifest is not None
    for name in ("adapter.safetensors", "model_head.safetensors"):
        with safe_open(str(run.adapter_dir / name), framework="pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}  # noqa: SIM118
    head = module_name(run.manifest.id)
    with torch.no_grad():  # what fp16 storage does to the trained weights
        for param in run.model.parameters():
            if param.requires_grad:
                param.copy_(param.half().float())
    texts = ["football match", "Rais habari kasa"]
    loaded = fresh_stack(info, tmp_path / "store", run.manifest.id)
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.equal(logits_of(loaded, head, info.path, texts), logits_of(run.model, head, info.path, texts))


def test_reduction_factor_sizes_the_bottleneck_and_survives_the_store(info: BaseModelInfo, tmp_path: Path) -> None:
    paths = write_topic_data(tmp_path / "data", {"train": 32, "dev": 16})
    run = train_task_adapter(settings_for(info, paths, tmp_path, reduction_factor=4))
    assert run.manifest is not None
    hidden = run.model.config.hidden_size
    with safe_open(str(run.adapter_dir / "adapter.safetensors"), framework="pt") as handle:
        down = [handle.get_slice(k).get_shape() for k in handle.keys() if k.endswith("adapter_down.0.weight")]  # noqa: SIM118
    assert down and {tuple(shape) for shape in down} == {(hidden // 4, hidden)}
    head = module_name(run.manifest.id)
    texts = ["football match", "Rais habari kasa"]
    loaded = fresh_stack(info, tmp_path / "store", run.manifest.id)
    assert torch.equal(logits_of(loaded, head, info.path, texts), logits_of(run.model, head, info.path, texts))
    with pytest.raises(ValidationError, match="lora has none"):
        settings_for(info, paths, tmp_path, kind="lora", reduction_factor=4)


def publish_language_adapter(info: BaseModelInfo, store: Path, kind: str, folder: Path) -> str:
    """Publish a random (non-identity) language adapter of `kind` for the base; return its id."""
    model = load_adapter_model(info)
    drop_heads(model)
    add_task_adapter(model, "lang", kind)
    torch.manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lang." in name:
                param.normal_(0.0, 0.2)
    model.save_adapter(str(folder), "lang", with_head=False, use_safetensors=True)
    manifest = AdapterStore(store).import_adapters_folder(
        folder,
        language="yor_Latn",
        task="mlm",
        kind=kind,
        base_model=info.id,
        base_fingerprint=info.fingerprint,
    )
    return manifest.id


@pytest.mark.parametrize("lang_kind", ["seq_bn", "seq_bn_inv", "lora"])
def test_stacked_training_leaves_the_language_adapter_bit_identical(
    lang_kind: str, info: BaseModelInfo, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    lang_id = publish_language_adapter(info, store, lang_kind, tmp_path / "lang")
    paths = write_topic_data(tmp_path / "data", {"train": 48, "dev": 16})
    run = train_task_adapter(settings_for(info, paths, tmp_path, lang_adapter=lang_id, epochs=2, keep_checkpoint=True))
    assert run.manifest is not None
    assert run.record.variant == f"lang+task:{lang_kind}"
    assert run.record.language_adapter_id == lang_id
    assert run.manifest.language_adapter == AdapterVersion(id=lang_id, version=1)

    state = run.model.state_dict()
    lang_name = module_name(lang_id)
    saved = load_file(tmp_path / "lang" / "adapter.safetensors")
    assert saved
    for key, tensor in saved.items():
        assert torch.equal(state[key.replace(".lang.", f".{lang_name}.")], tensor), key
    base_weights = load_file(info.path / "model.safetensors")  # the checkpoint itself, not a fresh load
    compared = [key for key in base_weights if key in state]
    assert len(compared) > 20
    for key in compared:
        assert torch.equal(state[key], base_weights[key]), key
    task_name = module_name(run.manifest.id)
    # What the optimizer held at the end (the kept checkpoint, not the best one): the task adapter and its head
    # only, and trained (its up-projections start at zero).
    final = load_file(run.out_dir / "work" / "checkpoint" / "trainable.safetensors")
    assert {k.split(".")[0] for k in final} == {"roberta", "heads"}
    assert all(f".{task_name}." in k for k in final)
    assert not any(f".{lang_name}." in k for k in final)
    ups = [v for k, v in final.items() if "adapter_up.weight" in k]
    assert ups and all(bool(t.abs().sum() > 0) for t in ups)

    texts = ["football match", "Rais habari kasa"]
    loaded = fresh_stack(info, store, run.manifest.id)  # loads the recorded language adapter too
    assert str(loaded.active_adapters) == f"Stack[{lang_name}, {task_name}]"
    expected = logits_of(run.model, task_name, info.path, texts)
    assert torch.equal(logits_of(loaded, task_name, info.path, texts), expected)


def test_full_finetune_trains_the_base_and_round_trips(info: BaseModelInfo, tmp_path: Path) -> None:
    paths = write_topic_data(tmp_path / "data", {"train": 64, "dev": 32})
    settings = settings_for(info, paths, tmp_path, full_finetune=True, learning_rate=1e-3, keep_checkpoint=True)
    run = train_task_adapter(settings)
    assert run.manifest is not None
    assert (run.manifest.id, run.manifest.kind, run.manifest.artifact) == ("yor_Latn-topic-full", "full", "model")
    assert run.record.variant == "full-ft"
    assert "model.safetensors" in run.manifest.files
    # What the optimizer held at the end (the kept checkpoint): every base weight but the unused pooler, moved.
    final = load_file(run.out_dir / "work" / "checkpoint" / "trainable.safetensors")
    base = load_file(info.path / "model.safetensors")
    encoder = {k for k in base if k.startswith("roberta.") and "pooler" not in k}
    assert encoder <= set(final)
    assert not any("pooler" in k for k in final)
    moved = {k for k in encoder if not torch.equal(final[k], base[k])}
    assert {"roberta.embeddings.word_embeddings.weight", "roberta.encoder.layer.0.attention.self.query.weight"} <= moved

    model = load_adapter_model(info)
    drop_heads(model)
    load_task_adapter(model, AdapterStore(tmp_path / "store"), run.manifest.id)
    head = module_name(run.manifest.id)
    texts = ["football match", "Rais habari kasa"]
    assert torch.equal(logits_of(model, head, info.path, texts), logits_of(run.model, head, info.path, texts))


def test_settings_from_a_config_file_with_flags_winning(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("task: ner\nlanguage: hau\ntrain: t.txt\nepochs: 2\nmax-length: 64\n", encoding="utf-8")
    settings = load_settings(config, epochs=7.0, seed=None)
    assert (settings.task, settings.language, settings.epochs, settings.max_length) == ("ner", "hau", 7.0, 64)
    assert settings.learning_rates("xlm-roberta-base")[:2] == (1e-4, 1e-4)  # the paper's, for an unmeasured base
    assert settings.batch_size == 32 and settings.weight_decay == 0.01 and settings.warmup_ratio == 0.05
    json_config = tmp_path / "settings.json"
    json_config.write_text(json.dumps({"task": "topic", "language": "yo", "train": "t.tsv"}), encoding="utf-8")
    assert load_settings(json_config).resolved_epochs() == 10.0
    with pytest.raises(LangadaptError, match="--lr"):
        load_settings(config, learning_rate=-1.0)
    with pytest.raises(LangadaptError, match="cannot use --lang-adapter"):
        load_settings(config, full_finetune=True, lang_adapter="yor_Latn-mlm-seq_bn")
    with pytest.raises(LangadaptError, match="--colour"):
        load_settings(config, colour="red")
    with pytest.raises(LangadaptError, match="--task"):
        load_settings(None, language="yo", train=Path("t.tsv"))


def test_the_head_can_have_its_own_learning_rate() -> None:
    from langadapt.training.loop import LoopConfig, TrainLoop
    from langadapt.training.task_adapter import _task_loop

    model = torch.nn.Module()
    model.body = torch.nn.Linear(4, 4)
    model.heads = torch.nn.ModuleDict({"t": torch.nn.Linear(4, 2), "other": torch.nn.Linear(4, 2)})
    model.heads["other"].requires_grad_(False)
    config = LoopConfig(learning_rate=1e-4, warmup_ratio=0.0, epochs=1, batch_size=2, progress=False)

    def build(head_lr: float | None) -> Any:
        loop_class = _task_loop(TrainLoop, "heads.t.", head_lr)
        return loop_class(model, [0, 1, 2, 3], lambda rows, gen: {}, lambda m, b: torch.tensor(0.0), dict, config)

    assert {g["lr"] for g in build(None).optimizer.param_groups} == {1e-4}
    loop = build(1e-2)
    by_lr: dict[float, set[int]] = {}
    for group in loop.optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    head_ids = {id(p) for p in model.heads["t"].parameters()}
    assert by_lr[1e-2] == head_ids
    assert by_lr[1e-4] == {id(p) for p in model.body.parameters()}
    assert {g["weight_decay"] for g in loop.optimizer.param_groups if g["lr"] == 1e-2} == {0.0, 0.01}
    loop.optimizer.step()
    loop.scheduler.step()  # the schedule scales both rates alike: half-way through two steps
    assert {g["lr"] / g["initial_lr"] for g in loop.optimizer.param_groups} == {0.5}
    assert {g["initial_lr"] for g in loop.optimizer.param_groups} == {1e-4, 1e-2}


def test_helpers() -> None:
    assert complete_iob2_labels(["O", "B-PER", "I-PER", "B-LOC"]) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert complete_iob2_labels(["B-DATE"]) == ["O", "B-DATE", "I-DATE"]
    with pytest.raises(LangadaptError, match="IOB2"):
        complete_iob2_labels(["O", "PER"])
    assert guess_licence([Path("/x/ner/masakhaner2/hau/train.txt")]) == "CC-BY-NC-4.0"
    assert guess_licence([Path("topic/sib200/hau_Latn/train.tsv")]) == "CC-BY-SA-4.0"
    assert guess_licence([Path("mine.tsv")]) is None
    items = list(range(100))
    sample, record = seeded_sample(items, 10, seed=3)
    assert sample == sorted(sample) and len(set(sample)) == 10
    assert seeded_sample(items, 10, seed=3)[0] == sample
    assert seeded_sample(items, 10, seed=4)[0] != sample
    assert record == {"used": 10, "available": 100, "seed": 3}
    assert seeded_sample(items, None, seed=3) == (items, None)


@pytest.fixture(scope="module")
def cli() -> Any:
    """A Typer app with the task commands registered the way the main CLI mounts them."""
    import typer

    from langadapt.console import HELP_MARKUP
    from langadapt.training.cli_task import register

    app, train_app, eval_app = (typer.Typer(rich_markup_mode=HELP_MARKUP) for _ in range(3))
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    register(train_app, eval_app)
    return app


def test_cli_eval_reproduces_the_training_test_figures(
    cli: Any, ner_run: TaskRunResult, bert_info: BaseModelInfo
) -> None:
    from typer.testing import CliRunner

    assert ner_run.manifest is not None
    store = ner_run.out_dir.parent / "store"
    test_file = ner_run.out_dir.parent / "data" / "test.txt"
    args = ["eval", "task", "--adapter", ner_run.manifest.id, "--test", str(test_file), "--store", str(store)]
    result = CliRunner().invoke(cli, [*args, "--base", str(bert_info.path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metrics"] == pytest.approx(ner_run.record.metrics)
    assert summary["majority"] == ner_run.record.majority
    assert summary["variant"] == "task-only:seq_bn"
    assert summary["source"] == "store"


def test_eval_finds_a_packaged_default_through_the_store_view(
    ner_run: TaskRunResult, bert_info: BaseModelInfo, tmp_path: Path
) -> None:
    """The trained adapter's store as the read-only defaults layer under an empty writable store."""
    from langadapt.models.store_view import LayeredStore
    from langadapt.training.task_adapter import evaluate_task_adapter

    assert ner_run.manifest is not None
    view = LayeredStore(AdapterStore(tmp_path / "store"), AdapterStore(ner_run.out_dir.parent / "store"))
    test_file = ner_run.out_dir.parent / "data" / "test.txt"
    for name in (ner_run.manifest.id, f"default:{ner_run.manifest.id}"):
        result = evaluate_task_adapter(name, test_file, store=view, base=str(bert_info.path))
        assert result.metrics == pytest.approx(ner_run.record.metrics)


def test_cli_trains_from_config_and_flags(cli: Any, info: BaseModelInfo, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    paths = write_topic_data(tmp_path / "data", {"train": 32, "dev": 16, "test": 16})
    config = tmp_path / "run.yaml"
    config.write_text(f"task: sentiment\ntrain: {paths['train']}\nbatch_size: 16\nmax_length: 32\n", encoding="utf-8")
    args = ["train", "task", "--config", str(config), "--lang", "hau", "--dev", str(paths["dev"])]
    args += ["--test", str(paths["test"]), "--base", str(info.path), "--store", str(tmp_path / "store")]
    args += ["--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress", "--no-publish", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["id"], summary["version"], summary["task"]) == ("hau_Latn-sentiment", None, "sentiment")
    assert summary["steps"] == 2
    assert set(summary["metrics"]) >= {"accuracy", "macro_f1"}
    assert not (tmp_path / "store").exists() or not AdapterStore(tmp_path / "store").ids()
    assert (
        json.loads((tmp_path / "run" / "adapter" / "manifest.json").read_text(encoding="utf-8"))["task"] == "sentiment"
    )


def test_cli_warns_when_the_published_id_shadows_a_packaged_default(
    cli: Any, info: BaseModelInfo, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    paths = write_topic_data(tmp_path / "data", {"train": 16, "dev": 8})
    args = ["train", "task", "--lang", "hau", "--task", "sentiment", "--train", str(paths["train"])]
    args += ["--dev", str(paths["dev"]), "--base", str(info.path), "--store", str(tmp_path / "store")]
    args += ["--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "warning: hau_Latn-sentiment in the store" in result.output
    assert "shadows the packaged default:hau_Latn-sentiment@v1" in result.output


def test_cli_user_errors_exit_2_with_a_hint(cli: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli, ["train", "task", "--lang", "yo", "--task", "topic"])
    assert result.exit_code == 2
    assert "--train" in result.output and "hint:" in result.output
    missing = tmp_path / "nope.tsv"
    result = CliRunner().invoke(cli, ["train", "task", "--lang", "yo", "--task", "topic", "--train", str(missing)])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_repair_iob_is_opt_in_for_ner_splits(tmp_path: Path) -> None:
    """A stray I- tag fails strict reading with its line, and is read as B- only when repair is asked for."""
    from langadapt.errors import DataFormatError
    from langadapt.training.reading import ReadOptions, read_split

    conll = tmp_path / "train.txt"
    conll.write_text("Ade B-PER\nlọ O\nsí O\nÈkó I-LOC\n\nOjo B-PER\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as caught:
        read_split(conll, "ner")
    assert caught.value.line == 4
    repaired = read_split(conll, "ner", ReadOptions(repair_iob=True))
    assert [ex.tags for ex in repaired.examples] == [["B-PER", "O", "O", "B-LOC"], ["B-PER"]]
    assert len(repaired.repaired) == 1


# ------------------------------------------------------------------ the CLI as a new user meets it (issue 16)


def write_news_tsv(path: Path, n: int, seed: int = 0) -> Path:
    """A news TSV (`category headline text url`) as spreadsheets export it: some headlines quoted, with `""`
    for a quote and a line break inside, and a long `text` column."""
    rng = random.Random(seed)
    rows = ["category\theadline\ttext\turl"]
    for i in range(n):
        label = sorted(TOPICS)[i % len(TOPICS)]
        words = " ".join(rng.choice(TOPICS[label]) for _ in range(rng.randint(3, 6)))
        headline = f'"{words} ""{label}""\n{words}"' if i % 3 == 0 else words
        text = " ".join(rng.choice(TOPICS[label]) for _ in range(40))
        rows.append(f"{label}\t{headline}\t{text}\thttp://news.example/{i}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_numeric_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A sentiment CSV whose labels are numbers (-1, 0, 1) and whose text column is `tweet`."""
    rng = random.Random(seed)
    vocab = {"-1": TOPICS["politics"], "0": TOPICS["school"], "1": TOPICS["sport"]}
    rows = ["id,tweet,label"]
    for i in range(n):
        label = ["-1", "0", "1"][i % 3]
        rows.append(f"{i},{' '.join(rng.choice(vocab[label]) for _ in range(4))},{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def invoke(cli: Any, *args: str) -> Any:
    """Run the task commands as a user would (stdout and stderr apart)."""
    from typer.testing import CliRunner

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_missing_column_names_the_column_flags_in_the_cli(cli: Any, tmp_path: Path) -> None:
    news = write_news_tsv(tmp_path / "train.tsv", 6)
    for extra in ([], ["--on-bad-row", "skip"], ["--format", "sib200"]):
        result = invoke(cli, "train", "task", "--lang", "yo", "--task", "topic", "--train", news, *extra)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "'category', 'headline', 'text', 'url'" in result.output
        assert "--label-column" in result.output and "--text-column" in result.output
        assert "--on-bad-row" not in result.output.split("hint:")[1]


@pytest.mark.parametrize(
    ("flag", "value", "listed"),
    [
        ("--format", "tsvx", "auto, sib200, nusax, afrisenti, csv, tsv, jsonl, parquet"),
        ("--kind", "bottleneck", "seq_bn, seq_bn_inv, lora"),
        ("--quoting", "double", "'csv' or 'none'"),
        ("--on-bad-row", "ignore", "'error' or 'skip'"),
        ("--task", "topics", "'topic', 'sentiment' or 'ner'"),
    ],
)
def test_every_invalid_option_value_is_a_message_a_hint_and_exit_2(
    cli: Any, tmp_path: Path, flag: str, value: str, listed: str
) -> None:
    train = write_numeric_csv(tmp_path / "train.csv", 6)
    args = ["--lang", "yo", "--task", "topic", "--train", train, flag, value]
    result = invoke(cli, "train", "task", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{flag} " in result.output and value in result.output and listed in result.output
    assert "hint:" in result.output
    result = invoke(cli, "eval", "task", "--adapter", "any", "--test", train, flag, value)
    if flag in ("--quoting", "--on-bad-row"):  # checked before the store is opened
        assert result.exit_code == 2 and listed in result.output and "hint:" in result.output


def test_help_lists_every_format_and_where_the_learning_rate_comes_from(cli: Any) -> None:
    from langadapt.training.readers import CLASSIFICATION_FORMATS, NER_FORMATS

    for command in (["train", "task"], ["eval", "task"]):
        result = invoke(cli, *command, "--help")
        text = " ".join(result.output.split())
        for fmt in (*CLASSIFICATION_FORMATS, *NER_FORMATS):
            assert fmt in text
    text = "".join(invoke(cli, "train", "task", "--help").output.split())  # click may wrap at a hyphen
    assert "embedded1e-3,head1e-2(docs/default-adapters.md)" in text
    assert "thepaper's1e-4" in text


def test_the_learning_rate_defaults_to_the_recipe_measured_for_the_base(tmp_path: Path) -> None:
    settings = TaskTrainSettings(language="yo", task="topic", train=tmp_path / "t.tsv")
    lr, head, sources = settings.learning_rates("embedded")
    assert (lr, head) == (1e-3, 1e-2)
    assert "embedded" in sources["learning_rate"] and "docs/default-adapters.md" in sources["learning_rate"]
    assert settings.learning_rates("xlm-roberta-base")[:2] == (1e-4, 1e-4)
    given = settings.model_copy(update={"learning_rate": 5e-4})
    assert given.learning_rates("embedded")[:2] == (5e-4, 1e-2)
    assert given.learning_rates("embedded")[2]["learning_rate"] == "--lr"
    full = settings.model_copy(update={"full_finetune": True})
    assert full.learning_rates("embedded")[:2] == (2e-5, 2e-5)


def test_a_quoted_news_tsv_with_custom_columns_trains_and_says_what_it_did(
    cli: Any, info: BaseModelInfo, tmp_path: Path
) -> None:
    """A new user's topic run: quoted TSV, custom columns, no bars, texts longer than --max-length."""
    train = write_news_tsv(tmp_path / "train.tsv", 30)
    dev = write_news_tsv(tmp_path / "dev.tsv", 9, seed=1)
    bad_line = train.read_text(encoding="utf-8").count("\n") + 1  # 30 rows, 10 of them on two lines
    with train.open("a", encoding="utf-8") as f:
        f.write("sport\tbroken row\n")  # one malformed row, skipped and listed
    args = ["--lang", "yo", "--task", "topic", "--train", train, "--dev", dev, "--base", info.path]
    args += ["--text-column", "text", "--label-column", "category", "--on-bad-row", "skip", "--max-length", "16"]
    args += ["--epochs", "1", "--batch-size", "8", "--store", tmp_path / "store", "--out", tmp_path / "run"]
    result = invoke(cli, "train", "task", *args, "--no-progress")
    assert result.exit_code == 0, result.output
    phases = result.stderr
    for phase in ("reading", "loading the base model", "training", "validation macro_f1"):
        assert phase in phases, phases
    out = result.stdout
    assert "train  " in out and "(tsv, csv quoting)" in out
    assert bad_line == 42
    assert f"skipped {train}:42: 2 fields, expected 4" in out
    assert "30 of 30 examples used; 1 rows skipped" in out
    assert "30 texts cut at 16 tokens" in out
    assert "warning: 30 of 30 train texts (100%) are longer than 16 tokens" in out
    assert "lr          1e-4, head 1e-4" in out  # a local base: the paper's rate, said with its source
    assert "the paper's task-adapter rate" in out

    record = RunRecord.read(tmp_path / "run")
    data = record.settings["details"]["data"]
    assert data["train"]["quoting"] == "csv" and data["train"]["cut"] == 30
    assert data["train"]["skipped"]["rows"] == [
        {"file": str(train), "line": 42, "reason": "2 fields, expected 4 (category, headline, text, url)"}
    ]
    assert record.settings["details"]["learning_rate_source"]["learning_rate"].startswith("default for base")
    manifest = AdapterStore(tmp_path / "store").get("yor_Latn-topic")
    assert manifest.extra["data"] == data
    assert manifest.extra["reading"]["quoting"] == "csv"
    assert manifest.extra["reading"]["text_column"] == "text"
    assert manifest.extra["learning_rate_source"]["learning_rate"].startswith("default for base")


def test_numeric_labels_get_names_recorded_and_reused_by_eval(cli: Any, info: BaseModelInfo, tmp_path: Path) -> None:
    train = write_numeric_csv(tmp_path / "train.csv", 24)
    test = write_numeric_csv(tmp_path / "test.csv", 9, seed=2)
    args = ["--lang", "ha", "--task", "sentiment", "--train", train, "--test", test, "--base", info.path]
    args += ["--text-column", "tweet", "--label-names", "-1=negative,0=neutral,1=positive", "--epochs", "1"]
    args += ["--store", tmp_path / "store", "--out", tmp_path / "run", "--no-progress", "--json"]
    result = invoke(cli, "train", "task", *args)
    assert result.exit_code == 0, result.output
    manifest = AdapterStore(tmp_path / "store").get("hau_Latn-sentiment")
    assert manifest.labels == ["negative", "neutral", "positive"]
    assert manifest.extra["reading"]["label_names"] == {"-1": "negative", "0": "neutral", "1": "positive"}
    mapping = tmp_path / "names.txt"
    mapping.write_text("-1=neg\n0=neu\n1=pos\n", encoding="utf-8")
    evaluated = invoke(cli, "eval", "task", "--adapter", manifest.id, "--test", test, "--store", tmp_path / "store")
    assert evaluated.exit_code == 0, evaluated.output  # the recorded column and names read the test file
    assert "test   " in evaluated.stdout and "9 of 9 examples used" in evaluated.stdout
    renamed = invoke(
        cli, "eval", "task", "--adapter", manifest.id, "--test", test, "--store", tmp_path / "store",
        "--label-names", mapping, "--json",
    )  # fmt: skip
    assert renamed.exit_code == 0, renamed.output
    assert json.loads(renamed.stdout)["reading"]["label_names"] == {"-1": "neg", "0": "neu", "1": "pos"}


def test_eval_reads_with_the_training_options_and_lists_iob_repairs(
    cli: Any, ner_run: TaskRunResult, bert_info: BaseModelInfo, tmp_path: Path
) -> None:
    """A test file with a stray I- tag: trained with --repair-iob, scored the same way, each repair listed."""
    assert ner_run.manifest is not None
    store = tmp_path / "store"
    data = write_ner_data(tmp_path / "data", {"train": 40, "dev": 12})
    stray = tmp_path / "data" / "test.txt"
    stray.write_text("Ade B-PER\nlọ O\nsí O\nKano I-LOC\n\nRais B-PER\nyes O\n", encoding="utf-8")
    args = ["--lang", "yo", "--task", "ner", "--train", data["train"], "--dev", data["dev"], "--test", stray]
    args += ["--base", bert_info.path, "--store", store, "--out", tmp_path / "run", "--epochs", "1"]
    strict = invoke(cli, "train", "task", *args, "--no-progress")
    assert strict.exit_code == 2 and f"{stray}:4:" in strict.output
    assert "--repair-iob" in strict.output.split("hint:")[1]  # the flag that fixes it, named in the hint
    trained = invoke(cli, "train", "task", *args, "--repair-iob", "--no-progress")
    assert trained.exit_code == 0, trained.output
    assert f"repaired {stray}:4: tag I-LOC follows O" in trained.stdout
    manifest = AdapterStore(store).get("yor_Latn-ner")
    assert manifest.extra["reading"]["repair_iob"] is True
    assert manifest.extra["data"]["test"]["repaired"]["count"] == 1

    evaluated = invoke(cli, "eval", "task", "--adapter", "yor_Latn-ner", "--test", stray, "--store", store)
    assert evaluated.exit_code == 0, evaluated.output
    assert f"repaired {stray}:4:" in evaluated.stdout
    assert "test entity" not in evaluated.stderr and "test f1" in evaluated.stderr
    overridden = invoke(
        cli, "eval", "task", "--adapter", "yor_Latn-ner", "--test", stray, "--store", store, "--strict-iob"
    )
    assert overridden.exit_code == 2 and f"{stray}:4:" in overridden.output
