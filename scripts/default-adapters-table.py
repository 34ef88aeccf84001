"""Print the packaged default set's results table (docs/default-adapters.md) from its manifests, and plot it.

Every figure comes from the latest version of each task adapter's manifest in src/langadapt/default_adapters:
test metrics, the majority baseline, validation (dev) metrics, the examples used, the bottleneck size and the
training time. The plot draws each adapter's test figure beside its majority baseline, with the issue's goals.

Usage: .venv/bin/python scripts/default-adapters-table.py [--store DIR] [--plot docs/default-adapters/report.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASKS = ("topic", "sentiment", "ner")
METRIC = {"topic": ("macro_f1", "macro-F1"), "sentiment": ("macro_f1", "macro-F1"), "ner": ("f1", "entity F1")}
GOALS = {"topic": ("average", 0.75), "sentiment": ("average", 0.63), "ner": ("every language", 0.60)}


def latest_manifests(store: Path) -> list[dict[str, Any]]:
    """The latest version's manifest of every topic, sentiment and NER adapter (as stored), by task then language."""
    from langadapt.models.store import AdapterStore

    adapters = AdapterStore(store)
    found = [
        json.loads((adapters.path(m.id, m.version) / "manifest.json").read_text(encoding="utf-8"))
        for m in adapters.list()
        if m.task in TASKS
    ]
    return sorted(found, key=lambda m: (TASKS.index(m["task"]), m["language"]))


def row(m: dict[str, Any]) -> list[str]:
    """One table row: what was trained on what, its test figure against the majority, dev figure, cost."""
    key, label = METRIC[m["task"]]
    metrics, extra = m["metrics"], m["extra"]
    examples = extra["examples"]
    minutes = (m["training"]["steps"] * extra["seconds_per_step"] + extra["eval_seconds"]) / 60
    return [
        m["language"],
        m["task"],
        f"`{m['id']}` v{m['version']}",
        str(m["adapter_config"]["config"]["reduction_factor"]),
        f"{examples['train']}/{examples['dev']}/{examples['test']}",
        label,
        f"**{metrics['test'][key]:.3f}**",
        f"{metrics['majority'][key]:.3f}",
        f"{metrics['validation'][key]:.3f}",
        f"{metrics['test']['accuracy']:.3f}",
        f"{metrics['majority']['accuracy']:.3f}",
        str(m["training"]["steps"]),
        f"{minutes:.1f} ({extra.get('torch_threads', '?')})",
    ]


def table(manifests: list[dict[str, Any]]) -> str:
    """The markdown table, then one line per task: the mean and the goal."""
    header = [
        "language", "task", "adapter", "reduction factor", "train/dev/test examples", "metric", "test score",
        "majority", "dev score", "accuracy", "majority accuracy", "train steps", "minutes (torch threads)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|---|---|" + "---:|" * 7]
    lines += ["| " + " | ".join(row(m)) + " |" for m in manifests]
    lines.append("")
    for task in TASKS:
        key, label = METRIC[task]
        scores = [m["metrics"]["test"][key] for m in manifests if m["task"] == task]
        if scores:
            how, goal = GOALS[task]
            met = min(scores) >= goal if how == "every language" else sum(scores) / len(scores) >= goal
            lines.append(
                f"- {task}: mean {label} {sum(scores) / len(scores):.3f}, lowest {min(scores):.3f}; goal {goal:.2f}"
                f" ({how}): {'met' if met else 'missed'}"
            )
    return "\n".join(lines)


def plot(manifests: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per task: each language's test figure, its majority baseline hatched, the goal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(13, 3.8), sharey=True)
    for ax, task in zip(axes, TASKS, strict=True):
        key, label = METRIC[task]
        rows = [m for m in manifests if m["task"] == task]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [m["metrics"]["test"][key] for m in rows], 0.4, label="adapter (test)")
        ax.bar([x + 0.2 for x in xs], [m["metrics"]["majority"][key] for m in rows], 0.4, color="lightgrey",
               hatch="//", label="majority")  # fmt: skip
        how, goal = GOALS[task]
        ax.axhline(goal, color="black", linestyle="--", linewidth=1, label=f"goal ({how})")
        ax.set_xticks(list(xs), [m["language"] for m in rows], rotation=30)
        ax.set_title(f"{task}: {label}")
        ax.set_ylim(0, 1)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Print the table; write the plot when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(__file__).parents[1] / "src/langadapt/default_adapters")
    parser.add_argument("--plot", type=Path, help="PNG to write")
    args = parser.parse_args()
    manifests = latest_manifests(args.store)
    print(table(manifests))
    if args.plot:
        plot(manifests, args.plot)


if __name__ == "__main__":
    main()
