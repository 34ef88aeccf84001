"""Soak: mixed load at ~80 % of measured capacity for minutes, with hot-loads and pin/unload under it (issue 12).

    .venv/bin/python bench/soak.py                 # 10 minutes of load, writes bench/results/soak.{json,png}
    .venv/bin/python bench/soak.py --minutes 30    # longer
    .venv/bin/python bench/soak.py --quick         # about a minute of load: a check of the script, not a figure
                                                   # (writes bench/results/soak-quick.{json,png})

One `langadapt serve` as `make serve` starts it (the embedded default base, the packaged default adapters, an
empty writable store; an admin key configured), on loopback. Steps:

1. Warm-up requests: one per language x task.
2. Capacity: 8 closed-loop clients send the mixed requests as fast as answers come for a while: requests/s.
3. Soak: 8 clients paced together at 80 % of that rate, each request one of ner, sentiment, topic or
   /v1/label in one of five languages (one or two sentences). Every 10 s a new version of one of the 15
   default task adapters (its head weights nudged, so the files differ) is published through the admin
   route and hot-loaded; every 30 s one id is pinned and the one pinned before is unloaded. Every 2 s the
   RSS and PSS of the whole server process tree is read from /proc.
4. Per window (10 s; 5 s with --quick): requests/s, statuses, p50/p99 latency; after the warm-up (the first
   20 % of the soak), RSS growth = median RSS of the last 10 % over median RSS of the 10 % right after the
   warm-up, minus one.

It asserts nothing; it reports whether the goals hold: RSS growth after warm-up <= 2 %, and no failed request
other than a 429 (a 5xx, a 4xx other than 429, a dropped connection or a timeout all count as failures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pool import LANGUAGES, TASKS, sentences, tree_memory
from serve import free_port, log, serving

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLIENTS = 8
LOAD_FRACTION = 0.8
HOT_LOAD_S = 10.0
PIN_S = 30.0
SAMPLE_S = 2.0
WARM_UP_FRACTION = 0.2
GOALS = {"rss_growth": 0.02, "failed": 0}
ADMIN_KEY = "soak-admin-key-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_KEY}
ROUTES = (*TASKS, "label")


@dataclass
class Outcome:
    """One request of the soak: when it was sent (seconds since the soak began), what, and how it ended."""

    sent: float
    route: str
    language: str
    seconds: float | None = None
    status: int | None = None
    error: str | None = None
    served: list[str] = field(default_factory=list)  # adapter versions that answered (`id@vN source`)


# ------------------------------------------------------------------------------------------ server


@contextlib.contextmanager
def server(tmp: Path) -> Iterator[tuple[str, int, Path]]:
    """`langadapt serve` as `make serve` starts it, plus a store, runtime dir and admin key; (url, pid, store)."""
    store, port = tmp / "store", free_port()
    store.mkdir()
    flags = ["--host", "127.0.0.1", "--port", str(port), "--store", str(store), "--runtime-dir", str(tmp / "rt")]
    env = {**os.environ, "LANGADAPT_ADMIN_KEYS": ADMIN_KEY}
    script = Path(sys.executable).parent / "langadapt"
    command = ([str(script), "serve"] if script.exists() else [sys.executable, "-m", "langadapt.serve"]) + flags
    with serving("soak", command, env, port, tmp / "server.log") as (url, pid, _):
        yield url, pid, store


# ------------------------------------------------------------------------------------------ requests


def request_mix(texts: dict[str, list[str]]) -> list[tuple[str, str, list[str]]]:
    """(route, language, texts): every route in every language, with one or two sentences."""
    out = []
    for i in range(len(ROUTES) * len(LANGUAGES) * 4):
        language = LANGUAGES[(i // len(ROUTES)) % len(LANGUAGES)]
        pool = texts[language]
        n = 1 + (i // (len(ROUTES) * len(LANGUAGES))) % 2
        out.append((ROUTES[i % len(ROUTES)], language, [pool[(3 * i + k) % len(pool)] for k in range(n)]))
    return out


def send(client: Any, request: tuple[str, str, list[str]], origin: float) -> Outcome:
    """Send one request and record how it ended."""
    import httpx

    route, language, texts = request
    outcome = Outcome(time.perf_counter() - origin, route, language)
    started = time.perf_counter()
    try:
        response = client.post(f"/v1/{route}", json={"lang": language, "texts": texts})
    except httpx.HTTPError as err:
        outcome.error = type(err).__name__
        return outcome
    outcome.seconds, outcome.status = time.perf_counter() - started, response.status_code
    if response.status_code == 200:
        for result in response.json()["results"]:
            stacks = [r["stack"] for r in result.values() if r] if route == "label" else [result["stack"]]
            outcome.served += [
                f"{s['task_adapter']['id']}@v{s['task_adapter']['version']} {s['task_adapter']['source']}"
                for s in stacks
            ]
    else:
        outcome.error = response.json().get("error", "?") if "json" in response.headers.get("content-type", "") else "?"
    return outcome


def capacity(url: str, mix: list[tuple[str, str, list[str]]], seconds: float) -> dict[str, Any]:
    """Closed loop: CLIENTS clients sending as fast as answers come, for `seconds`; answered requests per second."""
    import httpx

    outcomes: list[Outcome] = []
    origin = time.perf_counter()
    lock = threading.Lock()

    def loop(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            i = k
            while time.perf_counter() - origin < seconds:
                outcome = send(client, mix[i % len(mix)], origin)
                i += CLIENTS
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - origin
    ok = [o for o in outcomes if o.status == 200]
    latencies = np.array([o.seconds for o in ok]) * 1000
    return {
        "seconds": elapsed,
        "requests": len(outcomes),
        "ok": len(ok),
        "rps": len(ok) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if len(ok) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(ok) else None,
        "statuses": dict(Counter(str(o.status or o.error) for o in outcomes)),
    }


# ------------------------------------------------------------------------------------------ soak


class Soak:
    """Paced clients, the admin operator and the memory sampler, for `seconds` from one origin."""

    def __init__(self, url: str, pid: int, mix: list[tuple[str, str, list[str]]], rate: float, tmp: Path) -> None:
        self.url, self.pid, self.mix, self.rate, self.tmp = url, pid, mix, rate, tmp
        self.outcomes: list[Outcome] = []
        self.memory: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.origin = 0.0

    def run(self, seconds: float) -> None:
        self.origin = time.perf_counter()
        threads = [threading.Thread(target=self._client, args=(k,)) for k in range(CLIENTS)]
        threads += [threading.Thread(target=self._operator), threading.Thread(target=self._sampler)]
        for thread in threads:
            thread.start()
        self.stop.wait(seconds)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=180)

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def _client(self, k: int) -> None:
        """Client k of CLIENTS sends at rate / CLIENTS, staggered, catching up (not bursting) when it falls behind."""
        import httpx

        interval = CLIENTS / self.rate
        due = k * interval / CLIENTS
        with httpx.Client(base_url=self.url, timeout=120) as client:
            i = k
            while not self.stop.is_set():
                wait = due - self.now()
                if wait > 0 and self.stop.wait(wait):
                    return
                due = max(due + interval, self.now() - interval)  # a late client does not send a backlog
                outcome = send(client, self.mix[i % len(self.mix)], self.origin)
                i += CLIENTS
                with self.lock:
                    self.outcomes.append(outcome)

    def _sampler(self) -> None:
        while not self.stop.is_set():
            memory = tree_memory(self.pid)
            self.memory.append(
                {
                    "t": self.now(),
                    "rss_mib": memory["rss_bytes"] / 2**20,
                    "pss_mib": memory["pss_bytes"] / 2**20,
                    "processes": memory["processes"],
                }
            )
            self.stop.wait(SAMPLE_S)

    def _operator(self) -> None:
        """A hot-load of a new adapter version every HOT_LOAD_S, a pin and an unload every PIN_S."""
        import httpx

        ids = [f"{language}-{task}" for language in LANGUAGES for task in TASKS]
        loads = pins = 0
        with httpx.Client(base_url=self.url, timeout=120, headers=ADMIN) as admin:
            while not self.stop.wait(max(0.0, (loads + 1) * HOT_LOAD_S - self.now())):
                loads += 1
                self._publish(admin, ids[loads % len(ids)], loads)
                if self.now() >= (pins + 1) * PIN_S:
                    pins += 1
                    self._admin(admin, "pin", ids[(7 * pins) % len(ids)])
                    if pins > 1:
                        self._admin(admin, "unload", ids[(7 * (pins - 1)) % len(ids)])

    def _publish(self, admin: Any, ident: str, k: int) -> None:
        """Publish the packaged default `ident` with its head weights nudged (new files: a new version)."""
        from safetensors.numpy import load_file, save_file

        from langadapt.models.store_view import packaged_defaults_dir

        defaults = packaged_defaults_dir()
        assert defaults is not None, "bench/soak.py needs the packaged default adapters"
        source = next((defaults / "adapters" / ident).glob("[0-9]*"))
        folder = self.tmp / f"publish-{k}"
        shutil.copytree(source, folder)
        head = folder / "model_head.safetensors"
        tensors = load_file(head)
        save_file({n: (t + np.float32(1e-4 * k)).astype(t.dtype) for n, t in tensors.items()}, head)
        self._admin(admin, "publish", ident, {"path": str(folder), "wait_s": 60})

    def _admin(self, admin: Any, op: str, ident: str, body: dict[str, Any] | None = None) -> None:
        started, at = time.perf_counter(), self.now()
        try:
            if op == "publish":
                response = admin.post("/v1/adapters/load", json=body)
            elif op == "unload":
                response = admin.delete(f"/v1/adapters/{ident}", params={"wait_s": 60})
            else:
                response = admin.post(f"/v1/adapters/{ident}/{op}", params={"wait_s": 60})
            data = response.json()
            event = {"status": response.status_code, "applied": data.get("applied"), "error": data.get("error")}
            if data.get("published"):
                event["version"] = data["published"]["version"]
        except Exception as err:  # recorded, reported as a failed admin operation
            event = {"status": None, "error": repr(err)[:200]}
        self.events.append({"t": at, "op": op, "id": ident, "seconds": time.perf_counter() - started, **event})


# ------------------------------------------------------------------------------------------ figures


def windows(outcomes: list[Outcome], seconds: float, width: float) -> list[dict[str, Any]]:
    """Per window of `width` seconds (by send time): requests/s, statuses, p50/p99 of the 200s."""
    out = []
    for start in np.arange(0.0, seconds, width):
        inside = [o for o in outcomes if start <= o.sent < start + width]
        ok = np.array([o.seconds for o in inside if o.status == 200]) * 1000
        out.append(
            {
                "start_s": float(start),
                "requests": len(inside),
                "rps": len(ok) / width,
                "statuses": dict(Counter(str(o.status or o.error) for o in inside)),
                "p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
                "p99_ms": float(np.percentile(ok, 99)) if len(ok) else None,
            }
        )
    return out


def rss_growth(memory: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Median RSS of the last 10 % of the soak against the 10 % right after the warm-up."""
    warm = WARM_UP_FRACTION * seconds
    base = [m["rss_mib"] for m in memory if warm <= m["t"] < warm + 0.1 * seconds]
    end = [m["rss_mib"] for m in memory if m["t"] >= 0.9 * seconds]
    after = [m["rss_mib"] for m in memory if m["t"] >= warm]
    if not base or not end:
        return {"baseline_mib": None, "end_mib": None, "growth": None, "max_after_warm_up_mib": None}
    baseline, last = float(np.median(base)), float(np.median(end))
    return {
        "warm_up_s": warm,
        "baseline_mib": baseline,
        "end_mib": last,
        "growth": last / baseline - 1,
        "max_after_warm_up_mib": max(after),
        "pss_start_mib": memory[0]["pss_mib"],
        "pss_end_mib": memory[-1]["pss_mib"],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """RSS/PSS over time with the admin operations, p50/p99 per window, requests/s by status per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharex=True)
    memory, rows, events = results["memory"], results["windows"], results["events"]
    warm = results["rss"].get("warm_up_s") or 0
    ax = axes[0]
    ax.plot([m["t"] for m in memory], [m["rss_mib"] for m in memory], label="RSS (process tree)")
    ax.plot([m["t"] for m in memory], [m["pss_mib"] for m in memory], label="PSS (process tree)")
    for kind, colour in (("publish", "tab:green"), ("pin", "tab:purple"), ("unload", "tab:red")):
        times = [e["t"] for e in events if e["op"] == kind]
        ax.vlines(times, 0, 1, transform=ax.get_xaxis_transform(), colors=colour, alpha=0.25, label=kind)
    ax.axvspan(0, warm, color="0.9", label="warm-up")
    growth = results["rss"]["growth"]
    ax.set_title(f"Memory: RSS growth after warm-up {growth * 100:+.2f} % (goal ≤ 2 %)" if growth is not None else "")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=8, loc="lower right", ncol=3)
    starts = [r["start_s"] + results["window_s"] / 2 for r in rows]
    ax = axes[1]
    ax.plot(starts, [r["p50_ms"] for r in rows], "o-", label="p50")
    ax.plot(starts, [r["p99_ms"] for r in rows], "o-", label="p99")
    ax.set_ylabel("latency of 200s (ms)")
    ax.legend(fontsize=8)
    ax = axes[2]
    width = results["window_s"]
    ok = [r["statuses"].get("200", 0) / width for r in rows]
    limited = [r["statuses"].get("429", 0) / width for r in rows]
    other = [(r["requests"] - r["statuses"].get("200", 0) - r["statuses"].get("429", 0)) / width for r in rows]
    ax.bar(starts, ok, width * 0.9, label="200")
    ax.bar(starts, limited, width * 0.9, bottom=ok, label="429")
    ax.bar(starts, other, width * 0.9, bottom=np.add(ok, limited), label="failed", color="tab:red")
    ax.axhline(results["target_rps"], ls="--", c="k", lw=0.8, label=f"target {results['target_rps']:.1f}/s")
    ax.set_ylabel("requests / s")
    ax.set_xlabel("seconds into the soak")
    ax.set_title(f"{results['failed']} failed requests other than 429 (goal 0) of {results['requests']}")
    ax.legend(fontsize=8, ncol=4)
    fig.suptitle(
        f"Soak: {results['minutes']:g} min at {LOAD_FRACTION:.0%} of {results['capacity']['rps']:.1f} req/s, "
        f"{CLIENTS} clients, hot-load every {HOT_LOAD_S:.0f} s, pin/unload every {PIN_S:.0f} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of soak load (default 10)")
    parser.add_argument("--quick", action="store_true", help="about one minute of load, shorter capacity run")
    parser.add_argument("--capacity-s", type=float, default=None, help="seconds of the capacity run (60; quick 15)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON, PNG beside it (results/soak.json; "
        "--quick: results/soak-quick.json, so a check never stands in for the figures)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / ("soak-quick.json" if args.quick else "soak.json")
    minutes = 1.0 if args.quick else args.minutes
    seconds, window_s = minutes * 60, 5.0 if args.quick else 10.0
    capacity_s = args.capacity_s or (15.0 if args.quick else 60.0)
    texts, source = sentences(10)
    mix = request_mix(texts)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder, server(Path(folder)) as (url, pid, _):
        import httpx

        with httpx.Client(base_url=url, timeout=300) as client:
            for language in LANGUAGES:
                for route in ROUTES:
                    client.post(f"/v1/{route}", json={"lang": language, "texts": texts[language][:1]})
        measured = capacity(url, mix, capacity_s)
        target = LOAD_FRACTION * measured["rps"]
        log(f"capacity {measured['rps']:.2f} req/s (p50 {measured['p50_ms']:.0f} ms); soak at {target:.2f} req/s")
        soak = Soak(url, pid, mix, target, Path(folder))
        soak.run(seconds)
        log(f"soak done: {len(soak.outcomes)} requests, {len(soak.events)} admin operations")
    outcomes = soak.outcomes
    statuses = Counter(str(o.status or o.error) for o in outcomes)
    failed = [o for o in outcomes if o.status not in (200, 429)]
    ok = np.array([o.seconds for o in outcomes if o.status == 200]) * 1000
    rss = rss_growth(soak.memory, seconds)
    admin_failed = [e for e in soak.events if e["status"] != 200]
    served = Counter(v for o in outcomes for v in o.served)
    results: dict[str, Any] = {
        "minutes": minutes,
        "quick": args.quick,
        "window_s": window_s,
        "texts": source,
        "clients": CLIENTS,
        "capacity": measured,
        "target_rps": target,
        "achieved_rps": len(ok) / seconds,
        "requests": len(outcomes),
        "statuses": dict(statuses),
        "failed": len(failed),
        "failed_examples": [asdict(o) for o in failed[:10]],
        "p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
        "p99_ms": float(np.percentile(ok, 99)) if len(ok) else None,
        "rss": rss,
        "goals": {
            "rss_growth_le_2pct": rss["growth"] is not None and rss["growth"] <= GOALS["rss_growth"],
            "no_failed_requests_but_429": len(failed) == GOALS["failed"],
        },
        "admin": {
            "operations": dict(Counter(e["op"] for e in soak.events)),
            "failed": admin_failed[:10],
            "publish_seconds_p50": float(np.median([e["seconds"] for e in soak.events if e["op"] == "publish"]))
            if any(e["op"] == "publish" for e in soak.events)
            else None,
            "publish_seconds_max": max((e["seconds"] for e in soak.events if e["op"] == "publish"), default=None),
            "store_versions_served": len([v for v in served if " store" in v]),
        },
        "windows": windows(outcomes, seconds, window_s),
        "memory": soak.memory,
        "events": soak.events,
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "loadavg_end": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))
    growth = f"{rss['growth'] * 100:+.2f} %" if rss["growth"] is not None else "n/a"
    print(
        f"soak {minutes:g} min: {len(outcomes)} requests at {results['achieved_rps']:.2f}/s (target {target:.2f}), "
        f"statuses {dict(statuses)}, p50 {results['p50_ms']} ms, p99 {results['p99_ms']} ms\n"
        f"RSS {rss['baseline_mib']} -> {rss['end_mib']} MiB after warm-up: growth {growth} "
        f"({'met' if results['goals']['rss_growth_le_2pct'] else 'NOT met'}: goal <= 2 %)\n"
        f"failed requests other than 429: {len(failed)} ({'met' if not failed else 'NOT met'}: goal 0); "
        f"admin operations {results['admin']['operations']}, {len(admin_failed)} failed\n"
        f"wrote {args.out} and {args.out.with_suffix('.png')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
