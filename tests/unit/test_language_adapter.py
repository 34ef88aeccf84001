"""Language adapters: MLM training learns, touches only the adapter, resumes exactly and round-trips the store."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langadapt.errors import LangadaptError
from langadapt.models.base import load_tokenizer, resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.training.language_adapter import (
    HEAD_FILE,
    LanguageAdapterSettings,
    MlmBatches,
    load_language_adapter_mlm,
    load_masked_lm,
    mask_tokens,
    read_training_sentences,
    split_validation,
    tokenize,
    train_language_adapter,
)
from langadapt.training.loop import TrainingInterruptedError
from langadapt.training.pppl import pseudo_perplexity
from langadapt.training.runs import RunRecord

SENTENCES = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "Yaran sun tafi makaranta a Kano jiya.",
    "Shugaban kasa ya ziyarci Legas ranar Litinin.",
    "Mtoto alienda shuleni Nairobi jana asubuhi.",
    "Nwa ahụ gara ụlọ akwụkwọ na Enugu ụnyaahụ.",
    "Umwana yagiye ku ishuri i Kigali ejo hashize.",
    "Ijọba ti kede pé àwọn ilé-ìwé yóò ṣí padà.",
]

EDGES_TSV = (
    "rel\tstart\tend\tweight\n"
    "/r/IsA/\t/c/yo/ọmọ/n\t/c/en/child\t1.0\n"
    "/r/RelatedTo/\t/c/yo/ilé\t/c/yo/ìwé/n/wn\t1.0\n"
    "/r/Synonym/\t/c/yo/ilé\t/c/yo/ilé\t1.0\n"
    "/r/ExternalURL/\t/c/yo/Èkó\thttp://example.org/lagos\t1.0\n"
    "/r/Antonym/\t/c/ha/yaro\t/c/en/adult\t1.0\n"
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep fingerprints and stores out of the user's cache."""
    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def plain_bert_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain `BertModel` directory (no MLM head), as the embedded e5 base is."""
    from transformers import BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-plain-bert")
    BertForMaskedLM.from_pretrained(tiny_bert_dir).bert.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_bert_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic training text: the sentences with numbers, one a line."""
    path = tmp_path_factory.mktemp("text") / "train.txt"
    lines = [f"{s} {i}" for i in range(12) for s in SENTENCES]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings(base: Path, out: Path, train_text: Path, **overrides: object) -> LanguageAdapterSettings:
    """Small, fast settings for a tiny model (a high learning rate so a few steps show)."""
    values: dict[str, object] = {
        "language": "yo",
        "kind": "seq_bn",
        "text": [train_text],
        "base": str(base),
        "store": out.parent / "store",
        "out_dir": out,
        "max_steps": 30,
        "eval_every": 10,
        "learning_rate": 2e-2,
        "batch_size": 8,
        "max_length": 48,
        "dev_fraction": 0.1,
        "pppl_sentences": 10,
        "progress": False,
        "licence": "CC-BY-4.0",
    }
    return LanguageAdapterSettings.model_validate(values | overrides)


def base_state(model: torch.nn.Module, skip: set[str]) -> dict[str, torch.Tensor]:
    """Every tensor of the model except adapter weights and the named ones, cloned."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k not in skip
        and ".adapters." not in k
        and ".loras." not in k
        and "invertible_adapters" not in k
        and "lora_" not in k
    }


@pytest.mark.parametrize("kind", ["seq_bn", "seq_bn_inv", "lora"])
def test_training_lowers_validation_loss_and_publishes(
    kind: str, tiny_xlmr_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    result = train_language_adapter(settings(tiny_xlmr_dir, tmp_path / "run", text_file, kind=kind))
    history = result.loop.history
    assert [h["step"] for h in history] == [0, 10, 20, 30]
    assert result.loop.best_metric < history[0]["loss"] - 0.03
    assert result.loop.best_metric == min(h["loss"] for h in history)

    manifest = result.manifest
    assert (manifest.id, manifest.language, manifest.task, manifest.kind) == (
        f"yor_Latn-mlm-{kind}",
        "yor_Latn",
        "mlm",
        kind,
    )
    assert manifest.version == 1
    assert manifest.base_fingerprint == resolve_base_model(str(tiny_xlmr_dir)).fingerprint
    assert manifest.training.data == [str(text_file)]
    assert manifest.training.licence == "CC-BY-4.0"
    assert manifest.training.steps == 30
    assert manifest.metrics["val_loss"] == result.loop.best_metric
    assert manifest.metrics["pppl_after"] < manifest.metrics["pppl_before"]
    assert manifest.extra["mlm_head"]["source"] == "pretrained"
    assert HEAD_FILE not in manifest.files  # the pretrained head stays with the base
    assert {"adapter_config.json", "adapter.safetensors"} <= set(manifest.files)
    assert AdapterStore(tmp_path / "store").get(manifest.id).version == 1

    untouched = base_state(load_masked_lm(resolve_base_model(str(tiny_xlmr_dir))).model, set())
    after = base_state(result.model, set())
    assert set(after) == set(untouched)
    for key, tensor in untouched.items():  # encoder and pretrained MLM head alike
        assert torch.equal(tensor, after[key]), f"base weight {key} changed"

    run = RunRecord.read(tmp_path / "run")
    assert (run.kind_of_run, run.variant, run.task, run.language) == ("train-lang", f"lang:{kind}", "mlm", "yor_Latn")
    assert run.metrics["pppl"] == manifest.metrics["pppl_after"]
    assert run.adapter_id == manifest.id and run.adapter_version == 1


def test_pppl_before_is_the_bare_base(tiny_xlmr_dir: Path, text_file: Path, tmp_path: Path) -> None:
    result = train_language_adapter(settings(tiny_xlmr_dir, tmp_path / "run", text_file, max_steps=2, publish=False))
    info = resolve_base_model(str(tiny_xlmr_dir))
    _, dev = split_validation(read_training_sentences(result_settings(result), "yor_Latn").sentences, 0.1, 1000, 42)
    base = load_masked_lm(info).model
    expected = pseudo_perplexity(base, load_tokenizer(info), dev[:10], max_length=48)
    assert result.pppl_before is not None
    assert result.pppl_before.pppl == pytest.approx(expected.pppl, rel=1e-6)
    assert result.manifest.version == 0  # not published


def result_settings(result) -> LanguageAdapterSettings:
    """The settings a run recorded in its run.json."""
    return LanguageAdapterSettings.model_validate(
        {k: v for k, v in result.run.settings.items() if k in LanguageAdapterSettings.model_fields}
    )


def test_headless_base_trains_a_tied_fresh_head_and_leaves_the_base_untouched(
    plain_bert_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    info = resolve_base_model(str(plain_bert_dir))
    fresh = load_masked_lm(info, seed=42)
    assert fresh.head_source == "fresh"
    assert "cls.predictions.transform.dense.weight" in fresh.fresh_head
    before = base_state(fresh.model, set())

    result = train_language_adapter(settings(plain_bert_dir, tmp_path / "run", text_file, kind="seq_bn_inv"))
    model = result.model
    assert result.loop.best_metric < result.loop.history[0]["loss"] - 0.05
    head_keys = {k for k in before if k.startswith("cls.predictions.") and "decoder.weight" not in k}
    after = base_state(model, set())
    for key, tensor in before.items():
        if key in head_keys:
            assert not torch.equal(tensor, after[key]), f"fresh head parameter {key} did not train"
        else:
            assert torch.equal(tensor, after[key]), f"base weight {key} changed"
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable - set(fresh.fresh_head) and all(
        n in fresh.fresh_head or ".adapters." in n or "invertible_adapters" in n for n in trainable
    )

    manifest = result.manifest
    assert manifest.extra["mlm_head"]["source"] == "fresh"
    assert HEAD_FILE in manifest.files
    assert set(load_file(result.adapter_dir / HEAD_FILE)) == set(fresh.fresh_head)


def test_resume_after_interruption_gives_bit_identical_adapter(
    plain_bert_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    common = {"kind": "seq_bn_inv", "publish": False, "max_steps": 24, "eval_every": 8, "pppl_sentences": 4}
    reference = train_language_adapter(settings(plain_bert_dir, tmp_path / "a", text_file, **common))
    with pytest.raises(TrainingInterruptedError):
        train_language_adapter(settings(plain_bert_dir, tmp_path / "b", text_file, **common), stop_at_step=12)
    assert not (tmp_path / "b" / "run.json").exists()
    resumed = train_language_adapter(settings(plain_bert_dir, tmp_path / "b", text_file, **common))

    assert resumed.loop.history == reference.loop.history
    assert resumed.loop.best_step == reference.loop.best_step
    for name in ("adapter.safetensors", HEAD_FILE):
        ref, got = load_file(tmp_path / "a" / "adapter" / name), load_file(tmp_path / "b" / "adapter" / name)
        assert set(ref) == set(got)
        for key in ref:
            assert torch.equal(ref[key], got[key]), f"{name}: {key} differs after resume"
    assert resumed.manifest.metrics == reference.manifest.metrics


def test_resume_refuses_other_settings_and_finished_runs(tiny_xlmr_dir: Path, text_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError):
        train_language_adapter(settings(tiny_xlmr_dir, out, text_file, max_steps=4, eval_every=2), stop_at_step=2)
    with pytest.raises(LangadaptError, match=r"other settings .*mask_probability"):
        train_language_adapter(settings(tiny_xlmr_dir, out, text_file, max_steps=4, eval_every=2, mask_probability=0.3))
    train_language_adapter(settings(tiny_xlmr_dir, out, text_file, max_steps=4, eval_every=2, pppl_sentences=0))
    with pytest.raises(LangadaptError, match="finished run"):
        train_language_adapter(settings(tiny_xlmr_dir, out, text_file, max_steps=4, eval_every=2))


@pytest.mark.parametrize("headless", [False, True])
def test_store_round_trip_reproduces_mlm_logits_and_serves_a_plain_encoder(
    headless: bool, tiny_xlmr_dir: Path, plain_bert_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    from langadapt.models.modeling import load_adapter_model, load_language_adapter

    base = plain_bert_dir if headless else tiny_xlmr_dir
    result = train_language_adapter(settings(base, tmp_path / "run", text_file, kind="seq_bn_inv", max_steps=20))
    info = resolve_base_model(str(base))
    tokenizer = load_tokenizer(info)
    enc = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    trained = result.model.eval()
    with torch.no_grad():
        expected_logits = trained(**enc).logits
        expected_hidden = trained.base_model(**enc).last_hidden_state

    store = AdapterStore(tmp_path / "store")
    loaded, manifest = load_language_adapter_mlm(info, store, result.manifest.id)
    with torch.no_grad():
        assert torch.equal(loaded.model(**enc).logits, expected_logits)
    assert manifest.metrics["pppl_after"] == result.pppl_after.pppl  # type: ignore[union-attr]

    encoder = load_adapter_model(info)  # a plain encoder, as task training and serving load it
    load_language_adapter(encoder, store, result.manifest.id)
    encoder.set_active_adapters(manifest.id)
    with torch.no_grad():
        hidden = encoder(**enc, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(hidden, expected_hidden, rtol=0, atol=1e-6)


def test_pppl_after_matches_a_fresh_score_of_the_stored_adapter(
    plain_bert_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    s = settings(plain_bert_dir, tmp_path / "run", text_file, max_steps=10)
    result = train_language_adapter(s)
    info = resolve_base_model(str(plain_bert_dir))
    loaded, _ = load_language_adapter_mlm(info, AdapterStore(tmp_path / "store"), result.manifest.id)
    _, dev = split_validation(read_training_sentences(s, "yor_Latn").sentences, 0.1, 1000, 42)
    score = pseudo_perplexity(loaded.model, load_tokenizer(info), dev[:10], max_length=48)
    assert score.pppl == pytest.approx(result.manifest.metrics["pppl_after"], rel=1e-9)


def test_knowledge_graph_sentences_feed_the_trainer(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    edges = tmp_path / "edges.tsv"
    edges.write_text(EDGES_TSV, encoding="utf-8")
    triples = tmp_path / "triples.csv"
    triples.write_text("text\n" + "\n".join(f"ilé is related to ìwé {i}." for i in range(30)) + "\n", encoding="utf-8")
    s = settings(
        tiny_xlmr_dir,
        tmp_path / "run",
        tmp_path / "unused",
        text=[],
        kg_edges=[edges],
        kg_triples=[triples],
        max_steps=4,
        eval_every=2,
    )
    text = read_training_sentences(s, "yor_Latn")
    # Self-loop, URL end and the edge with no Yoruba end are left out; the concept text drops the POS suffix.
    assert text.sentences[:2] == ["ọmọ is a type of child.", "ilé is related to ìwé."]
    assert len(text.sentences) == 32
    assert text.counts == {str(edges): 2, str(triples): 30}

    result = train_language_adapter(s)
    assert result.manifest.training.data == [str(edges), str(triples)]
    extra = result.manifest.extra
    assert extra["examples"]["per_file"] == {str(edges): 2, str(triples): 30}
    assert extra["examples"]["train"] + extra["validation"]["sentences"] == 32
    with pytest.raises(LangadaptError, match="no training data"):
        read_training_sentences(settings(tiny_xlmr_dir, tmp_path / "x", edges, text=[]), "yor_Latn")
    with pytest.raises(
        LangadaptError, match=r"edges\.tsv has no edge with an end in mlt_Latn \(\d+ edges in other"
    ) as err:
        read_training_sentences(
            settings(tiny_xlmr_dir, tmp_path / "x", tmp_path / "unused", text=[], kg_edges=[edges]), "mlt_Latn"
        )
    assert "--lang" in err.value.hint


def test_a_dev_file_is_the_validation_set(tiny_xlmr_dir: Path, text_file: Path, tmp_path: Path) -> None:
    dev = tmp_path / "val.csv"  # a table with a `text` column, like the Maltese ConceptNet validation file
    dev.write_text("text\n" + "\n".join(SENTENCES[:5]) + "\n", encoding="utf-8")
    s = settings(tiny_xlmr_dir, tmp_path / "run", text_file, dev=dev, max_steps=2, eval_every=2, publish=False)
    result = train_language_adapter(s)
    validation = result.manifest.extra["validation"]
    assert validation["source"] == str(dev) and validation["sentences"] == 5
    assert result.pppl_after is not None and result.pppl_after.sentences == 5
    assert result.manifest.extra["examples"]["train"] == 12 * len(SENTENCES)  # nothing held out of the text


def test_masking_follows_bert_and_never_touches_special_tokens(tiny_xlmr_dir: Path) -> None:
    tokenizer = load_tokenizer(resolve_base_model(str(tiny_xlmr_dir)))
    rows = tokenize(tokenizer, [f"{s} {i}" for i in range(40) for s in SENTENCES], max_length=48)
    batches = MlmBatches(tokenizer, 0.15)
    batch = batches.collate(rows, torch.Generator().manual_seed(3))
    again = batches.collate(rows, torch.Generator().manual_seed(3))
    assert all(torch.equal(batch[k], again[k]) for k in batch)

    labels, inputs = batch["labels"], batch["input_ids"]
    special = torch.zeros_like(labels, dtype=torch.bool)
    for r, (_, mask) in enumerate(rows):
        special[r, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
        predicted = int((labels[r] != -100).sum())
        assert predicted == max(1, round((len(mask) - sum(mask)) * 0.15))
    padding = batch["attention_mask"] == 0
    assert not ((labels != -100) & (special | padding)).any()
    assert (inputs[padding] == tokenizer.pad_token_id).all()
    chosen = labels != -100
    share_mask = float((inputs[chosen] == tokenizer.mask_token_id).float().mean())
    share_kept = float((inputs[chosen] == labels[chosen]).float().mean())
    assert 0.74 < share_mask < 0.86 and 0.06 < share_kept < 0.16
    assert not set(inputs[chosen].tolist()) & (set(tokenizer.all_special_ids) - {tokenizer.mask_token_id})

    one = mask_tokens(
        rows[:1],
        torch.Generator().manual_seed(0),
        mask_probability=0.01,
        mask_id=4,
        pad_id=1,
        random_ids=torch.tensor([7]),
    )
    assert int((one["labels"] != -100).sum()) == 1  # at least one token per sentence


def test_held_out_split_is_seeded_and_disjoint() -> None:
    sentences = [f"s{i}" for i in range(100)]
    train, dev = split_validation(sentences, 0.05, 1000, seed=1)
    assert len(dev) == 5 and len(train) == 95 and not set(train) & set(dev)
    assert split_validation(sentences, 0.05, 1000, seed=1) == (train, dev)
    assert split_validation(sentences, 0.05, 1000, seed=2)[1] != dev
    assert len(split_validation(sentences, 0.5, 7, seed=1)[1]) == 7
    with pytest.raises(LangadaptError, match="too few"):
        split_validation(["one"], 0.05, 1000, seed=1)


def test_settings_from_a_config_file_with_flags_winning(tmp_path: Path) -> None:
    config = tmp_path / "lang.json"
    config.write_text(json.dumps({"language": "ha", "batch_size": 4, "mask_probability": 0.2}), encoding="utf-8")
    s = LanguageAdapterSettings.from_file(config, batch_size=2)
    assert (s.language, s.batch_size, s.mask_probability, s.learning_rate) == ("ha", 2, 0.2, 1e-4)
    toml = tmp_path / "lang.toml"
    toml.write_text('language = "yo"\nkind = "lora"\n', encoding="utf-8")
    assert LanguageAdapterSettings.from_file(toml).kind == "lora"
    config.write_text(json.dumps({"language": "ha", "lr": 1}), encoding="utf-8")
    with pytest.raises(LangadaptError, match="lr: Extra inputs"):
        LanguageAdapterSettings.from_file(config)
    assert math.isclose(LanguageAdapterSettings(language="yo").mask_probability, 0.15)


def cli_app():
    """A root app with `train`, `eval` and `report` mounted the way the main CLI mounts them."""
    import typer

    from langadapt.training.cli_lang import register

    root, train, evaluate = typer.Typer(), typer.Typer(), typer.Typer()
    root.add_typer(train, name="train")
    root.add_typer(evaluate, name="eval")
    register(train, evaluate, root)
    return root


def test_command_line_trains_scores_and_explains_errors(
    tiny_xlmr_dir: Path, plain_bert_dir: Path, text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)  # the default run directory is ./runs/<adapter id>

    runner = CliRunner()
    app = cli_app()
    store = tmp_path / "store"
    config = tmp_path / "lang.json"
    config.write_text(json.dumps({"learning_rate": 0.02, "max_length": 48, "dev_fraction": 0.1}), encoding="utf-8")
    args = [
        "train",
        "lang",
        "--lang",
        "yo",
        "--kind",
        "lora",
        "--text",
        str(text_file),
        "--base",
        str(tiny_xlmr_dir),
        "--store",
        str(store),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--pppl-sentences",
        "5",
        "--licence",
        "CC0-1.0",
        "--config",
        str(config),
        "--no-progress",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["id"], summary["version"], summary["steps"]) == ("yor_Latn-mlm-lora", 1, 4)
    manifest = AdapterStore(store).get("yor_Latn-mlm-lora")
    assert manifest.training.params["learning_rate"] == 0.02 and manifest.training.licence == "CC0-1.0"

    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "eval",
            "pppl",
            "--text",
            str(dev),
            "--lang-adapter",
            "yor_Latn-mlm-lora",
            "--store",
            str(store),
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["adapter_id"] == "yor_Latn-mlm-lora" and scored["sentences"] == len(SENTENCES)
    run = RunRecord.read(tmp_path / "eval")
    assert (run.kind_of_run, run.variant, run.language, run.metrics["pppl"]) == (
        "eval-pppl",
        "lang:lora",
        "yor_Latn",
        scored["pppl"],
    )

    result = runner.invoke(app, ["eval", "pppl", "--text", str(dev), "--base", str(plain_bert_dir), "--no-progress"])
    assert result.exit_code == 2
    assert "no masked-LM head" in result.output and "--lang-adapter" in result.output

    result = runner.invoke(app, ["train", "lang", "--lang", "yo", "--base", str(tiny_xlmr_dir)])
    assert result.exit_code == 2 and "no training data" in result.output
    assert not (tmp_path / "runs").exists()  # a refused command leaves nothing behind

    result = runner.invoke(
        app, ["report", str(tmp_path / "run"), str(tmp_path / "eval"), "-o", str(tmp_path / "report.md"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "report.png")
    assert "lang:lora" in (tmp_path / "report.md").read_text(encoding="utf-8")
