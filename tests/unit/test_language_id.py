"""Language identification on a tiny base: the head's training steps, its store entry, `auto` routing and labelling."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from langadapt.errors import LangadaptError
from langadapt.inference.auto import AutoBatch, request_language
from langadapt.inference.engine import Engine
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import UNCERTAIN, Detection, find_head, is_auto, route_texts
from langadapt.inference.settings import InferenceSettings
from langadapt.label.formats import Row
from langadapt.label.job import LabelJob
from langadapt.label.labeller import Labeller
from langadapt.label.options import LabelSettings
from langadapt.models.base import BaseModelInfo, load_tokenizer, resolve_base_model
from langadapt.models.kinds import LANGUAGE_ID, LID_KIND, LID_TASK
from langadapt.models.language_id import LanguageIdHead, content_ids, mean_rows, read_input_embeddings
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import store_view
from langadapt.serve.api import InferenceAPI, TaskCall, result_item
from langadapt.serve.language_id import auto_response
from langadapt.serve.schemas import LabelRequest, MultiTaskRequest
from langadapt.serve.settings import ServerSettings
from langadapt.serve.synthetic import AdapterFactory
from langadapt.training.language_id import (
    LanguageIdSettings,
    Split,
    choose_threshold,
    embed,
    evaluate,
    fit_head,
    probabilities,
    publish_head,
    read_parallel,
    train_language_id,
    with_short_spans,
)

TEXTS = {
    "yor_Latn": [
        "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
        "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
        "Ijọba ti kede pé àwọn ilé-ìwé yóò ṣí padà.",
    ],
    "hau_Latn": [
        "Yaran sun tafi makaranta a Kano jiya.",
        "Shugaban kasa ya ziyarci Legas ranar Litinin.",
        "Yaran sun tafi Kano ranar Litinin.",
    ],
    "swh_Latn": [
        "Mtoto alienda shuleni Nairobi jana asubuhi.",
        "Rais wa Tanzania alizungumza na waandishi wa habari.",
        "Mtoto wa Rais alienda Nairobi jana.",
    ],
}


UNKNOWN = "☂ ✓"  # no piece of the tiny vocabulary: nothing to identify


def write_sib(root: Path) -> Path:
    """A SIB-200-shaped folder: the same three sentence ids per split in every language (parallel)."""
    for code, sentences in TEXTS.items():
        folder = root / code
        folder.mkdir(parents=True)
        for split, (ident, text) in zip(("train", "dev", "test"), enumerate(sentences), strict=True):
            rows = [f"{ident * 10 + k}\tgeography\t{text}" for k in range(4)]
            body = "index_id\tcategory\ttext\n" + "\n".join(rows) + "\n"
            (folder / f"{split}.tsv").write_text(body, encoding="utf-8")
    return root


@dataclass
class World:
    info: BaseModelInfo
    store: AdapterStore
    engine: Engine
    head: LanguageIdHead


@pytest.fixture(scope="module")
def world(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny base; a store with a language-ID head for yo/ha/sw and task adapters for yo (ner, topic) and ha."""
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path_factory.mktemp("lid-store"))
    tokenizer = load_tokenizer(info)
    embeddings = read_input_embeddings(Path(info.path))
    codes = list(TEXTS)
    texts = [t for code in codes for t in TEXTS[code]]
    labels = np.array([i for i, code in enumerate(codes) for _ in TEXTS[code]])
    features, _ = embed(tokenizer, embeddings, texts)
    head, _ = fit_head((features, labels), (features, labels), codes, (1e-4,), 100)
    head.threshold, head.scale, head.power = 0.6, 1.5, 0.3  # a length calibration, so parity tests cover it
    publish_head(store, head, info, {"test": {"accuracy": 1.0}}, {"licence": "CC-BY-SA-4.0"})
    factory = AdapterFactory(info, seed=5)
    factory.publish_task_adapter(store, "yor_Latn", "ner")
    factory.publish_task_adapter(store, "yor_Latn", "topic")
    factory.publish_task_adapter(store, "hau_Latn", "topic")
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=store.root, defaults=None, threads=1))
    return World(info, store, engine, head)


# ------------------------------------------------------------------------------------------ training


def test_read_parallel_refuses_a_sentence_id_in_two_splits(tmp_path: Path) -> None:
    root = write_sib(tmp_path / "sib")
    codes, splits = read_parallel(root)
    assert codes == sorted(TEXTS) and len(splits["train"].texts) == 12
    path = root / "hau_Latn" / "test.tsv"
    path.write_text(path.read_text(encoding="utf-8") + "1\tgeography\tleaked\n", encoding="utf-8")
    with pytest.raises(LangadaptError, match="both train and test"):
        read_parallel(root)


def test_short_spans_are_word_windows_of_their_sentence() -> None:
    split = Split()
    split.add("one two three four five six seven eight nine", 0, 7)
    out = with_short_spans(split, 5, seed=1)
    assert len(out.texts) == 6 and out.short == [False] + [True] * 5
    for text in out.texts[1:]:
        assert text in split.texts[0] and 1 <= len(text.split()) <= 8
    assert set(out.ids) == {7}


def test_the_threshold_is_the_lowest_confidence_that_keeps_precision() -> None:
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]])
    labels = np.array([0, 0, 1, 0, 1])  # the 0.6 prediction is wrong
    assert choose_threshold(probs, labels, 1.0) == pytest.approx(0.8)
    assert choose_threshold(probs, labels, 0.8) == pytest.approx(0.55)
    assert choose_threshold(probs, labels, 1.01) == 1.0


def test_the_head_is_a_linear_map_of_mean_embeddings(world: World) -> None:
    """`table` (per sub-word scores) gives the same logits as the head on mean features."""
    tokenizer = load_tokenizer(world.info)
    embeddings = read_input_embeddings(Path(world.info.path))
    texts = [TEXTS["yor_Latn"][0], TEXTS["swh_Latn"][1]]
    features, counts = embed(tokenizer, embeddings, texts)
    ids = content_ids(tokenizer, texts)
    assert counts.tolist() == [len(row) for row in ids]
    table = world.head.table(embeddings)
    logits = mean_rows(table, ids) + world.head.bias
    expected = torch.from_numpy(features) @ world.head.weight.T + world.head.bias
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    half = world.head.table(embeddings.half())  # a half-precision base (CUDA): the table is float32 on the CPU
    assert half.dtype == torch.float32 and half.device.type == "cpu" and half.shape == table.shape
    probs = probabilities(world.head, features, counts)
    scores = evaluate(probs, np.array([0, 2]), world.head.labels, 0.5)
    assert scores["accuracy"] == 1.0 and set(scores["f1"]) == set(TEXTS)
    served = world.engine.identify(texts)
    np.testing.assert_allclose([d.score for d in served], probs.max(axis=1), rtol=1e-4)
    assert [d.language for d in served] == [world.head.labels[i] for i in probs.argmax(axis=1)]


def test_length_calibration_scales_logits_and_survives_a_round_trip(tmp_path: Path) -> None:
    head = LanguageIdHead(["a_Latn", "b_Latn"], torch.eye(2, 3), torch.zeros(2), 0.7, scale=2.0, power=0.5)
    logits = torch.ones((2, 2))
    scaled = head.calibrated(logits, torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(scaled, torch.tensor([[2.0, 2.0], [4.0, 4.0]]))
    head.save(tmp_path)
    again = LanguageIdHead.from_folder(tmp_path)
    assert (again.scale, again.power, again.threshold, again.labels) == (2.0, 0.5, 0.7, head.labels)
    features = np.array([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=np.float32)
    short, long = probabilities(head, features, np.array([1.0, 16.0], dtype=np.float32)).max(axis=1)
    assert long > short, "the same mean evidence is surer over more sub-words"


def test_train_language_id_publishes_a_head_with_metrics_and_licence(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    root = write_sib(tmp_path / "sib")
    store = tmp_path / "store"
    settings = LanguageIdSettings(
        data=root, base=str(tiny_xlmr_dir), store=str(store), strengths=(1e-3,), cache=tmp_path / "cache"
    )
    summary = train_language_id(settings)
    assert summary["id"] == "any-lid" and summary["version"] == 1
    manifest = AdapterStore(store).get("any-lid")
    assert manifest.task == LID_TASK and manifest.head_type == LANGUAGE_ID and manifest.kind == LID_KIND
    assert manifest.language is None and manifest.labels == sorted(TEXTS)
    assert manifest.training.licence == "CC-BY-SA-4.0"
    assert 0.0 <= manifest.metrics["threshold"] <= 1.0 and "f1" in manifest.metrics["test"]
    assert manifest.metrics["length_calibration"]["scale"] > 0
    head = LanguageIdHead.from_folder(AdapterStore(store).path("any-lid"))
    assert head.labels == manifest.labels and head.threshold == manifest.metrics["threshold"]
    assert list((tmp_path / "cache").iterdir()), "features are cached for cheap reruns"
    again = train_language_id(settings)
    assert again["version"] == 2 and again["metrics"]["test"] == summary["metrics"]["test"]


# ------------------------------------------------------------------------------------------ inference


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")
def test_a_cuda_worker_identifies_as_a_cpu_one(world: World, tiny_xlmr_dir: Path) -> None:
    cuda = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=world.store.root, defaults=None, device="cuda"))
    cpu = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=world.store.root, defaults=None, device="cpu"))
    texts = [TEXTS["yor_Latn"][0], TEXTS["hau_Latn"][1], TEXTS["swh_Latn"][2], UNKNOWN]
    on_gpu, on_cpu = cuda.identify(texts), cpu.identify(texts)
    assert [d.language for d in on_gpu] == [d.language for d in on_cpu]
    np.testing.assert_allclose([d.score for d in on_gpu], [d.score for d in on_cpu], rtol=1e-4, atol=1e-6)


def test_identify_names_the_language_and_is_never_confident_without_known_pieces(world: World) -> None:
    detections = world.engine.identify([TEXTS["yor_Latn"][0], TEXTS["hau_Latn"][1], TEXTS["swh_Latn"][0], "   "])
    assert [d.language for d in detections[:3]] == ["yor_Latn", "hau_Latn", "swh_Latn"]
    assert all(d.confident for d in detections[:3])
    assert detections[3].score == 0.0 and not detections[3].confident
    assert detections[0].as_dict()["name"] == "Yoruba" and len(detections[0].candidates) == 3
    assert world.engine.identify([]) == []


def test_route_texts_asks_for_lang_below_the_threshold_and_routes_each_text() -> None:
    def resolve(task: str, language: str):  # a stand-in resolver: yo has ner, ha has nothing
        if language == "yor_Latn" and task == "ner":
            return f"{task}:{language}"
        raise ServeError(404, "unknown_language", f"no {task} adapter for {language}", "try another")

    unsure = Detection("yor_Latn", 0.4, 0.5)
    sure = Detection("yor_Latn", 0.9, 0.5)
    other = Detection("hau_Latn", 0.9, 0.5)
    plans = route_texts([unsure, sure, other], resolve, ["ner", "topic"], explicit=False)
    assert plans[0].error is not None and plans[0].error.status == 422 and plans[0].error.error == UNCERTAIN
    assert "lang" in plans[0].error.hint and plans[0].error.extra["detected"]["language"] == "yor_Latn"
    assert plans[1].routes == {"ner": "ner:yor_Latn"} and set(plans[1].unavailable) == {"topic"}
    assert plans[2].error is not None and plans[2].error.status == 404
    explicit = route_texts([sure], resolve, ["ner", "topic"], explicit=True)
    assert explicit[0].error is not None and explicit[0].error.status == 404 and not explicit[0].routes


def test_an_auto_batch_routes_a_mixed_batch_text_by_text(world: World) -> None:
    texts = [TEXTS["yor_Latn"][0], TEXTS["hau_Latn"][0], TEXTS["swh_Latn"][0]]
    batch = AutoBatch(world.engine, [(texts, ("topic",), True), ([TEXTS["yor_Latn"][1]], ("ner",), True)])
    per_request = batch.collect(world.engine.run(batch.jobs))
    first, second = per_request
    assert not isinstance(first, ServeError) and not isinstance(second, ServeError)
    assert first[0].results["topic"].route.language == "yor_Latn"
    assert first[1].results["topic"].route.language == "hau_Latn"
    assert first[2].error is not None and first[2].error.status == 404, "no swahili topic adapter"
    assert request_language(first) == "mixed" and request_language(second) == "yor_Latn"
    direct = world.engine.label("topic", "yor_Latn", [texts[0]])[0]
    assert dict(first[0].results["topic"].scores) == pytest.approx(dict(direct.scores))
    assert is_auto(" Auto ") and not is_auto("yo") and not is_auto(None)


def test_the_packaged_head_is_a_default_of_the_store_view(tmp_path: Path) -> None:
    view = store_view(tmp_path / "empty")
    [found] = [c for c in view.candidates() if c.manifest.task == LID_TASK]
    assert str(found.ref) == "default:any-lid@v1" and found.manifest.head_type == LANGUAGE_ID
    fingerprint = found.manifest.base_fingerprint
    assert find_head(view, fingerprint) == found.ref
    head = LanguageIdHead.from_folder(view.open_ref(found.ref, fingerprint)[1])
    assert head.labels == found.manifest.labels and head.hidden_size == 384 and 0.5 < head.threshold < 1.0
    assert find_head(store_view(tmp_path / "empty", defaults=None), fingerprint) is None
    assert find_head(view, "another base") is None


def test_no_head_in_the_store_is_a_503_that_says_to_send_lang(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=tmp_path / "empty", defaults=None))
    with pytest.raises(ServeError) as caught:
        engine.identify(["text"])
    assert caught.value.status == 503 and "lang" in caught.value.hint


def test_a_new_head_and_the_threshold_setting_are_followed(world: World, tiny_xlmr_dir: Path) -> None:
    strict = Engine(
        InferenceSettings(base=str(tiny_xlmr_dir), store=world.store.root, defaults=None, lid_threshold=0.999)
    )
    mixed = TEXTS["yor_Latn"][0] + " " + TEXTS["hau_Latn"][0] + " " + TEXTS["swh_Latn"][0]
    [detection] = strict.identify([mixed])
    assert detection.threshold == 0.999 and detection.confident == (detection.score >= 0.999)
    assert world.engine.identify([mixed])[0].threshold == 0.6, "the head's own threshold by default"
    first = strict._identifier
    head = LanguageIdHead(world.head.labels, world.head.weight, world.head.bias, 0.5)
    publish_head(world.store, head, world.info, {}, {})
    strict.identify(["x"])
    assert strict._identifier is not first and strict._identifier[1].ref.version == 2


# ------------------------------------------------------------------------------------------ labelling


def test_labeller_auto_writes_the_detected_language_and_refuses_to_guess(world: World) -> None:
    labeller = Labeller(world.engine, ("topic",), "auto")
    rows = [
        Row(1, 1, {}, text=TEXTS["hau_Latn"][1]),
        Row(2, 2, {}, text=TEXTS["yor_Latn"][2]),
        Row(3, 3, {}, text="   "),
    ]
    first, second, third = labeller.label(rows)
    assert first.values["detected_language"] == "hau_Latn" and first.values["topic_label"] is not None
    assert second.values["detected_language"] == "yor_Latn" and first.error is None
    assert third.kind == UNCERTAIN and third.values["topic_label"] is None and "lang" in str(third.error)
    assert {"detected_language", "detected_language_score"} <= set(labeller.columns)


def test_label_job_with_lang_auto(world: World, tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [{"text": TEXTS["yor_Latn"][0]}, {"text": TEXTS["hau_Latn"][2]}, {"text": TEXTS["swh_Latn"][1]}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    options = LabelSettings(
        input=source,
        output=output,
        tasks=("topic",),
        lang="auto",
        base=str(tiny_xlmr_dir),
        store=world.store.root,
        defaults=None,
    )
    summary = LabelJob(options, notify=lambda _: None).run()
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["detected_language"] for r in rows] == ["yor_Latn", "hau_Latn", "swh_Latn"]
    assert rows[0]["topic_label"] and rows[1]["topic_label"] and rows[2]["topic_label"] is None
    assert summary["lang"] == "auto" and summary["errors"] == 1
    assert set(summary["adapters"]["topic"]) == {"yor_Latn", "hau_Latn"}


# ------------------------------------------------------------------------------------------ serving


def answer(world: World, request: object) -> tuple[int, dict]:
    """One request through the worker's stages (decode → predict → encode), without LitServe around it."""
    api = InferenceAPI(ServerSettings(**world.engine.settings.model_dump(), runtime_dir=Path("unused")))
    api.engine = world.engine
    decoded = api.decode_request(request)  # type: ignore[arg-type]
    [output] = api.predict([decoded])
    response = api.encode_response(output)
    return response.status_code, json.loads(response.body)


def test_v1_label_auto_answers_per_text_languages_labels_and_errors(world: World) -> None:
    texts = [TEXTS["yor_Latn"][0], TEXTS["hau_Latn"][1], UNKNOWN, TEXTS["swh_Latn"][1]]
    status, body = answer(world, MultiTaskRequest(lang="auto", texts=texts))
    assert status == 200 and body["lang"] == "auto" and body["language"] == "mixed"
    yo, ha, blank, sw = body["results"]
    assert yo["language"] == "yor_Latn" and yo["detected"]["confident"] and yo["ner"] and yo["topic"]
    assert yo["unavailable"] == {"sentiment": yo["unavailable"]["sentiment"]}
    assert ha["language"] == "hau_Latn" and ha["topic"]["stack"]["task_adapter"]["id"] == "hau_Latn-topic"
    assert ha["ner"] is None and set(ha["unavailable"]) == {"ner", "sentiment"}
    assert blank["error"]["status"] == 422 and blank["error"]["error"] == "language_not_identified"
    assert "lang" in blank["error"]["hint"] and blank["topic"] is None
    assert sw["error"]["status"] == 404 and sw["detected"]["language"] == "swh_Latn"
    assert body["tasks"] == ["ner", "topic"]


def test_v1_task_auto_and_the_whole_request_failing(world: World) -> None:
    status, body = answer(world, TaskCall("ner", LabelRequest(lang="auto", texts=[TEXTS["yor_Latn"][1]])))
    assert status == 200 and body["language"] == "yor_Latn"
    [result] = body["results"]
    assert result["detected"]["language"] == "yor_Latn" and "entities" in result
    status, body = answer(world, TaskCall("topic", LabelRequest(lang="auto", texts=[UNKNOWN])))
    assert status == 422 and body["error"] == "language_not_identified" and body["detected"]["score"] == 0.0
    status, body = answer(world, TaskCall("topic", LabelRequest(lang="AUTO", texts=[UNKNOWN, TEXTS["swh_Latn"][0]])))
    assert status == 422 and [r["error"]["status"] for r in body["results"]] == [422, 404]
    status, body = answer(world, MultiTaskRequest(lang="auto", texts=[TEXTS["hau_Latn"][0]], tasks=["ner"]))
    assert status == 404 and body["detected"]["language"] == "hau_Latn" and "ner" in body["detail"]


def test_a_single_language_request_is_unchanged(world: World) -> None:
    status, body = answer(world, MultiTaskRequest(lang="yo", texts=[TEXTS["yor_Latn"][0]], tasks=["topic"]))
    assert status == 200 and body["language"] == "yor_Latn"
    assert body["results"][0]["detected"] is None and body["results"][0]["error"] is None


def test_train_lid_command(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from langadapt.cli import app

    root = write_sib(tmp_path / "sib")
    args = ["train", "lid", "--data", str(root), "--base", str(tiny_xlmr_dir), "--store", str(tmp_path / "store")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["id"] == "any-lid" and summary["labels"] == sorted(TEXTS) and "confusion" not in summary
    assert "shadows the packaged default:any-lid@v1" in result.stderr
    text = CliRunner().invoke(app, [*args, "--no-publish"])
    assert text.exit_code == 0 and "any-lid (not published)" in text.output and "test accuracy" in text.output


def test_an_auto_request_failing_whole_keeps_the_error_s_status_and_headers() -> None:
    busy = ServeError(503, "language_id_unavailable", "no head", "send lang", headers={"Retry-After": "1"})
    request = LabelRequest(lang="auto", texts=["x"])
    status, body, language, headers = auto_response("ner", ("ner",), request, busy, result_item)
    assert (status, body["error"], language, headers) == (503, "language_id_unavailable", "none", {"Retry-After": "1"})
