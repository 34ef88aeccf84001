"""Export benchmark: PyTorch eager against ONNX Runtime fused (fp32, int8) and swappable (homogeneous, mixed).

    .venv/bin/python bench/export.py                  # embedded base + XLM-R-base-shaped random model
    .venv/bin/python bench/export.py --quick          # embedded only, two shapes, one repeat (smoke run)
    .venv/bin/python bench/export.py --device cuda --precision fp16   # on a GPU machine (bench/gpu_check.sh)

Writes bench/results/export.json and export.png (or `--out`). Measured side by side in one run, per model:

- backends: `eager` (the `adapters` model, `Stack(lang, task)` active, torch), `ort-fused` (one stack fused, as
  `export_fused` makes it by default: fp32 without offline fusions on CPU, fp16 with them on CUDA),
  `ort-fused-int8` and `ort-fused-int8-ffn-float` (the two int8 recipes, CPU only; the exporter keeps the first
  that passes its parity check), `ort-swappable-homogeneous` (the swappable graph, every row
  the same stack, heads after it in torch) and `ort-swappable-mixed` (8 stacks, rows round-robin); on the embedded
  base also `ort-fused-optimized` (offline fusions on) to check the optimiser default;
- speed: batch 1, 8, 32 × sequence 32, 128; every backend in its own process, all loaded at once and run one at a
  time in interleaved rounds (so load from other jobs hits all alike, and no library's idle threads compete with
  another's inside a process); tokens/s from the median round, achieved GFLOP/s (analytic FLOPs of the encoder,
  adapters included) against a fp32 matmul measured in the same run;
- memory: each backend process's resident memory after imports and after loading, its peak while loading, and
  its peak while running every shape (VmHWM, reset after loading).

Random adapter weights (seq_bn language + seq_bn task adapters, 7-label heads): speed does not depend on values.
The int8 metric check trains a small topic adapter on SIB-200 (yor_Latn) when ../shared/data is present and
exports it through the real, parity-gated pipeline with the SIB-200 test split as labelled set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
SHAPES = [(1, 32), (1, 128), (8, 32), (8, 128), (32, 32), (32, 128)]
QUICK_SHAPES = [(1, 32), (8, 128)]
N_STACKS = 8
LABELS = 7
BACKENDS = [
    "eager",
    "ort-fused",
    "ort-fused-int8",
    "ort-fused-int8-ffn-float",
    "ort-swappable-homogeneous",
    "ort-swappable-mixed",
]
ALL_BACKENDS = [*BACKENDS, "ort-fused-optimized"]  # fixed colours in the plot
XLMR_BASE = {  # xlm-roberta-base's shape; the e5 (XLM-R) tokenizer's 250,037-piece vocabulary
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc (VmHWM: peak resident set; VmRSS: current)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------ preparation


def base_dir(model: str, work: Path) -> Path:
    """The base model directory: the embedded model, or an XLM-R-base-shaped random model built once."""
    from langadapt.models.base import resolve_base_model

    embedded = resolve_base_model("embedded").path
    if model == "embedded":
        return embedded
    target = work / "xlmr-base-random"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    log("building the XLM-R-base-shaped random model")
    config_e5 = json.loads((embedded / "config.json").read_text())
    config = XLMRobertaConfig(
        vocab_size=config_e5["vocab_size"], pad_token_id=1, bos_token_id=0, eos_token_id=2, **XLMR_BASE
    )
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(target, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(embedded / name, target / name)
    return target


def prepare(model: str, work: Path, precision: str) -> dict[str, Any]:
    """Random packs for 8 stacks, the fused graphs of stack 0 and the swappable graph; reused when present."""
    import torch
    from adapters import AutoAdapterModel

    from langadapt.export.graphs import FUSED_INPUTS, FUSED_OUTPUT, SWAPPABLE_OUTPUT, FusedModel, trace
    from langadapt.export.graphs import fused_dynamic_axes as fused_axes
    from langadapt.export.precision import convert_fp16, optimize_graph, quantize_int8
    from langadapt.models.bank import AdapterBank, AdapterWeights, BankedEncoder
    from langadapt.models.heads import Head
    from langadapt.models.kinds import get_kind

    folder = work / model
    (folder / "packs").mkdir(parents=True, exist_ok=True)
    base = base_dir(model, work)
    paths = {
        "base": str(base),
        "packs": str(folder / "packs"),
        "fused-unoptimized": str(folder / "fused-unoptimized.onnx"),
        "fused-optimized": str(folder / "fused-optimized.onnx"),
        "fused-int8": str(folder / "fused-int8.onnx"),
        "fused-int8-ffn-float": str(folder / "fused-int8-ffn-float.onnx"),
        "fused-fp16": str(folder / "fused-fp16.onnx"),
        "swappable": str(folder / "swappable.onnx"),
        "swappable-optimized": str(folder / "swappable-optimized.onnx"),
        "swappable-fp16": str(folder / "swappable-fp16.onnx"),
    }
    needed = ["fused-unoptimized", "fused-optimized", "fused-int8", "fused-int8-ffn-float", "swappable"]
    needed += ["fused-fp16", "swappable-fp16"] if precision == "fp16" else []
    if all(Path(paths[k]).is_file() for k in needed) and (folder / "packs" / f"task_{N_STACKS - 1}").is_dir():
        return paths
    if all(Path(paths[k]).is_file() for k in needed[:5]) and precision == "fp16":
        convert_fp16(Path(paths["fused-optimized"]), Path(paths["fused-fp16"]))
        convert_fp16(Path(paths["swappable-optimized"]), Path(paths["swappable-fp16"]))
        return paths
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model_ = AutoAdapterModel.from_pretrained(base).eval()
    generator = torch.Generator().manual_seed(0)
    for i in range(N_STACKS):
        for role in ("lang", "task"):
            name = f"{role}_{i}"
            model_.add_adapter(name, config=get_kind("seq_bn").build_config())
            if role == "task":
                model_.add_classification_head(name, num_labels=LABELS)
        with torch.no_grad():
            for key, param in model_.named_parameters():
                if f"lang_{i}." in key or f"task_{i}." in key:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        for role in ("lang", "task"):
            name = f"{role}_{i}"
            model_.save_adapter(str(folder / "packs" / name), name, with_head=role == "task", use_safetensors=True)
    packs = Path(paths["packs"])
    members = [AdapterWeights.from_folder(packs / "lang_0"), AdapterWeights.from_folder(packs / "task_0")]
    fused = FusedModel(model_, members, Head.from_folder(packs / "task_0")).eval()
    ids = torch.randint(5, model_.config.vocab_size, (2, 16))
    log(f"{model}: tracing the fused graph")
    t = time.perf_counter()
    trace(
        fused,
        (ids, torch.ones_like(ids)),
        Path(paths["fused-unoptimized"]),
        input_names=FUSED_INPUTS,
        output_names=[FUSED_OUTPUT],
        dynamic_axes=fused_axes("classification"),
    )
    timings["trace_fused_s"] = time.perf_counter() - t
    config = model_.config
    t = time.perf_counter()
    fused_ops = optimize_graph(
        Path(paths["fused-unoptimized"]),
        Path(paths["fused-optimized"]),
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    timings["optimize_fused_s"] = time.perf_counter() - t
    log(f"{model}: quantising")
    t = time.perf_counter()
    quantization = {
        recipe: quantize_int8(Path(paths["fused-unoptimized"]), Path(paths[name]), recipe)
        for recipe, name in (("all", "fused-int8"), ("ffn-float", "fused-int8-ffn-float"))
    }
    timings["quantize_s"] = time.perf_counter() - t
    log(f"{model}: tracing the swappable graph")
    encoder = BankedEncoder(model_).eval()
    bank = AdapterBank(encoder.layout, capacity=2)
    t = time.perf_counter()
    trace(
        encoder,
        (ids, torch.ones_like(ids), torch.tensor([0, 1]), *bank.tensors().values()),
        Path(paths["swappable"]),
        input_names=encoder.input_names,
        output_names=[SWAPPABLE_OUTPUT],
        dynamic_axes=encoder.dynamic_axes(),
    )
    timings["trace_swappable_s"] = time.perf_counter() - t
    optimize_graph(
        Path(paths["swappable"]),
        Path(paths["swappable-optimized"]),
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    if precision == "fp16":
        convert_fp16(Path(paths["fused-optimized"]), Path(paths["fused-fp16"]))
        convert_fp16(Path(paths["swappable-optimized"]), Path(paths["swappable-fp16"]))
    timings["total_s"] = time.perf_counter() - started
    sizes = {k: Path(v).stat().st_size for k, v in paths.items() if v.endswith(".onnx") and Path(v).is_file()}
    record = {"timings": timings, "fused_ops": fused_ops, "quantization": quantization, "graph_bytes": sizes}
    (folder / "prepare.json").write_text(json.dumps(record, indent=2))
    return paths


# ------------------------------------------------------------------------------------------ measurement


def flops(config: dict[str, Any], batch: int, seq: int, bottleneck: int) -> float:
    """Multiply-adds ×2 of one encoder forward: projections, FFN, attention scores and mixing, 2 bottlenecks."""
    h, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inner) + 2 * 2 * batch * seq * seq * h
    per_layer += 2 * 2 * tokens * (2 * h * bottleneck)  # language and task bottleneck: down and up
    return float(layers * per_layer)


def matmul_gflops(threads: int, device: str) -> float:
    """Best fp32 GEMM rate of this machine (torch, `threads` threads or the GPU), 2048³, the best of 5."""
    import torch

    torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    a = torch.randn(2048, 2048, device=dev)
    b = torch.randn(2048, 2048, device=dev)
    best = float("inf")
    for _ in range(6):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def _runner(backend: str, paths: dict[str, str], threads: int, device: str, precision: str) -> Any:
    """A function (input_ids, attention_mask) -> output for one backend, loaded and ready.

    Fused backends import neither torch nor the `adapters` library, as a serving process would not.
    """
    from langadapt.export.runtime import FusedRuntime, SwappableRuntime

    packs = Path(paths["packs"])
    if backend.startswith("ort-fused"):
        name = {"ort-fused": "fused-unoptimized"}.get(backend, backend.removeprefix("ort-"))
        if precision == "fp16" and backend == "ort-fused":
            name = "fused-fp16"
        runtime = FusedRuntime.from_graph(
            Path(paths[name]), [str(i) for i in range(LABELS)], "classification", device=device, threads=threads
        )
        return runtime.run
    import torch

    torch.set_num_threads(threads)
    if backend == "eager":
        from adapters import AutoAdapterModel, Stack

        model = AutoAdapterModel.from_pretrained(paths["base"]).eval()
        model.load_adapter(str(packs / "lang_0"), load_as="lang", with_head=False, use_safetensors=True)
        model.load_adapter(str(packs / "task_0"), load_as="task", with_head=True, use_safetensors=True)
        model.set_active_adapters(Stack("lang", "task"))
        model.active_head = "task"
        if device == "cuda":
            model = model.cuda().half() if precision == "fp16" else model.cuda()

        def run_eager(ids: np.ndarray, mask: np.ndarray) -> Any:
            with torch.no_grad():
                t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
                if device == "cuda":
                    t_ids, t_mask = t_ids.cuda(), t_mask.cuda()
                out = model(input_ids=t_ids, attention_mask=t_mask).logits
                return out.float().cpu().numpy()

        return run_eager
    from langadapt.models.bank import AdapterBank, AdapterWeights, BankLayout
    from langadapt.models.heads import Head

    graph = paths["swappable-fp16" if precision == "fp16" else "swappable"]
    swap = SwappableRuntime.from_graph(Path(graph), device=device, threads=threads)  # type: ignore[arg-type]
    config = json.loads((Path(paths["base"]) / "config.json").read_text())
    layout = BankLayout(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"])
    bank = AdapterBank(layout, capacity=N_STACKS + 1)
    heads = []
    for i in range(N_STACKS):
        lang, task = AdapterWeights.from_folder(packs / f"lang_{i}"), AdapterWeights.from_folder(packs / f"task_{i}")
        bank.add_stack(i, lang, None, task)
        heads.append(Head.from_folder(packs / f"task_{i}"))
    tensors = {name: t.numpy() for name, t in bank.tensors().items()}
    mixed = backend == "ort-swappable-mixed"

    torch.set_num_threads(1)  # heads are a few small products: extra threads only add hand-off waits

    def run_swappable(ids: np.ndarray, mask: np.ndarray) -> Any:
        stacks = np.arange(len(ids)) % N_STACKS if mixed else np.zeros(len(ids), dtype=np.int64)
        hidden = torch.from_numpy(swap.hidden_states(ids, mask, stacks + 1, tensors))
        logits = torch.empty(len(ids), LABELS)
        with torch.no_grad():
            for s in np.unique(stacks):  # heads per group of rows, as the serving engine applies them
                rows = torch.from_numpy(np.flatnonzero(stacks == s))
                logits[rows] = heads[s](hidden[rows])
        return logits.numpy()

    return run_swappable


def _inputs(vocab: int, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(batch * 1000 + seq).integers(5, vocab, (batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 0, 2
    return ids, np.ones_like(ids)


def serve_worker(spec: dict[str, Any]) -> None:
    """One backend alone in this process, driven over stdin: `run B T` times one call, `memory` reports memory.

    Each backend has its own process (its memory is its own, and no other library's threads compete with it
    inside the process); the parent interleaves the processes' runs so that load from elsewhere hits all alike.
    """
    baseline = rss_mb("VmRSS")
    run = _runner(spec["backend"], spec["paths"], spec["threads"], spec["device"], spec["precision"])
    loaded, load_peak = rss_mb("VmRSS"), rss_mb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: from here on, the peak while serving
    vocab = json.loads((Path(spec["paths"]["base"]) / "config.json").read_text())["vocab_size"]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            ids, mask = _inputs(vocab, int(command[1]), int(command[2]))
            t = time.perf_counter()
            run(ids, mask)
            print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
        elif command[0] == "memory":
            memory = {"after_imports": baseline, "after_load": loaded, "load_peak": load_peak}
            print(json.dumps({**memory, "run_peak": rss_mb("VmHWM")}), flush=True)
        else:
            return


class Backend:
    """The parent's handle on one serve_worker process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = spec["backend"]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "serve", "--spec", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ask(None)

    def ask(self, command: str | None) -> dict[str, Any]:
        """Send one command (None: wait for readiness) and read the one-line JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"backend {self.name} died (run it alone: --worker serve --spec ...)")
        return json.loads(line)

    def close(self) -> None:
        """Ask the process to end and wait for it."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def measure(specs: list[dict[str, Any]], shapes: list[tuple[int, int]], repeats: int, max_seconds: float) -> dict:
    """Per shape: a warm-up call on every backend, then interleaved rounds; the median and min of each."""
    backends = []
    try:
        for spec in specs:
            log(f"  loading {spec['backend']}")
            backends.append(Backend(spec))
        rows: dict[str, list[dict[str, Any]]] = {b.name: [] for b in backends}
        load: list[float] = []
        for batch, seq in shapes:
            for backend in backends:
                backend.ask(f"run {batch} {seq}")
            times: dict[str, list[float]] = {b.name: [] for b in backends}
            started = time.perf_counter()
            for round_ in range(repeats):
                if round_ >= 2 and time.perf_counter() - started > max_seconds:
                    break
                for backend in backends:
                    times[backend.name].append(backend.ask(f"run {batch} {seq}")["seconds"])
            load.append(os.getloadavg()[0])
            for name, values in times.items():
                median = float(np.median(values))
                rows[name].append(
                    {
                        "batch": batch,
                        "seq": seq,
                        "seconds": median,
                        "min_seconds": float(min(values)),
                        "rounds": len(values),
                        "tokens_per_s": batch * seq / median,
                    }
                )
            log(f"  {batch}x{seq}: " + ", ".join(f"{n} {r[-1]['tokens_per_s']:.0f}" for n, r in rows.items()))
        memory = {b.name: b.ask("memory") for b in backends}
    finally:
        for backend in backends:
            with contextlib.suppress(Exception):
                backend.close()
    return {"rows": rows, "memory": memory, "load_average_1min": load}


# ------------------------------------------------------------------------------------------ metric check


def metric_check(work: Path, device: str) -> dict[str, Any]:
    """Train a small topic adapter on SIB-200 yor_Latn, then export it fp32 and int8 through the real pipeline."""
    import torch
    from adapters import AutoAdapterModel

    from langadapt.export.errors import ParityError
    from langadapt.export.fused import export_fused
    from langadapt.export.parity import LabelledSet
    from langadapt.models.base import load_tokenizer, resolve_base_model
    from langadapt.models.kinds import get_kind
    from langadapt.models.store import AdapterStore
    from langadapt.training.readers import read_classification

    data = SHARED_DATA / "topic" / "sib200" / "yor_Latn"
    if not (data / "train.tsv").is_file():
        return {"skipped": f"no SIB-200 data at {data}"}
    info = resolve_base_model("embedded")
    store = AdapterStore(work / "metric-store")
    if "yor_Latn-topic" not in store.ids():
        log("metric check: training a topic adapter on SIB-200 yor_Latn (adapter in the top 2 layers, 4 epochs)")
        train = read_classification(data / "train.tsv")
        labels = list(train.labels)
        tokenizer = load_tokenizer(info)
        model = AutoAdapterModel.from_pretrained(info.path)
        model.add_adapter("topic", config=get_kind("seq_bn").build_config(leave_out=list(range(10))))
        model.add_classification_head("topic", num_labels=len(labels), id2label=dict(enumerate(labels)))
        model.train_adapter("topic")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        torch.manual_seed(0)
        examples = list(train.examples)
        started = time.perf_counter()
        for _ in range(4):
            order = torch.randperm(len(examples)).tolist()
            for start in range(0, len(order), 32):
                chunk = [examples[i] for i in order[start : start + 32]]
                batch = tokenizer(
                    [e.text for e in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt"
                )
                gold = torch.tensor([labels.index(e.label) for e in chunk])
                model(**batch, labels=gold).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        model.eval()
        model.save_adapter(str(work / "metric-adapter"), "topic", with_head=True, use_safetensors=True)
        store.import_adapters_folder(
            work / "metric-adapter",
            language="yor_Latn",
            task="topic",
            kind="seq_bn",
            base_model="embedded",
            base_fingerprint=info.fingerprint,
            training={"data": [str(data / "train.tsv")], "licence": "CC-BY-SA-4.0"},
            extra={"train_seconds": time.perf_counter() - started},
        )
    labelled = LabelledSet.from_file(data / "test.tsv", "topic", max_examples=None)
    result: dict[str, Any] = {"labelled": labelled.source}
    for quantize in (None, "int8"):
        label = quantize or "fp32"
        try:
            manifest = export_fused(store, None, "yor_Latn-topic", quantize=quantize, labelled=labelled)
            result[label] = manifest.metrics["parity"][label] | {"published": manifest.id}
        except ParityError as err:
            result[label] = err.figures | {"published": None, "error": err.message}
        for old in store.ids():
            if old.endswith(".onnx-" + label):
                store.remove(old)  # keep the metric store small between runs
    return result


# ------------------------------------------------------------------------------------------ report


def goals(models: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals at batch 8 × 128 (and their worst case over every shape)."""
    out = {}
    for model, result in models.items():
        speed = {
            b: {(r["batch"], r["seq"]): r["tokens_per_s"] for r in res["rows"]} for b, res in result["backends"].items()
        }

        def ratio(a: str, b: str, speed: dict = speed) -> dict[str, float] | None:
            if a not in speed or b not in speed:
                return None
            ratios = {f"{k[0]}x{k[1]}": speed[a][k] / speed[b][k] for k in speed[a] if k in speed[b]}
            return {"at_8x128": ratios.get("8x128"), "min": min(ratios.values()), "max": max(ratios.values())}

        out[model] = {
            "swappable_mixed_over_fused (goal >= 0.90)": ratio("ort-swappable-mixed", "ort-fused"),
            "ort_fused_over_eager (goal >= 1.2)": ratio("ort-fused", "eager"),
            "int8_over_fp32 (goal >= 2.2)": ratio("ort-fused-int8", "ort-fused"),
            "int8_ffn_float_over_fp32": ratio("ort-fused-int8-ffn-float", "ort-fused"),
            "swappable_homogeneous_over_fused": ratio("ort-swappable-homogeneous", "ort-fused"),
            "fused_optimized_over_default": ratio("ort-fused-optimized", "ort-fused"),
        }
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    """Tokens/s per backend and shape, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 4.2 * len(models)), squeeze=False)
    for ax, (model, result) in zip(axes[:, 0], models.items(), strict=True):
        backends = list(result["backends"])
        shapes = [f"{r['batch']}×{r['seq']}" for r in result["backends"][backends[0]]["rows"]]
        width = 0.8 / len(backends)
        palette = plt.get_cmap("tab10")
        for i, backend in enumerate(backends):
            values = [r["tokens_per_s"] for r in result["backends"][backend]["rows"]]
            color = palette(ALL_BACKENDS.index(backend) % 10)
            ax.bar(np.arange(len(shapes)) + i * width, values, width, label=backend, color=color)
        ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2, shapes)
        ax.set_ylabel("tokens / s (median round)")
        ax.set_xlabel("batch × sequence")
        peak = result["matmul_gflops"]
        gemm = f"fp32 GEMM {peak:.0f} GFLOP/s" if peak else "no GEMM reference"
        ax.set_title(f"{model}: {report['device']}, {report['precision']}, {report['threads']} threads, {gemm}")
        ax.legend(fontsize=8, ncol=3)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save(report: dict[str, Any], out: Path, device: str) -> Path:
    """Write the JSON (with the goal ratios) and the PNG; return the JSON path."""
    report["goals"] = goals(report["models"])
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if device == "cpu" else f"-{device}"
    path = out / f"export{suffix}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    plot(report, out / f"export{suffix}.png")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="embedded,xlmr-base", help="comma-separated: embedded, xlmr-base")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per shape (after one warm-up)")
    parser.add_argument("--xlmr-repeats", type=int, default=3, help="timed runs per shape for xlmr-base")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="no new round of a shape after this long (2 rounds at least)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (torch and ORT)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="fused/swappable precision")
    parser.add_argument("--work", type=Path, default=None, help="where graphs are built (reused across runs)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--no-metric", action="store_true", help="skip the SIB-200 int8 metric check")
    parser.add_argument("--quick", action="store_true", help="embedded only, 2 shapes, 1 repeat")
    args = parser.parse_args()
    if args.worker:
        serve_worker(json.loads(args.spec))
        return

    from langadapt.paths import cache_dir

    work = args.work or cache_dir() / "bench-export"
    work.mkdir(parents=True, exist_ok=True)
    models = ["embedded"] if args.quick else args.models.split(",")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "shapes": shapes,
        "models": {},
    }
    from langadapt.export.artifacts import library_versions

    report["versions"] = library_versions()
    for model in models:
        log(f"{model}: preparing graphs in {work / model}")
        paths = prepare(model, work, args.precision)
        config = json.loads((Path(paths["base"]) / "config.json").read_text())
        bottleneck = config["hidden_size"] // 16
        backends = list(BACKENDS)
        if args.device == "cuda":
            backends = [b for b in backends if "int8" not in b]  # dynamic int8 kernels are CPU kernels
            import torch

            if not torch.cuda.is_available():  # a CPU-only torch build: compare ORT on CUDA with itself
                log("torch has no CUDA here: no eager run and no GEMM peak on the GPU")
                backends.remove("eager")
        elif model == "embedded":
            backends.insert(2, "ort-fused-optimized")
        peak = matmul_gflops(args.threads, args.device) if args.device == "cpu" or "eager" in backends else None
        repeats = 1 if args.quick else (args.xlmr_repeats if model == "xlmr-base" else args.repeats)
        precisions = {b: "fp32" if args.device == "cpu" else args.precision for b in backends}
        result: dict[str, Any] = {"config": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}}
        result["matmul_gflops"] = peak
        common = {"paths": paths, "shapes": shapes, "threads": args.threads, "device": args.device}
        log(f"{model}: {len(backends)} backends, one process each, interleaved rounds (up to {repeats} per shape)")
        specs = [{**common, "backend": b, "precision": precisions[b]} for b in backends]
        measured = measure(specs, shapes, repeats, args.max_seconds)
        result["load_average_1min"] = measured["load_average_1min"]
        result["backends"] = {}
        for backend in backends:
            rows = measured["rows"][backend]
            for row in rows:
                row["gflops"] = flops(config, row["batch"], row["seq"], bottleneck) / row["seconds"] / 1e9
                row["share_of_matmul_peak"] = row["gflops"] / peak if peak else None
            result["backends"][backend] = {"rows": rows, "memory_mb": measured["memory"][backend]}
        prepared = work / model / "prepare.json"
        if prepared.is_file():
            result["prepare"] = json.loads(prepared.read_text())
        report["models"][model] = result
        save(report, args.out, args.device)  # after every model, so a late failure loses nothing measured
    if not args.no_metric and "embedded" in models:
        try:
            report["metric_check"] = metric_check(work, args.device)
        except Exception as err:  # the speed figures stand without it; say what failed
            report["metric_check"] = {"error": f"{type(err).__name__}: {err}"}
    report["seconds"] = time.perf_counter() - started
    path = save(report, args.out, args.device)
    log(f"done in {report['seconds']:.0f}s: {path}")
    print(json.dumps(report["goals"], indent=2))


if __name__ == "__main__":
    main()
