"""`langadapt label --ray` on a local Ray (2 CPUs): the same output as the local run, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from langadapt.label.job import LabelJob
from langadapt.label.options import LabelSettings
from langadapt.models.base import resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.serve.synthetic import AdapterFactory

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'langadapt[ray]'")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own deprecated settings

TEXTS = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Shugaban kasa ya ziyarci Legas ranar Litinin.",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "Yaran sun tafi makaranta a Kano jiya.",
]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_data_gives_the_local_output_byte_for_byte(tiny_xlmr_dir: Path, tmp_path: Path, local_ray: None) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=4)
    yo = factory.publish_language_adapter(store, "yor_Latn")
    factory.publish_task_adapter(store, "yor_Latn", "ner", language_adapter=yo, max_length=24, stride=6)
    factory.publish_task_adapter(store, "yor_Latn", "sentiment", language_adapter=yo)
    factory.publish_task_adapter(store, "hau_Latn", "sentiment")
    source = tmp_path / "in.jsonl"
    with source.open("w", encoding="utf-8") as f:
        for i in range(45):
            lang = ("yo", "ha", "yor", "hau")[i % 4] if i != 20 else "xx-nope"
            f.write(json.dumps({"id": i, "text": TEXTS[i % 4] if i != 7 else "", "lang": lang}, ensure_ascii=False))
            f.write("\n" if i != 30 else "\n\n{broken\n")
    local = LabelSettings(
        input=source,
        output=tmp_path / "local.jsonl",
        tasks=("sentiment", "ner"),
        lang_column="lang",
        base=str(tiny_xlmr_dir),
        store=str(store.root),
        defaults=None,
        threads=1,
        chunk_rows=6,
        progress=False,
    )
    on_ray = local.model_copy(update={"output": tmp_path / "ray.jsonl", "ray": True, "ray_actors": 2})
    expected = LabelJob(local, notify=lambda _: None).run()
    summary = LabelJob(on_ray, notify=lambda _: None).run()
    assert summary["runner"] == "ray" and summary["rows"] == expected["rows"] == 46
    assert summary["ray_split_chunks"] == 0  # every chunk labelled whole, in one actor call, as locally
    for key in ("labelled", "errors", "errors_by_kind", "blank_lines", "chunks", "adapters"):
        assert summary[key] == expected[key], key
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    errors = (tmp_path / "ray.jsonl.errors.jsonl").read_text()
    assert errors == (tmp_path / "local.jsonl.errors.jsonl").read_text()
    rows = {json.loads(line)["row"]: json.loads(line)["kind"] for line in errors.splitlines()}
    assert (rows[8], rows[21], rows[32]) == ("empty_text", "unknown_language", "malformed")
    assert expected["errors_by_kind"]["no_adapter"] == 21  # hau has no NER adapter: its rows say so
