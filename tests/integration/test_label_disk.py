"""`langadapt label` on a disk that fills up: a clear error, nothing half-written, and the same command resumes.

The output goes to a real small tmpfs (mounted by the test: root, and a kernel that lets this container mount; it
skips saying why otherwise). The first run stops when the disk is full; the tmpfs is then grown (space freed)
and the same command finishes, with every input row in the output exactly once, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langadapt.cli import app
from langadapt.models.base import resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.serve.synthetic import AdapterFactory

SENTENCES = [
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja lánàá.",
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, ó sì padà wá sílé.",
    "Ìjọba ti kede pé àwọn ilé-ìwé yóò ṣí padà.",
]
ROWS = 3000
CHUNK_ROWS = 100


@pytest.fixture(scope="module")
def store(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("label-disk") / "store")
    factory = AdapterFactory(resolve_base_model(str(tiny_xlmr_dir)), seed=4)
    for task in ("ner", "sentiment"):
        factory.publish_task_adapter(store, "yor_Latn", task)
    return store


def label(source: Path, output: Path, base: Path, store: AdapterStore) -> Any:
    args = ["label", str(source), "-o", str(output), "--task", "ner,sentiment", "--lang", "yo"]
    args += ["--base", str(base), "--store", str(store.root), "--no-defaults", "--threads", "1"]
    args += ["--chunk-rows", str(CHUNK_ROWS), "--no-progress", "--json"]
    return CliRunner().invoke(app, args)


def test_a_full_disk_stops_label_cleanly_and_the_same_command_resumes_once_space_is_freed(
    tiny_xlmr_dir: Path, store: AdapterStore, tmp_path: Path, mounts: Any
) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"id": i, "text": f"{SENTENCES[i % len(SENTENCES)]} {i}"} for i in range(ROWS)]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    disk = tmp_path / "disk"
    mounts.tmpfs(disk, "512k")  # the labelled rows take about 1.4 MB: the disk fills during labelling
    output = disk / "out.jsonl"

    full = label(source, output, tiny_xlmr_dir, store)
    print(f"\nfull disk: exit {full.exit_code}: {full.output.strip()[-600:]}")
    assert full.exit_code == 2, full.output
    assert "(no space left on the device)" in full.output and "Traceback" not in full.output
    assert "nothing half-written was left" in full.output
    assert "run the same command again" in full.output
    assert not output.exists()
    partial = disk / "out.jsonl.partial"
    left = sorted(p.name for p in partial.iterdir())
    assert not [name for name in left if name.startswith(".") or name.endswith(".tmp")], left  # no temporaries
    checkpoint = json.loads((partial / "checkpoint.json").read_text())
    committed = checkpoint["chunks"]
    assert 0 < committed < ROWS // CHUNK_ROWS
    assert f"the first {checkpoint['position']['row']} input rows are labelled" in full.output
    chunks = [name for name in left if name.startswith("chunk-")]
    assert len(chunks) == committed, left  # every chunk on disk is whole and counted
    for name in chunks:
        assert all(json.loads(line) for line in (partial / name).read_text().splitlines())

    mounts.resize(disk, "16m")  # space freed
    resumed = label(source, output, tiny_xlmr_dir, store)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_row"] == checkpoint["position"]["row"] == committed * CHUNK_ROWS
    labelled = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in labelled] == list(range(ROWS))  # every row exactly once, in order
    assert all(r["text"] == rows[r["id"]]["text"] and r["sentiment_label"] and "ner_entities" in r for r in labelled)
    assert not partial.exists()
