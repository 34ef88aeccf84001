"""Batch labelling benchmark: `langadapt label` against the raw engine, memory as the corpus grows, Ray vs local.

    .venv/bin/python bench/label.py             # writes bench/results/label.{json,png}
    .venv/bin/python bench/label.py --quick     # small sizes (smoke run)

Random adapters (seq_bn language adapter for yor_Latn, seq_bn task adapters with heads for yor_Latn and hau_Latn,
as `langadapt train task` saves them): speed and memory do not depend on what an adapter learned. Measured, side
by side in one run, each in a fresh process:

1. Throughput, embedded base: the same corpus (JSONL, Yoruba and Hausa rows alternating, `--lang-column`, NER and
   sentiment) labelled by `LabelJob` (read, label, commit chunks with fsync, assemble the output) and by the raw
   engine on the same texts in the same chunks (`Engine.run`, one job per task and language per chunk, results
   discarded), alternating A/B rounds in one process so load from other jobs hits both alike. Goal: label / engine
   rows per second >= 0.9. Model loading is outside both timings.
2. Memory: peak resident memory (VmHWM) of a process that labels N rows, N = 10k and 200k, with a tiny random
   XLM-R-shaped base (2 layers, hidden 64, the e5 vocabulary) and short texts so 200k rows run in about a minute:
   the job streams, so the goal is a flat peak (200k / 10k close to 1).
3. Ray: the throughput job on Ray Data (a local Ray, 2 actors of one thread) against the local run (one thread),
   rows per second of the labelling itself and wall seconds including Ray's start and the actors' model loading.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
YO = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, ó sì padà wá sílé ní ìrọ̀lẹ́.",
    "Adébáyọ̀ Ògúndélé ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní ìlú Abuja.",
    "Ìjọba ti kéde pé àwọn ilé-ìwé yóò ṣí padà ní oṣù tó ń bọ̀.",
    "Ààrẹ Buhari ló lè yí ìpinnu náà padà, gẹ́gẹ́ bí Mínísítà ṣe sọ.",
]
HA = [
    "Shugaban kasa ya ziyarci jihar Kano ranar Litinin domin ganawa da gwamnoni.",
    "Yaran sun tafi makaranta a Kano jiya da safe.",
    "Gwamnatin tarayya ta ce za a bude makarantu a wata mai zuwa.",
    "Ruwan sama ya lalata gidaje da dama a garin Maiduguri.",
]
WORDS = ["ọmọ", "ilé", "ìwé", "Èkó", "lánàá", "kasa", "Legas", "ranar", "jiya", "Kano", "ìjọba", "Abuja", "gida"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------ setup


def tiny_base(work: Path) -> Path:
    """A tiny random XLM-R-shaped masked LM with the embedded model's tokenizer (built once)."""
    target = work / "tiny-xlmr"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from langadapt.models.base import resolve_base_model

    embedded = resolve_base_model("embedded").path
    vocab = json.loads((embedded / "config.json").read_text())["vocab_size"]
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    XLMRobertaForMaskedLM(config).save_pretrained(target, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(embedded / name, target / name)
    return target


def build_store(base: str, root: Path) -> str:
    """Random yor_Latn (language + NER + sentiment) and hau_Latn (NER + sentiment) adapters on `base`."""
    from langadapt.models.base import resolve_base_model
    from langadapt.models.store import AdapterStore
    from langadapt.serve.synthetic import AdapterFactory

    store = AdapterStore(root)
    factory = AdapterFactory(resolve_base_model(base), seed=0)
    yo = factory.publish_language_adapter(store, "yor_Latn")
    for task in ("ner", "sentiment"):
        factory.publish_task_adapter(store, "yor_Latn", task, language_adapter=yo)
        factory.publish_task_adapter(store, "hau_Latn", task)
    return str(store.root)


def write_corpus(path: Path, rows: int, *, short: bool) -> Path:
    """`rows` JSONL rows, Yoruba and Hausa alternating; short ones are five random words."""
    chances = random.Random(0)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            lang = "yo" if i % 2 == 0 else "ha"
            if short:
                text = " ".join(chances.choice(WORDS) for _ in range(5))
            else:
                text = f"{(YO if lang == 'yo' else HA)[(i // 2) % 4]} {i}"
            f.write(json.dumps({"id": i, "text": text, "lang": lang}, ensure_ascii=False) + "\n")
    return path


def options(spec: dict[str, Any], source: Path, output: Path, **overrides: Any) -> Any:
    from langadapt.label.options import LabelSettings

    fields: dict[str, Any] = {
        "tasks": tuple(spec["tasks"]),
        "lang_column": "lang",
        "base": spec["base"],
        "store": spec["store"],
        "defaults": None,
        "threads": spec["threads"],
        "chunk_rows": spec["chunk_rows"],
        "progress": False,
        "restart": True,
    }
    fields.update(overrides)
    return LabelSettings(input=source, output=output, **fields)


# --------------------------------------------------------------------------- measured in subprocesses


def measure_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    """Label job vs raw engine on the same corpus, alternating rounds; rows per second of each round."""
    from langadapt.inference.engine import Engine, Job
    from langadapt.inference.settings import InferenceSettings
    from langadapt.label.job import LabelJob

    source = Path(spec["corpus"])
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    engine = Engine(InferenceSettings(base=spec["base"], store=spec["store"], defaults=None, threads=spec["threads"]))

    def raw_engine() -> float:
        started = time.perf_counter()
        for at in range(0, len(rows), spec["chunk_rows"]):
            chunk = rows[at : at + spec["chunk_rows"]]
            jobs = []
            for task in spec["tasks"]:
                for lang in ("yo", "ha"):
                    texts = [r["text"] for r in chunk if r["lang"] == lang]
                    jobs.append(Job(engine.resolve(task, lang), texts))
            outcomes = engine.run(jobs)
            assert all(isinstance(o, list) for o in outcomes)
        return len(rows) / (time.perf_counter() - started)

    def label_job() -> float:
        out = Path(spec["work"]) / "throughput.jsonl"
        summary = LabelJob(options(spec, source, out), notify=lambda _: None).run()
        assert summary["rows"] == len(rows) and summary["errors"] == 0
        return float(summary["rows_per_s"])

    engine.run([Job(engine.resolve(t, lang), ["warm up"]) for t in spec["tasks"] for lang in ("yo", "ha")])
    rounds = []
    for _ in range(spec["rounds"]):
        engine_rps = raw_engine()
        label_rps = label_job()
        rounds.append({"engine_rows_per_s": engine_rps, "label_rows_per_s": label_rps, "ratio": label_rps / engine_rps})
        log(f"  round: engine {engine_rps:.1f} rows/s, label {label_rps:.1f} rows/s, {label_rps / engine_rps:.3f}×")
    return {"rows": len(rows), "rounds": rounds}


def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a process that labels the corpus (the engine loaded, then the whole job)."""
    from langadapt.label.job import LabelJob

    source = Path(spec["corpus"])
    out = Path(spec["work"]) / f"memory-{spec['rows']}.jsonl"
    started = time.perf_counter()
    summary = LabelJob(options(spec, source, out), notify=lambda _: None).run()
    return {
        "rows": summary["rows"],
        "input_bytes": source.stat().st_size,
        "output_bytes": out.stat().st_size,
        "peak_rss_mb": peak_rss_mb(),
        "rows_per_s": summary["rows_per_s"],
        "seconds": time.perf_counter() - started,
    }


def measure_ray(spec: dict[str, Any]) -> dict[str, Any]:
    """The same job locally and on a local Ray Data (2 actors): rows/s of the labelling, and wall seconds."""
    import ray

    from langadapt.label.job import LabelJob

    source = Path(spec["corpus"])
    out: dict[str, Any] = {}
    started = time.perf_counter()
    local = LabelJob(options(spec, source, Path(spec["work"]) / "local.jsonl"), notify=lambda _: None).run()
    out["local"] = {"rows_per_s": local["rows_per_s"], "wall_seconds": time.perf_counter() - started}
    started = time.perf_counter()
    ray.init(num_cpus=spec["ray_cpus"], include_dashboard=False, log_to_driver=False)
    ray_started = time.perf_counter() - started
    on_ray = options(spec, source, Path(spec["work"]) / "ray.jsonl", ray=True, ray_actors=spec["ray_actors"])
    summary = LabelJob(on_ray, notify=lambda _: None).run()
    out["ray"] = {
        "rows_per_s": summary["rows_per_s"],
        "wall_seconds": time.perf_counter() - started,
        "ray_init_seconds": ray_started,
        "actors": spec["ray_actors"],
        "cpus": spec["ray_cpus"],
    }
    ray.shutdown()
    same = (Path(spec["work"]) / "ray.jsonl").read_bytes() == (Path(spec["work"]) / "local.jsonl").read_bytes()
    out["identical_output"] = same
    return out


CHILDREN = {"throughput": measure_throughput, "memory": measure_memory, "ray": measure_ray}


def run_child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh process and read its JSON (the last stdout line)."""
    done = subprocess.run(
        [sys.executable, __file__, f"_{kind}", "--spec", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if line.startswith("[")))
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ report


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput ratio per round, peak memory per corpus size, Ray vs local."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rounds = results["throughput"]["rounds"]
    ax = axes[0]
    x = range(1, len(rounds) + 1)
    ax.bar([i - 0.2 for i in x], [r["engine_rows_per_s"] for r in rounds], 0.4, label="raw engine (Engine.run)")
    ax.bar([i + 0.2 for i in x], [r["label_rows_per_s"] for r in rounds], 0.4, label="langadapt label")
    for i, r in zip(x, rounds, strict=True):
        ax.annotate(f"{r['ratio']:.2f}×", (i + 0.2, r["label_rows_per_s"]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), [f"round {i}" for i in x])
    ax.set_ylabel("rows / s (NER + sentiment)")
    ax.set_title(f"Throughput, embedded base (goal ≥ 0.9×), {results['throughput']['rows']} rows")
    ax.legend(fontsize=8, loc="lower right")

    memory = results["memory"]
    ax = axes[1]
    sizes = [m["rows"] for m in memory]
    ax.plot(sizes, [m["peak_rss_mb"] for m in memory], "o-", label="peak RSS of the labelling process")
    ax.plot(sizes, [m["input_bytes"] / 2**20 for m in memory], "s:", c="gray", label="input file size")
    ax.set_xscale("log")
    ax.set_xlabel("rows in the corpus")
    ax.set_ylabel("MiB")
    ax.set_title("Memory (tiny base, short texts): flat")
    ax.set_ylim(0, max(m["peak_rss_mb"] for m in memory) * 1.3)
    ax.legend(fontsize=8)

    ray = results["ray"]
    ax = axes[2]
    names = ["local (1 thread)", f"Ray Data ({ray['ray']['actors']} actors)"]
    ax.bar(names, [ray["local"]["rows_per_s"], ray["ray"]["rows_per_s"]], color=["tab:blue", "tab:orange"])
    for i, key in enumerate(("local", "ray")):
        ax.annotate(f"{ray[key]['wall_seconds']:.0f} s wall", (i, ray[key]["rows_per_s"]), ha="center", va="bottom")
    ax.set_ylabel("rows / s of the labelling")
    ax.set_title(f"Ray vs local, {results['config']['ray_rows']} rows (identical output: {ray['identical_output']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", *(f"_{k}" for k in CHILDREN)])
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--base", default="embedded", help="base model of the throughput and Ray measurements")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the local job and each Ray actor)")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the throughput corpus")
    parser.add_argument("--rounds", type=int, default=2, help="alternating engine / label rounds")
    parser.add_argument("--chunk-rows", type=int, default=250)
    parser.add_argument("--memory-sizes", default="10000,200000")
    parser.add_argument("--ray-rows", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    if args.mode != "run":
        print(json.dumps(CHILDREN[args.mode[1:]](json.loads(args.spec))))
        return 0
    if args.quick:
        args.rows, args.rounds, args.memory_sizes, args.ray_rows = 100, 1, "1000,5000", 60

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="langadapt-bench-label-") as folder:
        work = Path(folder)
        log(f"publishing random adapters on {args.base} and on a tiny base")
        store = build_store(args.base, work / "store")
        tiny = str(tiny_base(work))
        tiny_store = build_store(tiny, work / "tiny-store")
        common = {"base": args.base, "store": store, "threads": args.threads, "chunk_rows": args.chunk_rows}
        common |= {"tasks": ["ner", "sentiment"], "work": str(work)}

        corpus = write_corpus(work / "corpus.jsonl", args.rows, short=False)
        log(f"throughput: {args.rows} rows, {args.rounds} rounds of engine then label")
        throughput = run_child("throughput", {**common, "corpus": str(corpus), "rounds": args.rounds})

        memory = []
        for size in (int(s) for s in args.memory_sizes.split(",")):
            corpus = write_corpus(work / f"short-{size}.jsonl", size, short=True)
            spec = {**common, "base": tiny, "store": tiny_store, "tasks": ["sentiment"], "chunk_rows": 1000}
            row = run_child("memory", {**spec, "corpus": str(corpus), "rows": size})
            log(f"memory: {size} rows, peak RSS {row['peak_rss_mb']:.0f} MiB, {row['rows_per_s']:.0f} rows/s")
            memory.append(row)
            (work / f"memory-{size}.jsonl").unlink(missing_ok=True)

        corpus = write_corpus(work / "ray-corpus.jsonl", args.ray_rows, short=False)
        spec = {**common, "corpus": str(corpus), "ray_actors": 2, "ray_cpus": os.cpu_count() or 2}
        log(f"ray: {args.ray_rows} rows, local then Ray Data")
        ray = run_child("ray", {**spec, "chunk_rows": max(1, args.ray_rows // 8)})
        log(f"ray: local {ray['local']['rows_per_s']:.1f} rows/s, ray {ray['ray']['rows_per_s']:.1f} rows/s")

    ratios = [r["ratio"] for r in throughput["rounds"]]
    results = {
        "config": {
            "base": args.base,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1min": os.getloadavg()[0],
            "rows": args.rows,
            "chunk_rows": args.chunk_rows,
            "memory_base": "tiny random XLM-R (2 layers, hidden 64, e5 vocabulary), sentiment only, 5-word texts",
            "ray_rows": args.ray_rows,
        },
        "throughput": throughput,
        "memory": memory,
        "ray": ray,
        "goals": {
            "label_over_engine": sum(ratios) / len(ratios),
            "label_over_engine_goal": 0.9,
            "memory_largest_over_smallest": memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"],
            "ray_over_local": ray["ray"]["rows_per_s"] / ray["local"]["rows_per_s"],
        },
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "label.png")
    log(f"done in {results['seconds']:.0f} s: {args.out / 'label.json'}")
    print(json.dumps(results["goals"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
