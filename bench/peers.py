"""langadapt against the peers a user would pick instead (issue 13), on the same request stream, side by side.

    .venv/bin/python bench/peers.py              # full run, writes bench/results/peers.{json,png}
    .venv/bin/python bench/peers.py --quick      # a few minutes: fewer clients, rounds and requests, temp --out

Systems, each its own process tree on a free loopback port, all up during a stream:
- `langadapt`: `langadapt serve` as `make serve` starts it (default flags: default workers and threads,
  backend auto, the packaged default adapters) plus its own `--store` and `--runtime-dir`; each stream's store
  holds the swappable graph that a first start of auto builds (exported before the servers start);
- `langadapt-torch`: the same with `--backend torch` (the default before backend auto), for comparison;
- `adapters-paper`: the `adapters` library the seed paper's way (one AutoAdapterModel, every adapter loaded,
  requests grouped by stack, `Stack` set active, batched forwards), and
- `pipeline-per-stack`: a transformers `pipeline` per stack (what a newcomer writes), both behind the same
  minimal HTTP layer, FastAPI on uvicorn in one process (bench/peers_servers.py); torch uses every core.
- `ort-per-stack` (hot-stack stream only): one ONNX Runtime session per stack on the graph `langadapt export
  fused` made for it (what a Triton model repository does), behind the same layer, batched per stack;
- `optimum-per-stack` (hot-stack stream only): optimum's `ORTModelForSequenceClassification` /
  `ORTModelForTokenClassification` on the same fused graphs (what an optimum user does);
- `langadapt-onnx-swappable` (mixed stream only; `--no-swappable` leaves it out): `langadapt serve --backend
  onnx-swappable` after `langadapt export swappable` into the stream's store. Another langadapt backend, not a
  peer.

Streams, each with its own servers (started one after another: start-up time is time to /ready):
- `mixed`: ner/sentiment/topic requests interleaved over the five default languages, one or two real SIB-200
  sentences each (bench/pool.py's stream), on the 15 packaged default stacks;
- `longtail`: requests over >= 100 language+task stacks of random seq_bn adapters (bench/serve.py's store:
  a language adapter and three task adapters per language), stacks in a shuffled order, the same sentences;
- `hot` (`--no-hot` leaves it out): every request on one default stack (hau_Latn topic), langadapt against one
  fused ORT session (`ratio_vs_fused_ort`), optimum on the same graph and the adapters library; the stack's fused
  graph is in langadapt's store too, and auto times and uses it once the stack is hot.

In each round, every concurrency level, every system in turn (the order rotates per round) gets the same
requests from N keep-alive clients (bench/pool.py `load_round`). Per system: requests/s, p50/p99 latency per
N, PSS and RSS of its process tree after the rounds (all systems of the stream up), start-up time; for
langadapt the padded/real token ratio of its engine passes (`langadapt_padded_tokens` over
`langadapt_batch_tokens_sum` in /metrics). `ratio_vs_best_peer` is langadapt's throughput over the best
peer's at 8 clients on the same stream, same run.

Each langadapt server's backend choices (`runtime` of every worker in /v1/adapters) are recorded per stream.

Not measured here: one ONNX Runtime session (or optimum ORTModel) per stack on the mixed stream and the long
tail (`langadapt export fused` per stack: 14-75 s each here and a 470 MB base per stack in one process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pool import (
    CLIENTS,
    LANGUAGES,
    TASKS,
    load_round,
    machine,
    mixed_requests,
    sentences,
    server_command,
    tree_memory,
    versions,
)
from serve import ADMIN_KEY, build_store, free_port, log, serving

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT = "langadapt"
SWAPPABLE = "langadapt-onnx-swappable"  # a langadapt backend, not a peer: `--backend onnx-swappable`
PEERS = {
    "adapters-paper": "adapters 1.3 the seed paper's way: one AutoAdapterModel, all adapters loaded, requests "
    "gathered (langadapt's max_batch_size/batch_timeout), grouped by stack, Stack set active, forwards of <= 16 "
    "texts; FastAPI/uvicorn, one process, one inference thread, torch threads = cores",
    "pipeline-per-stack": "a transformers pipeline per stack (token-/text-classification) over one shared "
    "AutoAdapterModel, stack set active per request under a lock, pipeline batch size 1; FastAPI/uvicorn, one "
    "process, one inference thread, torch threads = cores",
    "ort-per-stack": "one ONNX Runtime session per stack on its `langadapt export fused` graph (what a Triton "
    "model repository does: a base per stack), requests gathered and batched per stack as adapters-paper; "
    "FastAPI/uvicorn, one process, no torch, ORT intra-op threads = cores (hot-stack stream only)",
    "optimum-per-stack": "optimum's ORTModelForSequenceClassification / ORTModelForTokenClassification per stack on "
    "the same fused graphs as ort-per-stack (the base's config with the stack's labels beside each), batched per "
    "stack as adapters-paper; FastAPI/uvicorn, one process, ORT intra-op threads = cores (hot-stack stream only)",
}
ORT = "ort-per-stack"
OPTIMUM = "optimum-per-stack"
TORCH_ARM = "langadapt-torch"  # the old default backend: `--backend torch`
SYSTEMS = (DEFAULT, TORCH_ARM, "adapters-paper", "pipeline-per-stack")  # mixed (plus SWAPPABLE) and long tail
HOT_SYSTEMS = (DEFAULT, TORCH_ARM, ORT, OPTIMUM, "adapters-paper")
HOT_STACK = ("topic", "hau_Latn")
BACKEND_FLAGS = {DEFAULT: [], SWAPPABLE: ["--backend", "onnx-swappable"], TORCH_ARM: ["--backend", "torch"]}
COLOURS = {
    DEFAULT: "C0",
    SWAPPABLE: "C1",
    "adapters-paper": "C2",
    "pipeline-per-stack": "C3",
    ORT: "C4",
    OPTIMUM: "C5",
    TORCH_ARM: "C7",
}  # one per system
GOALS = {"mixed": 1.5, "longtail": 1.2, "padded_per_real": 1.3}


# ------------------------------------------------------------------------------------------ streams


def longtail_requests(
    texts: dict[str, list[str]], stacks: list[tuple[str, str]], count: int, seed: int
) -> list[tuple[str, str, list[str]]]:
    """`count` (task, language, texts) requests cycling through the stacks in a shuffled order, real sentences."""
    rng = random.Random(seed)
    order = list(stacks)
    rng.shuffle(order)
    out = []
    for i in range(count):
        task, language = order[i % len(order)]
        pool = texts[LANGUAGES[i % len(LANGUAGES)]]
        n = 1 + i % 2
        out.append((task, language, [pool[(3 * i + k) % len(pool)] for k in range(n)]))
    return out


def system_command(
    system: str, port: int, store: Path, runtime: Path, stacks: Path, artifacts: Path | None
) -> tuple[list[str], dict[str, str]]:
    """How each system is started: langadapt as `make serve` starts it, the peers by bench/peers_servers.py."""
    if system in BACKEND_FLAGS:
        command, env = server_command("new", port, store, runtime)
        return command + BACKEND_FLAGS[system], {**env, "LANGADAPT_ADMIN_KEYS": ADMIN_KEY}
    script = Path(__file__).with_name("peers_servers.py")
    command = [sys.executable, str(script), system, "--port", str(port), "--store", str(store), "--stacks", str(stacks)]
    if system in (ORT, OPTIMUM) and artifacts is not None:
        command += ["--artifacts", str(artifacts)]
    return command, dict(os.environ)


def token_counts(url: str) -> dict[str, float]:
    """langadapt's cumulative real and padded tokens of engine passes (from /metrics, summed over tasks)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {"real": 0.0, "padded": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "langadapt_batch_tokens_sum":
                out["real"] += sample.value
            elif sample.name == "langadapt_padded_tokens_total":
                out["padded"] += sample.value
    return out


def worker_runtimes(url: str) -> list[dict[str, Any]]:
    """Each langadapt worker's backend choices (`runtime` in /v1/adapters): which ONNX graphs serve, and timings."""
    import httpx

    reply = httpx.get(f"{url}/v1/adapters", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    reply.raise_for_status()
    return [worker.get("runtime", {}) for worker in reply.json()["workers"]]


def langadapt_export(*args: str) -> float:
    """`langadapt export ARGS` (the graph checked before it is published into the store); seconds it took."""
    script = Path(sys.executable).parent / "langadapt"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "langadapt.cli"]
    started = time.perf_counter()
    done = subprocess.run([*command, "export", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"langadapt export {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    log(f"langadapt export {' '.join(args[:5])}: {seconds:.0f} s")
    return seconds


def export_swappable(store: Path) -> float:
    """The swappable graph of the embedded base into the store; seconds."""
    return langadapt_export("swappable", "--store", str(store))


def export_fused(store: Path, task: str, language: str, out: Path) -> float:
    """The fused graph of one stack into the store, copied to `out`; seconds."""
    return langadapt_export("fused", "--lang", language, "--task", task, "--store", str(store), "--out", str(out))


def run_stream(
    name: str,
    systems_here: tuple[str, ...],
    store: Path,
    stacks: list[tuple[str, str]],
    rounds: list[list[tuple[str, str, list[str]]]],
    warm: list[tuple[str, str, list[str]]],
    levels: list[int],
    cap: float,
    tmp: Path,
    artifacts: Path | None = None,
) -> dict[str, Any]:
    """Start every system on this stream's stacks, then interleaved rounds; figures per system and level."""
    stacks_file = tmp / f"{name}-stacks.json"
    stacks_file.write_text(json.dumps(stacks))
    out: dict[str, Any] = {"stacks": len(stacks), "requests_per_round": len(rounds[0]), "rounds": len(rounds)}
    urls: dict[str, str] = {}
    pids: dict[str, int] = {}
    systems: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as servers:
        for system in systems_here:
            folder = Path(tempfile.mkdtemp(prefix=f"{name}-{system}-", dir=tmp))
            port = free_port()
            command, env = system_command(system, port, store, folder / "runtime", stacks_file, artifacts)
            urls[system], pids[system], ready = servers.enter_context(
                serving(f"{name}/{system}", command, env, port, folder / "server.log")
            )
            systems[system] = {"startup_s": ready, "latencies": {c: [] for c in levels}, "rounds": []}
        for system, url in urls.items():
            warmed = load_round(url, warm, 2, cap)
            if warmed["errors"]:
                raise RuntimeError(f"{name}: {system} failed its warm-up: {warmed['failures']}")
        before = token_counts(urls[DEFAULT])
        for r, requests in enumerate(rounds):
            order = systems_here[r % len(systems_here) :] + systems_here[: r % len(systems_here)]
            for clients in levels:
                for system in order:
                    row = load_round(urls[system], requests, clients, cap)
                    systems[system]["latencies"][clients].extend(row.pop("latencies"))
                    systems[system]["rounds"].append({"round": r, "clients": clients, **row})
                    log(f"{name} round {r} {system} x{clients}: {row['rps']:.2f} rps, {row['errors']} errors")
        after = token_counts(urls[DEFAULT])
        for system, pid in pids.items():
            memory = tree_memory(pid)
            systems[system]["memory"] = {k: memory[k] for k in ("pss_bytes", "rss_bytes", "processes")}
            if system in BACKEND_FLAGS:
                systems[system]["runtime"] = worker_runtimes(urls[system])
    for figures in systems.values():
        latencies = figures.pop("latencies")
        figures["levels"] = {}
        for clients in levels:
            rows = [row for row in figures["rounds"] if row["clients"] == clients]
            ok, seconds = sum(row["ok"] for row in rows), sum(row["seconds"] for row in rows)
            figures["levels"][str(clients)] = {
                "rps": ok / seconds,
                "p50_ms": float(np.percentile(latencies[clients], 50) * 1000) if latencies[clients] else None,
                "p99_ms": float(np.percentile(latencies[clients], 99) * 1000) if latencies[clients] else None,
                "errors": sum(row["errors"] for row in rows),
                "capped_rounds": sum(row["capped"] for row in rows),
                "rps_per_round": [row["rps"] for row in rows],
            }
    real, padded = after["real"] - before["real"], after["padded"] - before["padded"]
    out["systems"] = systems
    out["langadapt_tokens"] = {"real": real, "padded": padded, "padded_per_real": padded / real if real else None}
    at = str(CLIENTS if CLIENTS in levels else max(levels))
    best = max((p for p in systems if p in PEERS), key=lambda p: systems[p]["levels"][at]["rps"])
    out["ratio_vs_best_peer"] = {
        "clients": int(at),
        "best_peer": best,
        "ratio": systems[DEFAULT]["levels"][at]["rps"] / systems[best]["levels"][at]["rps"],
        "memory_pss_ratio": systems[DEFAULT]["memory"]["pss_bytes"] / systems[best]["memory"]["pss_bytes"],
    }
    return out


# ------------------------------------------------------------------------------------------ report


def plot(results: dict[str, Any], path: Path) -> None:
    """Mixed-stream throughput and p99 per concurrency, long-tail throughput, memory and start-up per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hot = results["streams"].get("hot")
    fig, axes = plt.subplots(1, 5 if hot else 4, figsize=(24 if hot else 19, 4.4))
    mixed = results["streams"]["mixed"]["systems"]
    for system, figures in mixed.items():
        levels = sorted(int(c) for c in figures["levels"])
        colour = COLOURS[system]
        axes[0].plot(levels, [figures["levels"][str(c)]["rps"] for c in levels], "o-", c=colour, label=system)
        axes[1].plot(levels, [figures["levels"][str(c)]["p99_ms"] for c in levels], "s-", c=colour, label=system)
    for ax, title, unit in ((axes[0], "Mixed stream: throughput", "requests / s"), (axes[1], "Mixed: p99", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=8)
    tail = results["streams"]["longtail"]
    at = str(tail["ratio_vs_best_peer"]["clients"])
    names = list(tail["systems"])
    x = np.arange(len(names))
    axes[2].bar(x, [tail["systems"][n]["levels"][at]["rps"] for n in names], color=[COLOURS[n] for n in names])
    axes[2].set_xticks(x, [n.replace("-", "-\n", 1) for n in names], fontsize=8)
    axes[2].set_ylabel("requests / s")
    axes[2].set_title(f"Long tail ({tail['stacks']} stacks), {at} clients")
    names = list(mixed)
    x = np.arange(len(names))
    width = 0.38
    colours = [COLOURS[n] for n in names]
    pss = [mixed[n]["memory"]["pss_bytes"] / 2**30 for n in names]
    axes[3].bar(x - width / 2, pss, width, color=colours, label="PSS (GiB)")
    axes[3].bar(
        x + width / 2, [mixed[n]["startup_s"] / 10 for n in names], width, color=colours, alpha=0.45, hatch="//"
    )
    axes[3].bar([], [], color="gray", alpha=0.45, hatch="//", label="start-up (10 s)")
    axes[3].set_xticks(x, [n.replace("-", "-\n", 1) for n in names], fontsize=8)
    axes[3].set_title("Mixed stream: memory and start-up")
    axes[3].legend(fontsize=8)
    if hot:
        at = str(hot["ratio_vs_fused_ort"]["clients"])
        names = list(hot["systems"])
        x = np.arange(len(names))
        axes[4].bar(x, [hot["systems"][n]["levels"][at]["rps"] for n in names], color=[COLOURS[n] for n in names])
        axes[4].set_xticks(x, [n.replace("-", "-\n", 1) for n in names], fontsize=8)
        axes[4].set_ylabel("requests / s")
        axes[4].set_title(f"One hot stack ({'-'.join(reversed(HOT_STACK))}), {at} clients")
    quick = " (--quick)" if results["config"]["quick"] else ""
    fig.suptitle(f"langadapt vs peers{quick}: ratio vs best peer, mixed {results['ratio_vs_best_peer']:.2f}x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def hot_stream(texts: dict[str, list[str]], args: argparse.Namespace, levels: list[int], tmp: Path) -> dict[str, Any]:
    """Every request on one stack: langadapt against one ORT session on that stack's fused graph."""
    store = tmp / "hot-store"
    store.mkdir()
    task, language = HOT_STACK
    seconds = export_fused(store, task, language, tmp / "hot-fused")
    artifacts = tmp / "hot-artifacts.json"
    artifacts.write_text(json.dumps([[task, language, str(tmp / "hot-fused")]]))
    pool = texts[language]
    requests = [
        (task, language, [pool[(2 * i + k) % len(pool)] for k in range(1 + i % 2)]) for i in range(args.requests)
    ]
    rounds = [requests] * args.rounds
    # Steady state: enough traffic for auto to find the stack hot (its promote_after passes per worker), as any
    # server with one busy stack soon has; every system gets the same warm-up.
    warm = requests * 4
    out = run_stream("hot", HOT_SYSTEMS, store, [HOT_STACK], rounds, warm, levels, args.cap, tmp, artifacts)
    at = str(out["ratio_vs_best_peer"]["clients"])
    rps = {system: out["systems"][system]["levels"][at]["rps"] for system in HOT_SYSTEMS}
    out["fused_export_s"] = seconds
    out["ratio_vs_fused_ort"] = {"clients": int(at), "ratio": rps[DEFAULT] / rps[ORT]}
    return out


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=120, help="requests per round (each system, each level)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels of the mixed stream")
    parser.add_argument("--longtail-clients", default="8,32")
    parser.add_argument("--longtail-stacks", type=int, default=102, help="at least 100 (3 tasks per language)")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds a round may take per system and level")
    parser.add_argument(
        "--no-swappable", action="store_true", help="leave out langadapt --backend onnx-swappable (mixed stream)"
    )
    parser.add_argument("--no-hot", action="store_true", help="leave out the hot-stack stream (and its export)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results (--quick: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 40 requests, 1 and 8 clients; long tail 8")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.clients, args.longtail_clients, args.cap = 2, 40, "1,8", "8", 25.0
    out = args.out or (Path(tempfile.mkdtemp(prefix="peers-quick-")) if args.quick else RESULTS)
    signal.signal(signal.SIGTERM, _terminate)  # so that the servers are stopped
    started = time.perf_counter()
    load_before = os.getloadavg()
    texts, source = sentences()
    mixed_levels = [int(c) for c in args.clients.split(",")]
    tail_levels = [int(c) for c in args.longtail_clients.split(",")]
    streams: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="langadapt-bench-peers-") as folder:
        tmp = Path(folder)
        mixed_store = tmp / "mixed-store"
        mixed_store.mkdir()
        stacks = [(task, language) for language in LANGUAGES for task in TASKS]
        rounds = [mixed_requests(texts, args.requests)] * args.rounds
        warm = [(task, language, texts[language][:1]) for task, language in stacks]  # the 15 stacks hot
        # The default (backend auto) finds the swappable graph a server built on an earlier start (cached in the
        # store): exported here before the servers start, as after that first start.
        export_seconds = export_swappable(mixed_store)
        mixed_systems = SYSTEMS if args.no_swappable else (DEFAULT, SWAPPABLE, *SYSTEMS[1:])
        streams["mixed"] = run_stream(
            "mixed", mixed_systems, mixed_store, stacks, rounds, warm, mixed_levels, args.cap, tmp
        )
        streams["mixed"]["swappable_export_s"] = export_seconds
        setup = build_store("embedded", tmp / "longtail", args.longtail_stacks, log)
        export_swappable(Path(setup["store"]))  # as for the mixed stream: the graph an earlier start built
        stacks = [(task, language) for language in setup["languages"] for task in TASKS]
        # Each round its own shuffled order, the same for every system.
        count = max(args.requests, len(stacks))  # every stack at least once a round
        rounds = [longtail_requests(texts, stacks, count, seed=r) for r in range(args.rounds)]
        warm = longtail_requests(texts, stacks, 6, seed=99)  # HTTP paths warm; most stacks stay cold for langadapt
        streams["longtail"] = run_stream(
            "longtail", SYSTEMS, Path(setup["store"]), stacks, rounds, warm, tail_levels, args.cap, tmp
        )
        if not args.no_hot:
            streams["hot"] = hot_stream(texts, args, tail_levels, tmp)
    mixed, tail, hot = streams["mixed"], streams["longtail"], streams.get("hot")
    padded = mixed["langadapt_tokens"]["padded_per_real"]
    results = {
        "config": {
            "machine": machine(),
            "versions": versions(),
            "quick": args.quick,
            "texts": source,
            "rounds": args.rounds,
            "requests_per_round": args.requests,
            "round_cap_s": args.cap,
            "clients": {"mixed": mixed_levels, "longtail": tail_levels},
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "default": "langadapt serve as `make serve` starts it (default flags: backend auto) + --host 127.0.0.1 "
            "--port <free> --store <stream's store> --runtime-dir <tmp>; each stream's store holds the swappable "
            "graph a first start builds (exported before the servers start); the hot stream's store the hot "
            "stack's fused graph (the one ort-per-stack loads), which auto times and uses once the stack is hot",
            "torch_arm": "langadapt serve --backend torch: the default before backend auto",
            "http_layer_of_peers": "FastAPI on uvicorn, one process (bench/peers_servers.py)",
            "memory": "PSS/RSS summed over each system's process tree after the rounds, every system of the stream up",
            "swappable_arm": "langadapt serve --backend onnx-swappable on the mixed stream only, after `langadapt "
            "export swappable` into its store (not a peer: ratio_vs_best_peer compares the default with the peers)",
            "not_measured": [
                "langadapt --backend onnx-swappable on the long tail (auto uses the same graph there)",
                "one ONNX Runtime session (or optimum ORTModel) per stack on the mixed stream and the long tail: a "
                "fused export per stack takes 14-75 s here and holds a 470 MB base each (15 stacks: 7 GB in one "
                "process, 102: 48 GB); only on the hot-stack stream",
            ],
        },
        "peers": PEERS,
        "streams": streams,
        "ratio_vs_best_peer": mixed["ratio_vs_best_peer"]["ratio"],
        "ratio_vs_best_peer_longtail": tail["ratio_vs_best_peer"]["ratio"],
        "padded_per_real_tokens": padded,
        "ratio_vs_fused_ort_hot_stack": hot["ratio_vs_fused_ort"]["ratio"] if hot else None,
        "goals": {
            "mixed>=1.5x_best_peer": {
                "ratio": mixed["ratio_vs_best_peer"]["ratio"],
                "met": mixed["ratio_vs_best_peer"]["ratio"] >= GOALS["mixed"],
            },
            "at_equal_or_lower_memory": {
                "pss_ratio": mixed["ratio_vs_best_peer"]["memory_pss_ratio"],
                "met": mixed["ratio_vs_best_peer"]["memory_pss_ratio"] <= 1.0,
            },
            "longtail>=1.2x_best_peer": {
                "ratio": tail["ratio_vs_best_peer"]["ratio"],
                "met": tail["ratio_vs_best_peer"]["ratio"] >= GOALS["longtail"],
            },
            "padded<=1.3x_real(mixed)": {
                "ratio": padded,
                "met": padded is not None and padded <= GOALS["padded_per_real"],
            },
            "single_hot_stack_within_10%_of_fused_ort": (
                {"ratio": hot["ratio_vs_fused_ort"]["ratio"], "met": hot["ratio_vs_fused_ort"]["ratio"] >= 0.9}
                if hot
                else {"met": None, "why": "not measured (--no-hot)"}
            ),
        },
        "seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "peers.png")
    log(f"goals: { {k: v['met'] for k, v in results['goals'].items()} }; wrote {out / 'peers.json'} and peers.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
