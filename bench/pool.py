"""Worker-pool benchmark: one inference worker for every task (issue 10) against one worker per task (bbff0af).

    .venv/bin/python bench/pool.py              # full run, writes bench/results/pool.{json,png} (~15 min)
    .venv/bin/python bench/pool.py --quick      # fewer rounds, requests and repeats (a few minutes)

The NEW layout is this checkout's `langadapt serve`; the OLD one is commit bbff0af (one LitAPI, so one worker
process and one base model, per task), run from a temporary git worktree. Both are started as `make serve`
starts them (default flags: the 15 packaged default adapters, default workers and torch threads), each
on a free loopback port with its own empty `--store` and `--runtime-dir`. Measured, side by side in one run:

1. Memory: RSS and PSS (/proc/<pid>/smaps_rollup) summed over the whole server process tree with the 15
   default stacks active (one request per language x task first), each the only server of this run up, against
   one plain `Engine` process (a child of this script) that labelled each of the 15 stacks once.
2. Mixed-task throughput: ner/sentiment/topic requests interleaved (five languages, one or two real SIB-200
   sentences each) from 8 concurrent keep-alive clients, a fixed number of requests per round with a time
   cap, NEW and OLD in alternating rounds (order reversed every other round), all servers up throughout;
   requests/s, p50/p99, errors; how often the NEW server's engine batches mixed tasks (`langadapt_batch_tasks`).
   A third, diagnostic arm runs the NEW layout with `--workers 1` (one worker with a torch thread per core; or
   `--diagnostic-flags`), to tell the worker count's effect from the pool's.
3. `POST /v1/label` with three tasks against three sequential single-task requests for the same texts, on
   the NEW server, one client, interleaved (the order alternates per repeat), many repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from serve import TEXTS, free_port, log, serving

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data" / "topic" / "sib200"
OLD_COMMIT = "bbff0af"
WORKTREE = Path("/tmp/pool-old")
LANGUAGES = ("hau_Latn", "yor_Latn", "swh_Latn", "ibo_Latn", "kin_Latn")
TASKS = ("ner", "sentiment", "topic")
CLIENTS = 8
GOALS = {"memory": 1.4, "throughput": 1.0, "label": 1.0}
CORES = os.cpu_count() or 1
ALL_THREADS = "new-1w"  # diagnostic arm: the NEW layout with one worker (a torch thread per core)
DIAGNOSTIC_ENV: dict[str, str] = {}  # extra environment of the diagnostic arm (--diagnostic-env)
DIAGNOSTIC_FLAGS: list[str] = []  # its server flags instead of --workers 1 (--diagnostic-flags)


# ------------------------------------------------------------------------------------------ inputs


def sentences(per_language: int = 40) -> tuple[dict[str, list[str]], str]:
    """Real SIB-200 test sentences (parallel across the five languages), or bench/serve.py's TEXTS without data."""
    out: dict[str, list[str]] = {}
    for language in LANGUAGES:
        path = DATA / language / "test.tsv"
        if not path.is_file():
            return {lang: [TEXTS[lang], f"{TEXTS[lang]} {TEXTS[lang]}"] for lang in LANGUAGES}, "bench/serve.py TEXTS"
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
        out[language] = [row[2] for row in rows[:per_language]]
    return out, "SIB-200 test (topic/sib200/<lang>/test.tsv)"


def mixed_requests(texts: dict[str, list[str]], count: int) -> list[tuple[str, str, list[str]]]:
    """`count` (task, language, texts) requests: tasks interleaved, five languages, one or two sentences each."""
    out = []
    for i in range(count):
        language = LANGUAGES[(i // len(TASKS)) % len(LANGUAGES)]
        pool = texts[language]
        n = 1 + (i // (len(TASKS) * len(LANGUAGES))) % 2
        out.append((TASKS[i % len(TASKS)], language, [pool[(2 * i + k) % len(pool)] for k in range(n)]))
    return out


def label_cases(texts: dict[str, list[str]]) -> dict[str, list[tuple[str, list[str]]]]:
    """Cases for /v1/label vs three singles: (language, texts) requests, one per language in the case."""
    mix = [("hau_Latn", 2), ("yor_Latn", 2), ("swh_Latn", 2), ("ibo_Latn", 1), ("kin_Latn", 1)]
    return {
        "1 text, yor_Latn": [("yor_Latn", texts["yor_Latn"][:1])],
        "8 texts, yor_Latn": [("yor_Latn", texts["yor_Latn"][:8])],
        "8 texts over 5 languages": [(lang, texts[lang][10 : 10 + n]) for lang, n in mix],
    }


# ------------------------------------------------------------------------------------------ memory


def proc_memory(pid: int) -> dict[str, Any] | None:
    """RSS (VmRSS) and PSS (smaps_rollup) of one process in bytes, and what it is; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None

    def field(text: str, name: str) -> int:
        for line in text.splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
        return 0

    return {"pid": pid, "rss": field(status, "VmRSS"), "pss": field(rollup, "Pss"), "cmd": cmdline[-90:]}


def descendants(root: int) -> list[int]:
    """`root` and every process below it (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_memory(root: int) -> dict[str, Any]:
    """Summed RSS and PSS of a process tree, with each process."""
    processes = [m for m in (proc_memory(p) for p in descendants(root)) if m is not None and m["rss"] > 0]
    return {
        "rss_bytes": sum(p["rss"] for p in processes),
        "pss_bytes": sum(p["pss"] for p in processes),
        "processes": len(processes),
        "per_process": [{**p, "rss_mib": p["rss"] / 2**20, "pss_mib": p["pss"] / 2**20} for p in processes],
    }


def measure_engine(store: str) -> dict[str, Any]:
    """(In a child process.) One plain Engine with the packaged defaults, each of the 15 stacks labelled once."""
    from langadapt.inference.engine import Engine
    from langadapt.inference.settings import InferenceSettings

    texts, _ = sentences(2)
    engine = Engine(InferenceSettings(store=store, threads=os.cpu_count()))
    for language in LANGUAGES:
        for task in TASKS:
            engine.label(task, language, texts[language][:1])
    gc.collect()
    me = proc_memory(os.getpid())
    assert me is not None
    stacks = len(engine.cache.active())
    return {"rss_bytes": me["rss"], "pss_bytes": me["pss"], "stacks": stacks, "threads": os.cpu_count()}


def engine_child(tmp: Path) -> dict[str, Any]:
    store = tmp / "engine-store"
    store.mkdir()
    command = [sys.executable, __file__, "_engine", "--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"engine measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ servers


def old_worktree() -> Path:
    """A detached worktree of the OLD commit at /tmp/pool-old (a stale one from an earlier run replaced)."""
    git = ["git", "-C", str(ROOT)]
    if WORKTREE.exists():
        subprocess.run([*git, "worktree", "remove", "--force", str(WORKTREE)], check=False, capture_output=True)
    subprocess.run([*git, "worktree", "prune"], check=False, capture_output=True)
    subprocess.run([*git, "worktree", "add", "--detach", str(WORKTREE), OLD_COMMIT], check=True, capture_output=True)
    return WORKTREE


def server_command(layout: str, port: int, store: Path, runtime: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a layout's server, as `make serve` starts it plus store and runtime."""
    flags = ["--host", "127.0.0.1", "--port", str(port), "--store", str(store), "--runtime-dir", str(runtime)]
    env = dict(os.environ)
    if layout == "old":
        env["PYTHONPATH"] = str(WORKTREE / "src")
        return [sys.executable, "-m", "langadapt.serve", *flags], env
    if layout == ALL_THREADS:  # diagnostic arm: the NEW layout with one worker
        flags += DIAGNOSTIC_FLAGS or ["--workers", "1"]
        env.update(DIAGNOSTIC_ENV)
    script = Path(sys.executable).parent / "langadapt"
    return ([str(script), "serve"] if script.exists() else [sys.executable, "-m", "langadapt.serve"]) + flags, env


@contextlib.contextmanager
def running_server(layout: str, tmp: Path) -> Iterator[tuple[str, int]]:
    """Start a layout's server on a free port, wait for /ready; stop its whole session on exit. Yields (url, pid)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{layout}-", dir=tmp))
    (folder / "store").mkdir()
    port = free_port()
    command, env = server_command(layout, port, folder / "store", folder / "runtime")
    with serving(layout, command, env, port, folder / "server.log") as (url, pid, _):
        yield url, pid


def warm(url: str, texts: dict[str, list[str]]) -> None:
    """One request per language x task, so the 15 default stacks are active; every one must succeed."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        for language in LANGUAGES:
            for task in TASKS:
                response = client.post(f"/v1/{task}", json={"lang": language, "texts": texts[language][:1]})
                if response.status_code != 200:
                    raise RuntimeError(f"warm-up {task} {language}: {response.status_code} {response.text[:300]}")


def metric_samples(url: str) -> dict[str, float]:
    """The /metrics samples this benchmark reads, summed over labels (bucket samples keyed by their `le`)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    wanted = ("langadapt_batch_tasks", "langadapt_batch_requests", "langadapt_batch_seconds")
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if not sample.name.startswith(wanted):
                continue
            key = sample.name
            if sample.name.endswith("_bucket"):
                key = f"{sample.name}{{le={float(sample.labels['le'])}}}"
            out[key] = out.get(key, 0.0) + sample.value
    return out


def batch_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Batches, requests per batch and (NEW only) the fraction of batches that mixed tasks, between two reads."""

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("langadapt_batch_requests_count")
    out: dict[str, Any] = {
        "batches": batches,
        "requests_per_batch": delta("langadapt_batch_requests_sum") / batches if batches else None,
        "engine_seconds": delta("langadapt_batch_seconds_sum"),
    }
    counted = delta("langadapt_batch_tasks_count")
    if counted:
        single = delta("langadapt_batch_tasks_bucket{le=1.0}")
        two = delta("langadapt_batch_tasks_bucket{le=2.0}")
        out.update(
            {
                "tasks_per_batch_mean": delta("langadapt_batch_tasks_sum") / counted,
                "mixed_fraction": (counted - single) / counted,
                "batches_with": {"1": single, "2": two - single, "3": counted - two},
            }
        )
    return out


# ------------------------------------------------------------------------------------------ load


def load_round(url: str, requests: list[tuple[str, str, list[str]]], clients: int, cap: float) -> dict[str, Any]:
    """Send the requests once from `clients` keep-alive threads, stopping early at `cap` seconds."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    workers: set[str] = set()
    cursor = iter(range(len(requests)))
    lock = threading.Lock()
    started = time.perf_counter()

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.perf_counter() - started < cap:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                task, language, texts = requests[i]
                t0 = time.perf_counter()
                try:
                    response = client.post(f"/v1/{task}", json={"lang": language, "texts": texts})
                except httpx.HTTPError as err:
                    with lock:
                        failures.append(repr(err)[:200])
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200 and response.json()["task"] == task:
                        latencies.append(elapsed)
                        workers.add(response.headers.get("x-langadapt-worker", "-"))
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {
        "requests": len(latencies) + len(failures),
        "ok": len(latencies),
        "errors": len(failures),
        "failures": failures[:3],
        "seconds": seconds,
        "capped": len(latencies) + len(failures) < len(requests),
        "rps": len(latencies) / seconds,
        "latencies": latencies,
        "worker_headers": sorted(workers),
    }


def throughput(
    urls: dict[str, str], requests: list[tuple[str, str, list[str]]], args: argparse.Namespace
) -> dict[str, Any]:
    """The layouts in alternating rounds (order reversed every other round), the same requests each round."""
    for url in urls.values():  # warm the HTTP paths and allocators with the mixed load
        load_round(url, requests[:16], CLIENTS, 60)
    before = {layout: metric_samples(url) for layout, url in urls.items()}
    rounds: dict[str, list[dict[str, Any]]] = {layout: [] for layout in urls}
    loads: list[float] = []
    for r in range(args.rounds):
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        for layout in order:
            row = load_round(urls[layout], requests, CLIENTS, args.cap)
            row["round"] = r + 1
            row["loadavg"] = os.getloadavg()[0]
            loads.append(row["loadavg"])
            rounds[layout].append(row)
            lat = np.array(row["latencies"]) * 1000
            log(
                f"round {r + 1}/{args.rounds} {layout}: {row['rps']:.2f} req/s, p50 {np.percentile(lat, 50):.0f} ms, "
                f"p99 {np.percentile(lat, 99):.0f} ms, {row['errors']} errors"
                f"{' (time cap)' if row['capped'] else ''}, load {row['loadavg']:.1f}"
            )
    after = {layout: metric_samples(url) for layout, url in urls.items()}
    out: dict[str, Any] = {}
    for layout, rows in rounds.items():
        latencies = np.array([x for row in rows for x in row["latencies"]]) * 1000
        ok = sum(row["ok"] for row in rows)
        seconds = sum(row["seconds"] for row in rows)
        out[layout] = {
            "rps": ok / seconds,
            "rps_median_round": float(np.median([row["rps"] for row in rows])),
            "rps_per_round": [row["rps"] for row in rows],
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "requests": sum(row["requests"] for row in rows),
            "errors": sum(row["errors"] for row in rows),
            "failures": [f for row in rows for f in row["failures"]][:5],
            "capped_rounds": sum(row["capped"] for row in rows),
            "worker_headers": sorted({w for row in rows for w in row["worker_headers"]}),
            **batch_figures(before[layout], after[layout]),
        }
    for layout in [x for x in urls if x != "old"]:
        suffix = "" if layout == "new" else "_" + layout.replace("-", "_")
        paired = [n["rps"] / o["rps"] for n, o in zip(rounds[layout], rounds["old"], strict=True)]
        out[f"ratio_new_over_old{suffix}"] = out[layout]["rps"] / out["old"]["rps"]
        out[f"ratio_per_round{suffix}"] = paired
        out[f"ratio_median_round{suffix}"] = float(np.median(paired))
    out["loadavg_rounds"] = loads
    return out


# ------------------------------------------------------------------------------------------ /v1/label


def label_vs_singles(
    url: str, cases: dict[str, list[tuple[str, list[str]]]], repeats: int, cap: float
) -> dict[str, Any]:
    """Per case: one /v1/label (three tasks) per language against three sequential single-task requests.

    `repeats` pairs per case, fewer (two at least, one in each order) once a case has taken `cap` seconds.
    """
    import httpx

    def via_label(client: httpx.Client, case: list[tuple[str, list[str]]]) -> list[Any]:
        out = []
        for language, texts in case:
            response = client.post("/v1/label", json={"lang": language, "texts": texts, "tasks": list(TASKS)})
            response.raise_for_status()
            out.append(response.json())
        return out

    def via_singles(client: httpx.Client, case: list[tuple[str, list[str]]]) -> list[Any]:
        out = []
        for language, texts in case:
            for task in TASKS:
                response = client.post(f"/v1/{task}", json={"lang": language, "texts": texts})
                response.raise_for_status()
                out.append(response.json())
        return out

    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, case in cases.items():
            labelled, singles = via_label(client, case), via_singles(client, case)  # warm-up, and the check
            times: dict[str, list[float]] = {"label": [], "singles": []}
            started = time.perf_counter()
            for r in range(repeats):
                if r >= 2 and r % 2 == 0 and time.perf_counter() - started > cap:
                    break
                for way in ("label", "singles") if r % 2 == 0 else ("singles", "label"):
                    t0 = time.perf_counter()
                    (via_label if way == "label" else via_singles)(client, case)
                    times[way].append(time.perf_counter() - t0)
            label_ms, singles_ms = np.median(times["label"]) * 1000, np.median(times["singles"]) * 1000
            paired = [a / b for a, b in zip(times["label"], times["singles"], strict=True)]
            results[name] = {
                "texts": sum(len(t) for _, t in case),
                "languages": len(case),
                "label_requests": len(case),
                "single_requests": len(case) * len(TASKS),
                "repeats": len(times["label"]),
                "label_ms": float(label_ms),
                "singles_ms": float(singles_ms),
                "ratio": float(label_ms / singles_ms),
                "ratio_median_paired": float(np.median(paired)),
                "same_answers": same_answers(labelled, singles),
            }
            log(
                f"/v1/label vs 3 singles, {name}: {label_ms:.0f} ms vs {singles_ms:.0f} ms "
                f"(ratio {label_ms / singles_ms:.2f}, {len(times['label'])} repeats), "
                f"same answers: {results[name]['same_answers']}"
            )
    return results


def same_answers(labelled: list[Any], singles: list[Any]) -> bool:
    """Whether /v1/label gave each text the labels and entity spans the single-task routes gave."""

    def key(task: str, result: dict[str, Any]) -> Any:
        if task == "ner":
            return [(e["type"], e["start"], e["end"]) for e in result["entities"]]
        return result["label"]

    for i, multi in enumerate(labelled):
        for j, task in enumerate(TASKS):
            single = singles[i * len(TASKS) + j]
            got = [key(task, row[task]) for row in multi["results"]]
            if got != [key(task, row) for row in single["results"]]:
                return False
    return True


# ------------------------------------------------------------------------------------------ report


def wait_for_quiet(limit: float, most: float) -> dict[str, Any]:
    """Poll the 1-minute load average every 30 s until it is below `limit`, for at most `most` seconds."""
    started = time.monotonic()
    first = os.getloadavg()[0]
    while os.getloadavg()[0] >= limit and time.monotonic() - started < most:
        log(f"load average {os.getloadavg()[0]:.2f} >= {limit}: waiting")
        time.sleep(30)
    now = os.getloadavg()[0]
    waited = time.monotonic() - started
    if now >= limit:
        log(f"load average still {now:.2f} after {waited:.0f} s: running anyway")
    return {"limit": limit, "at_start": first, "at_run": now, "waited_s": waited, "ran_anyway": now >= limit}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in ("torch", "litserve", "fastapi", "uvicorn", "httpx", "langadapt"):
        with contextlib.suppress(Exception):
            out[name] = version(name)
    return out


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    return {"platform": platform.platform(), "cpu": model, "cpus": os.cpu_count(), "memory_gib": total / 2**20}


def commits() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False).stdout

    dirty = git("status", "--porcelain", "--", "src").split()
    return {
        "new": git("rev-parse", "HEAD").strip(),
        "old": git("rev-parse", OLD_COMMIT).strip(),
        "src_uncommitted_changes": [p for p in dirty if p.startswith("src/")],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Memory per layout against the one engine, throughput per layout, /v1/label against three singles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    memory = results["memory"]
    ax = axes[0]
    names = ["one engine", "NEW tree", "OLD tree"]
    keys = ["engine", "new", "old"]
    x = np.arange(len(names))
    for offset, kind in ((-0.2, "rss"), (0.2, "pss")):
        values = [memory[k][f"{kind}_bytes"] / 2**20 for k in keys]
        bars = ax.bar(x + offset, values, 0.4, label=kind.upper())
        for bar, k in zip(bars, keys, strict=True):
            if k != "engine":
                ax.annotate(
                    f"{memory[f'ratio_{kind}'][k]:.2f}×",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    for kind, style in (("rss", ":"), ("pss", "--")):
        goal = GOALS["memory"] * memory["engine"][f"{kind}_bytes"] / 2**20
        ax.axhline(goal, ls=style, c="tab:red", label=f"goal: 1.4× the engine's {kind.upper()}")
    ax.set_xticks(x, names)
    ax.set_ylabel("MiB (process tree, 15 stacks active)")
    ax.set_title("Memory")
    ax.legend(fontsize=8, loc="upper left")

    load = results["throughput"]
    ax = axes[1]
    arms = [a for a in ("new", "old", ALL_THREADS) if a in load]
    names = {
        "new": "NEW (one pool)",
        "old": "OLD (worker per task)",
        ALL_THREADS: f"NEW {' '.join(DIAGNOSTIC_FLAGS) or '--workers 1'}\n(diagnostic)",
    }
    colours = {"new": "tab:green", "old": "tab:gray", ALL_THREADS: "tab:olive"}
    for i, layout in enumerate(arms):
        ax.bar(i, load[layout]["rps"], 0.6, color=colours[layout], hatch="//" if layout == ALL_THREADS else None)
        ax.plot([i] * len(load[layout]["rps_per_round"]), load[layout]["rps_per_round"], "k.", alpha=0.6)
        ax.annotate(
            f"p50 {load[layout]['p50_ms']:.0f} / p99 {load[layout]['p99_ms']:.0f} ms",
            (i, load[layout]["rps"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(arms)), [names[a] for a in arms], fontsize=8)
    ax.set_ylabel(f"requests / s ({CLIENTS} clients, mixed tasks)")
    ax.set_title(f"Mixed-task throughput: NEW/OLD {load['ratio_new_over_old']:.2f}× (goal ≥ 1)")

    label = results["label"]
    ax = axes[2]
    names = list(label)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [label[n]["label_ms"] for n in names], 0.4, label="/v1/label, 3 tasks")
    ax.bar(x + 0.2, [label[n]["singles_ms"] for n in names], 0.4, label="3 single-task requests")
    for i, n in enumerate(names):
        top = max(label[n]["label_ms"], label[n]["singles_ms"])
        ax.annotate(f"{label[n]['ratio']:.2f}×", (i, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [n.replace(", ", "\n").replace(" over ", "\nover ") for n in names], fontsize=8)
    ax.set_ylabel("ms (median)")
    ax.set_title("/v1/label vs three singles (NEW; goal < 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "_engine"])
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per layout")
    parser.add_argument("--requests", type=int, default=120, help="requests per throughput round")
    parser.add_argument("--cap", type=float, default=45.0, help="seconds a throughput round may take")
    parser.add_argument("--repeats", type=int, default=15, help="repeats per /v1/label case")
    parser.add_argument("--label-cap", type=float, default=60.0, help="seconds after which a case stops repeating")
    parser.add_argument(
        "--no-diagnostic", action="store_true", help="leave out the diagnostic arm (NEW with --workers 1)"
    )
    parser.add_argument(
        "--diagnostic-env", action="append", default=[], metavar="NAME=VALUE", help="environment of the diagnostic arm"
    )
    parser.add_argument("--diagnostic-flags", default="", help="server flags of the diagnostic arm, quoted")
    parser.add_argument("--max-load", type=float, default=3.0, help="wait for a 1-min load average below this")
    parser.add_argument("--max-wait", type=float, default=1200.0, help="seconds to wait for it at most")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 45 requests, 2 repeats, no load wait")
    args = parser.parse_args(argv)
    if args.mode == "_engine":
        print(json.dumps(measure_engine(args.store)))
        return 0
    DIAGNOSTIC_ENV.update(item.split("=", 1) for item in args.diagnostic_env)
    DIAGNOSTIC_FLAGS.extend(args.diagnostic_flags.split())
    if args.quick:
        args.rounds, args.requests, args.cap, args.repeats, args.label_cap, args.max_wait = 2, 45, 30.0, 2, 0.0, 0.0
    signal.signal(signal.SIGTERM, _terminate)  # so that the servers and the worktree are cleaned up

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    started = time.perf_counter()
    texts, source = sentences()
    worktree = old_worktree()
    log(f"OLD layout ({OLD_COMMIT}) checked out at {worktree}; texts: {source}")
    try:
        with tempfile.TemporaryDirectory(prefix="langadapt-bench-pool-") as folder:
            tmp = Path(folder)
            # 1. Memory: each measured alone on the machine (PSS splits pages shared with other processes).
            engine = engine_child(tmp)
            log(f"one engine: RSS {engine['rss_bytes'] / 2**20:.0f} MiB, PSS {engine['pss_bytes'] / 2**20:.0f} MiB")
            memory: dict[str, Any] = {"engine": engine}
            with running_server("old", tmp) as (url, pid):
                warm(url, texts)
                time.sleep(2)
                memory["old"] = tree_memory(pid)
            with contextlib.ExitStack() as servers:
                url_new, pid_new = servers.enter_context(running_server("new", tmp))
                warm(url_new, texts)
                time.sleep(2)
                memory["new"] = tree_memory(pid_new)
                for layout in ("new", "old"):
                    m = memory[layout]
                    log(
                        f"{layout} tree ({m['processes']} processes): RSS {m['rss_bytes'] / 2**20:.0f} MiB, "
                        f"PSS {m['pss_bytes'] / 2**20:.0f} MiB"
                    )
                # 2. and 3. with every server up.
                urls, pids = {"new": url_new}, {"new": pid_new}
                arms = ("old",) if args.no_diagnostic else ("old", ALL_THREADS)
                for layout in arms:
                    urls[layout], pids[layout] = servers.enter_context(running_server(layout, tmp))
                    warm(urls[layout], texts)
                load = throughput(urls, mixed_requests(texts, args.requests), args)
                after_load = {layout: tree_memory(pid) for layout, pid in pids.items()}
                label = label_vs_singles(url_new, label_cases(texts), args.repeats, args.label_cap)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(WORKTREE)], check=False, capture_output=True
        )

    for kind in ("rss", "pss"):
        memory[f"ratio_{kind}"] = {
            layout: memory[layout][f"{kind}_bytes"] / engine[f"{kind}_bytes"] for layout in ("new", "old")
        }
    memory["rss_after_load_all_up"] = {k: v["rss_bytes"] for k, v in after_load.items()}
    label_ratio = max(case["ratio"] for case in label.values())
    pss_ratio, rss_ratio = memory["ratio_pss"]["new"], memory["ratio_rss"]["new"]
    load_ratio = load["ratio_new_over_old"]
    errors = sum(load[layout]["errors"] for layout in ("new", "old") if layout in load)
    results = {
        "config": {
            "machine": machine(),
            "versions": versions(),
            "commits": commits(),
            "threads": {
                "new": "default workers (one per core up to 4 on a CPU, sharing one base) x cores // workers threads",
                "old": "three workers (one per task), torch threads = max(1, cores // 3) each",
                ALL_THREADS: f"diagnostic: the NEW layout with {' '.join(DIAGNOSTIC_FLAGS) or '--workers 1'}",
                "diagnostic_env": DIAGNOSTIC_ENV,
                "engine": os.cpu_count(),
            },
            "server_flags": "make serve defaults + --host 127.0.0.1 --port <free> --store <empty tmp> "
            "--runtime-dir <tmp>",
            "texts": source,
            "clients": CLIENTS,
            "rounds": args.rounds,
            "requests_per_round": args.requests,
            "round_cap_s": args.cap,
            "label_repeats": args.repeats,
            "label_case_cap_s": args.label_cap,
            "quick": args.quick,
            "load_wait": quiet,
        },
        "memory": memory,
        "throughput": load,
        "label": label,
        "goals": {
            "memory_new_pss<=1.4x_engine": {"ratio": pss_ratio, "met": pss_ratio <= GOALS["memory"]},
            "memory_new_rss<=1.4x_engine": {"ratio": rss_ratio, "met": rss_ratio <= GOALS["memory"]},
            "throughput_new>=1.0x_old": {"ratio": load_ratio, "met": load_ratio >= GOALS["throughput"]},
            "errors==0": {"errors": errors, "met": errors == 0},
            "label<1x_three_singles(every case)": {"ratio_max": label_ratio, "met": label_ratio < GOALS["label"]},
            "label_same_answers": {"met": all(case["same_answers"] for case in label.values())},
        },
        "seconds": time.perf_counter() - started,
    }
    for layout in ("new", "old"):
        for row in results["memory"][layout]["per_process"]:
            row.pop("rss")
            row.pop("pss")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pool.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "pool.png")
    log(f"goals: { {k: v['met'] for k, v in results['goals'].items()} }; wrote {args.out / 'pool.json'} and pool.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
