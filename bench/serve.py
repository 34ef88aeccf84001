"""Serving benchmark: the HTTP server against the raw engine, memory per loaded stack, hot loading under load.

    .venv/bin/python bench/serve.py                 # embedded base, writes bench/results/serve.{json,png}
    .venv/bin/python bench/serve.py --quick         # fewer requests, stacks and hot loads

Random adapters (seq_bn, as `langadapt train task` saves them) on the chosen base: speed and memory do not
depend on what an adapter learned. Measured, side by side in one run:

1. Throughput: the same NER requests (two texts each, five languages) sent by N concurrent clients over
   loopback to `langadapt serve` (one worker, the CPU's threads) against `Engine.run` in this machine's best
   batching (`--max-batch-size` requests per call), in requests per second; latency p50/p99 per N.
2. Memory: resident memory of one engine process with 1, 10, 50, 100 language+task stacks active, against
   that process with the base alone plus the bytes of the adapter files those stacks use.
3. Hot loading: while clients send requests, a new version of the stack they use is published K times; the
   time from the publish's commit (the store's GENERATION file mtime) until the worker has the new version
   live (its own wall-clock `last_swap.installed_at`), and until the first response that carries it; how
   long `store.publish` itself took (copies, hashes, fsyncs); and every failed request meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ADMIN_KEY = "bench-serve-admin-key-0123456789"  # the server's configured admin key (admin routes need one)
TEXTS = {
    "yor_Latn": "Adébáyọ̀ Ògúndélé ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní ìlú Abuja, ó sì padà sí Èkó lánàá pẹ̀lú ìdílé rẹ̀.",
    "hau_Latn": "Shugaban kasa Bola Tinubu ya ziyarci jihar Kano ranar Litinin domin ganawa da gwamnonin arewa.",
    "swh_Latn": "Rais wa Kenya alizungumza na waandishi wa habari jijini Nairobi kuhusu uchumi na elimu ya watoto.",
    "ibo_Latn": "Chinedu Okafor gara ahịa na Enugu ụnyaahụ iji zụta akwụkwọ maka ụmụ ya na-aga ụlọ akwụkwọ.",
    "kin_Latn": "Perezida Kagame yasuye abaturage b'i Kigali ejo, baganira ku iterambere ry'ubuhinzi n'uburezi.",
}


# ------------------------------------------------------------------------------------------ setup


def build_store(base: str, root: Path, stacks: int, log: Any) -> dict[str, Any]:
    """Publish random language + task adapters for enough languages to make `stacks` stacks (3 tasks each)."""
    from langadapt.models.base import resolve_base_model
    from langadapt.models.language import FLORES200_CODES
    from langadapt.models.store import AdapterStore
    from langadapt.serve.synthetic import AdapterFactory

    info = resolve_base_model(base)
    store = AdapterStore(root / "store")
    factory = AdapterFactory(info, seed=0)
    languages = list(TEXTS) + [c for c in FLORES200_CODES if c not in TEXTS]
    needed = max(len(TEXTS), -(-stacks // 3))  # the five request languages at least
    started = time.perf_counter()
    sizes: dict[str, int] = {}
    for language in languages[:needed]:
        lang = factory.publish_language_adapter(store, language)
        sizes[lang.id] = _folder_bytes(store.path(lang.id))
        for task in ("ner", "sentiment", "topic"):
            m = factory.publish_task_adapter(store, language, task, language_adapter=lang)
            sizes[m.id] = _folder_bytes(store.path(m.id))
    log(f"published {len(sizes)} adapters for {needed} languages in {time.perf_counter() - started:.0f} s")
    return {"store": str(store.root), "languages": languages[:needed], "sizes": sizes, "fingerprint": info.fingerprint}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors")


def requests_for(count: int) -> list[tuple[str, list[str]]]:
    """`count` NER requests of two texts each, cycling through the five languages."""
    languages = list(TEXTS)
    out = []
    for i in range(count):
        language = languages[i % len(languages)]
        other = TEXTS[languages[(i + 1) % len(languages)]]
        out.append((language, [TEXTS[language], f"{TEXTS[language]} {other}"]))
    return out


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# --------------------------------------------------------------------------- measured in subprocesses


def measure_memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS with the base alone, then with more and more stacks active (language + task adapters)."""
    import gc

    from langadapt.inference.engine import Engine
    from langadapt.inference.settings import InferenceSettings

    setup = json.loads(Path(args.setup).read_text())
    engine = Engine(
        InferenceSettings(
            base=args.base, store=setup["store"], defaults=None, threads=args.threads, cache_mb=1 << 20, max_rows=16
        )
    )
    engine.label("ner", "yor_Latn", ["warm up"])  # allocator and kernels warm, one stack in
    engine.unload("yor_Latn-ner")
    engine.unload("yor_Latn-mlm-seq_bn")
    gc.collect()
    base_rss = rss_bytes()
    pairs = [(task, language) for language in setup["languages"] for task in ("ner", "sentiment", "topic")]
    rows = []
    loaded = 0
    for count in sorted(int(c) for c in args.counts.split(",")):
        for task, language in pairs[loaded:count]:
            route = engine.resolve(task, language)
            engine.cache.activate(route.key)
        loaded = count
        gc.collect()
        used = {ref.id for key in engine.cache.active() for ref in key.refs}
        adapter_bytes = sum(setup["sizes"][i] for i in used)
        rss = rss_bytes()
        rows.append(
            {
                "stacks": count,
                "rss_bytes": rss,
                "adapter_file_bytes": adapter_bytes,
                "expected_bytes": base_rss + adapter_bytes,
                "ratio": rss / (base_rss + adapter_bytes),
                "cache_bytes": engine.cache.nbytes,
                "bank_bytes": engine.cache.bank.nbytes,
            }
        )
    return {"base_rss_bytes": base_rss, "base_weight_bytes": engine.backend.nbytes, "rows": rows}


def measure_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Requests per second of `Engine.run` on the benchmark requests, one request at a time and batched."""
    from langadapt.inference.engine import Engine, Job
    from langadapt.inference.settings import InferenceSettings

    setup = json.loads(Path(args.setup).read_text())
    engine = Engine(InferenceSettings(base=args.base, store=setup["store"], defaults=None, threads=args.threads))
    requests = requests_for(args.requests)
    jobs = [Job(engine.resolve("ner", language), texts) for language, texts in requests]
    engine.run(jobs[:8])  # warm-up
    out = {}
    for batch in (1, args.max_batch_size):
        started = time.perf_counter()
        for i in range(0, len(jobs), batch):
            outcomes = engine.run(jobs[i : i + batch])
            assert all(isinstance(o, list) for o in outcomes)
        seconds = time.perf_counter() - started
        out[f"batch_{batch}"] = {"requests": len(jobs), "seconds": seconds, "rps": len(jobs) / seconds}
    return out


def run_child(kind: str, args: argparse.Namespace, setup: Path) -> dict[str, Any]:
    """Run one measurement in a fresh process (nothing else loaded) and read its JSON."""
    command = [
        sys.executable,
        __file__,
        f"_{kind}",
        "--setup",
        str(setup),
        "--base",
        args.base,
        "--threads",
        str(args.threads),
        "--requests",
        str(args.requests),
        "--max-batch-size",
        str(args.max_batch_size),
        "--counts",
        args.counts,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def running_server(args: argparse.Namespace, setup: dict[str, Any], tmp: Path) -> Iterator[str]:
    """`langadapt serve` for NER only, one worker; stopped (its whole session) on exit."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "langadapt.serve",
        *("--base", args.base, "--store", setup["store"], "--no-defaults", "--tasks", "ner"),
        *("--port", str(port), "--threads", str(args.threads), "--max-batch-size", str(args.max_batch_size)),
        *("--batch-timeout", str(args.batch_timeout), "--max-queue", "1024", "--preload", "5"),
        *("--runtime-dir", str(tmp / "runtime"), "--log-level", "warning"),
    ]
    env = {**os.environ, "LANGADAPT_ADMIN_KEYS": ADMIN_KEY}  # the admin routes always need a key (issue 12)
    with serving("ner", command, env, port, tmp / "server.log") as (url, _, _):
        yield url


@contextlib.contextmanager
def serving(
    name: str, command: list[str], env: dict[str, str], port: int, server_log: Path
) -> Iterator[tuple[str, int, float]]:
    """Start a server in its own session, wait for its /ready; stop the whole session on exit.

    Yields (url, pid, seconds from start to ready).
    """
    import httpx

    with server_log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} server exited:\n{server_log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{name} server not ready in 600 s")
            time.sleep(0.5)
        ready = time.monotonic() - started
        log(f"{name} server ready in {ready:.1f} s on port {port}")
        yield url, process.pid, ready
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def load(url: str, requests: list[tuple[str, list[str]]], clients: int) -> dict[str, Any]:
    """Send every request once, from `clients` threads with one keep-alive connection each."""
    import httpx

    latencies: list[float] = []
    failures: list[int] = []
    cursor = iter(range(len(requests)))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                language, texts = requests[i]
                t0 = time.perf_counter()
                response = client.post("/v1/ner", json={"lang": language, "texts": texts})
                elapsed = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    before = _engine_totals(url)
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    after = _engine_totals(url)
    batches = after["count"] - before["count"]
    return {
        "engine_seconds_in_server": after["sum"] - before["sum"],
        "batches": batches,
        "requests_per_batch": (after["requests"] - before["requests"]) / batches if batches else None,
        "clients": clients,
        "requests": len(requests),
        "failed": len(failures),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def hot_load(url: str, args: argparse.Namespace, setup: dict[str, Any], log: Any) -> dict[str, Any]:
    """Publish new versions of `yor_Latn-ner` while clients send requests; visibility latency and failures."""
    import httpx

    from langadapt.models.base import resolve_base_model
    from langadapt.models.store import AdapterStore
    from langadapt.serve.settings import ServerSettings
    from langadapt.serve.synthetic import AdapterFactory

    store = AdapterStore(setup["store"])
    factory = AdapterFactory(resolve_base_model(args.base), seed=99)
    language_adapter = store.get("yor_Latn-mlm-seq_bn")
    stop = threading.Event()
    seen: list[tuple[float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def traffic(texts: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/ner", json={"lang": "yo", "texts": texts})
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                version = response.json()["results"][0]["stack"]["task_adapter"]["version"]
                with lock:
                    seen.append((time.time(), version))

    probes = [threading.Thread(target=traffic, args=([TEXTS["yor_Latn"][:40]],)) for _ in range(2)]
    background = [threading.Thread(target=traffic, args=([TEXTS["yor_Latn"]] * 2,)) for _ in range(2)]
    for t in probes + background:
        t.start()
    latencies: list[float] = []
    swaps: list[float] = []
    publish_seconds: list[float] = []
    misses: list[str] = []
    requests_before = 0
    generation_file = store.root / "GENERATION"
    try:
        time.sleep(1.0)
        for _ in range(args.hot_loads):
            with tempfile.TemporaryDirectory() as folder:  # built outside the timed section
                factory.save_task_adapter("yor_Latn-ner", "ner", Path(folder))
                manifest = store.get("yor_Latn-ner").model_dump(exclude={"version", "files", "created"})
                manifest["extra"]["language_adapter"] = {"id": language_adapter.id, "version": language_adapter.version}
                started = time.time()
                published = store.publish(folder, manifest)
                publish_seconds.append(time.time() - started)
            # The version is published when the store bumps its generation (the file's mtime): from then on.
            committed = generation_file.stat().st_mtime
            swap = _wait_for_swap(url, store.generation(), published.version)
            if swap is None:
                misses.append(f"v{published.version} not live within 10 s")
            else:
                swaps.append(swap["installed_at"] - committed)
            deadline = time.time() + 10
            while time.time() < deadline:
                with lock:
                    hit = next((t for t, v in seen[requests_before:] if v == published.version), None)
                if hit is not None:
                    latencies.append(hit - committed)
                    break
                time.sleep(0.002)
            else:
                misses.append(f"v{published.version} not served within 10 s")
            with lock:
                requests_before = len(seen)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in probes + background:
            t.join(timeout=60)
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    load_seconds = _histogram_mean(metrics, "langadapt_adapter_load_seconds")
    log(f"hot loads: {len(swaps)} of {args.hot_loads} live, {len(failures)} failed requests, misses {misses}")
    return {
        "publishes": args.hot_loads,
        "live": len(swaps),
        "visible": len(latencies),
        "misses": misses,
        "requests_during": len(seen),
        "failed_requests": len(failures),
        "failures": failures[:5],
        "publish_p50_ms": float(np.percentile(publish_seconds, 50) * 1000),
        "swap_p50_ms": float(np.percentile(swaps, 50) * 1000) if swaps else None,
        "swap_p99_ms": float(np.percentile(swaps, 99) * 1000) if swaps else None,
        "swap_max_ms": float(max(swaps) * 1000) if swaps else None,
        "swap_ms": [round(x * 1000, 2) for x in swaps],
        "visibility_p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies else None,
        "visibility_p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else None,
        "visibility_max_ms": float(max(latencies) * 1000) if latencies else None,
        "visibility_ms": [round(x * 1000, 2) for x in latencies],
        "adapter_load_mean_ms": load_seconds * 1000 if load_seconds is not None else None,
        "watch_interval_ms": ServerSettings().watch_interval * 1000,  # the server's default: not passed
    }


def _wait_for_swap(url: str, generation: int, version: int) -> dict[str, Any] | None:
    """The ner worker's `last_swap` once it has installed `generation` with `version` live, or None after 10 s."""
    import httpx

    deadline = time.monotonic() + 10
    with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": ADMIN_KEY}) as client:
        while time.monotonic() < deadline:
            for worker in client.get("/v1/adapters").json()["workers"]:
                swap = worker.get("last_swap") if isinstance(worker, dict) else None
                live = any(a["task_adapter"]["version"] == version and not a["retired"] for a in worker["active"])
                if swap and swap["generation"] >= generation and live:
                    return swap
            time.sleep(0.01)
    return None


def _engine_totals(url: str) -> dict[str, float]:
    """The server's cumulative engine seconds, batches and batched requests (from /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"sum": 0.0, "count": 0.0, "requests": 0.0}
    names = {
        "langadapt_batch_seconds_sum": "sum",
        "langadapt_batch_seconds_count": "count",
        "langadapt_batch_requests_sum": "requests",
    }
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in names:
                totals[names[sample.name]] += sample.value
    return totals


def _histogram_mean(text: str, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_sum":
                total += sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
    return total / count if count else None


# ------------------------------------------------------------------------------------------ report


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and latency per concurrency, memory ratio per stack count, hot-load visibility."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    server = results["server"]
    clients = [r["clients"] for r in server]
    ax = axes[0]
    ax.plot(clients, [r["rps"] for r in server], "o-", label="server (HTTP, loopback)")
    ax.axhline(
        results["engine"][f"batch_{results['config']['max_batch_size']}"]["rps"],
        ls="--",
        c="k",
        label="raw engine, batched",
    )
    ax.axhline(results["engine"]["batch_1"]["rps"], ls=":", c="gray", label="raw engine, one request per call")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests / s (2 texts each)")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)
    twin = ax.twinx()
    twin.plot(clients, [r["p99_ms"] for r in server], "s:", c="tab:red", alpha=0.6)
    twin.set_ylabel("p99 latency (ms)", color="tab:red")

    rows = results["memory"]["rows"]
    ax = axes[1]
    ax.plot([r["stacks"] for r in rows], [r["ratio"] for r in rows], "o-")
    ax.axhline(1.3, ls="--", c="tab:red", label="goal 1.3×")
    ax.set_xlabel("stacks active (language + task adapter)")
    ax.set_ylabel("RSS / (base RSS + adapter files)")
    ax.set_title("Memory")
    ax.set_ylim(0.9, max(1.4, max(r["ratio"] for r in rows) + 0.05))
    ax.legend(fontsize=8)

    hot = results["hot_load"]
    ax = axes[2]
    ax.hist([hot["swap_ms"], hot["visibility_ms"]], bins=20, label=["live in the worker", "first response on it"])
    ax.axvline(100, ls="--", c="tab:red", label="goal p99 100 ms")
    ax.set_xlabel("ms after the new version was committed to the store")
    ax.set_ylabel("publishes")
    ax.set_title(f"Hot loading ({hot['failed_requests']} failed of {hot['requests_during']} requests)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    from langadapt.serve.settings import ServerSettings

    server = ServerSettings()  # the defaults of `langadapt serve`
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "_memory", "_engine"])
    parser.add_argument("--base", default="embedded")
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, engine and server alike")
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--max-batch-size", type=int, default=server.max_batch_size)
    parser.add_argument("--batch-timeout", type=float, default=server.batch_timeout)
    parser.add_argument("--counts", default="1,10,50,100")
    parser.add_argument("--hot-loads", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="fewer requests, stacks and hot loads")
    args = parser.parse_args(argv)
    if args.mode == "_memory":
        print(json.dumps(measure_memory(args)))
        return 0
    if args.mode == "_engine":
        print(json.dumps(measure_engine(args)))
        return 0
    if args.quick:
        args.requests, args.counts, args.hot_loads, args.concurrency = 60, "1,10", 5, "1,8"

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="langadapt-bench-serve-") as folder:
        tmp = Path(folder)
        max_stacks = max(int(c) for c in args.counts.split(","))
        setup = build_store(args.base, tmp, max_stacks, log)
        setup_file = tmp / "setup.json"
        setup_file.write_text(json.dumps(setup))
        memory = run_child("memory", args, setup_file)
        log(f"memory: {[(r['stacks'], round(r['ratio'], 3)) for r in memory['rows']]}")
        engine_before = run_child("engine", args, setup_file)
        log(f"engine: { {k: round(v['rps'], 2) for k, v in engine_before.items()} } requests/s")
        requests = requests_for(args.requests)
        with running_server(args, setup, tmp) as url:
            load(url, requests[:16], 4)  # warm-up
            server = []
            for clients in (int(c) for c in args.concurrency.split(",")):
                row = load(url, requests, clients)
                latency = f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms"
                log(f"server, {clients} clients: {row['rps']:.2f} rps, {latency}")
                server.append(row)
            hot = hot_load(url, args, setup, log)
        engine_after = run_child("engine", args, setup_file)  # again: the machine's load drifts over a run
        log(f"engine again: { {k: round(v['rps'], 2) for k, v in engine_after.items()} } requests/s")
    engine = {
        key: {
            "rps": (engine_before[key]["rps"] + engine_after[key]["rps"]) / 2,
            "rps_before_server": engine_before[key]["rps"],
            "rps_after_server": engine_after[key]["rps"],
            "requests": engine_before[key]["requests"],
        }
        for key in engine_before
    }
    best = max(server, key=lambda r: r["rps"])
    batched = engine[f"batch_{args.max_batch_size}"]["rps"]
    results = {
        "config": {
            "base": args.base,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "requests": args.requests,
            "texts_per_request": 2,
            "max_batch_size": args.max_batch_size,
            "batch_timeout_s": args.batch_timeout,
            "workers": 1,
            "adapter_kind": "seq_bn",
        },
        "engine": engine,
        "server": server,
        "throughput_ratio": best["rps"] / batched,
        "throughput_ratio_single_client": server[0]["rps"] / engine["batch_1"]["rps"],
        "http_overhead_ms_single_client": (server[0]["seconds"] - server[0]["engine_seconds_in_server"])
        / server[0]["requests"]
        * 1000,
        "memory": memory,
        "hot_load": hot,
        "goals": {
            "throughput_ratio>=0.85": best["rps"] / batched >= 0.85,
            "memory_ratio<=1.3": all(r["ratio"] <= 1.3 for r in memory["rows"]),
            "hot_load_p99<100ms": (hot["swap_p99_ms"] or 1e9) < 100,
            "failed_requests==0": hot["failed_requests"] == 0 and all(r["failed"] == 0 for r in server),
            "every_version_went_live": not hot["misses"],
        },
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "serve.png")
    log(f"goals: {results['goals']}; wrote {args.out / 'serve.json'} and serve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
