"""The shared training loop: it learns, keeps the best checkpoint, stops early and resumes exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from langadapt.training.loop import LoopConfig, TrainingInterruptedError, TrainLoop, trainable_state


def make_problem(n: int = 64) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """A noisy linear regression problem with a fixed true weight."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, generator=gen)
    xs = torch.randn(n, 4, generator=gen)
    ys = xs @ w + 0.01 * torch.randn(n, 1, generator=gen)
    return [(xs[i], ys[i]) for i in range(n)], w


LENGTHS = [1 + (7 * i) % 13 for i in range(64)]  # token counts of the 64 examples, 1 to 13


def collate(rows: Sequence[tuple[Any, ...]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Stack rows, plus random noise drawn from the step generator (like MLM masking); rows that carry a token
    count also get the attention mask a padded batch of that many tokens would have."""
    x = torch.stack([r[0] for r in rows])
    batch = {"x": x + 0.001 * torch.randn(x.shape, generator=gen), "y": torch.stack([r[1] for r in rows])}
    if len(rows[0]) == 3:
        width = max(r[2] for r in rows)
        batch["attention_mask"] = torch.tensor([[1] * r[2] + [0] * (width - r[2]) for r in rows])
    return batch


def build(
    work_dir: Path | None, stop_at: int | None = None, lengths: list[int] | None = None, **overrides: object
) -> TrainLoop:
    """A tiny model with dropout (so per-step seeding matters) and its loop; `lengths` tags the examples."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(4, 1))
    examples: list[Any] = make_problem()[0]
    if lengths is not None:
        examples = [(*e, n) for e, n in zip(examples, lengths, strict=True)]
    x_val = torch.stack([e[0] for e in examples[:16]])
    y_val = torch.stack([e[1] for e in examples[:16]])

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return {"loss": float(torch.nn.functional.mse_loss(m(x_val), y_val))}

    settings: dict[str, object] = {"learning_rate": 0.3, "batch_size": 8, "epochs": 4, "eval_every": 5}
    cfg = LoopConfig(progress=False, **(settings | overrides))  # type: ignore[arg-type]
    return TrainLoop(
        model, examples, collate, loss_fn, evaluate, cfg, work_dir=work_dir, stop_at_step=stop_at, lengths=lengths
    )


def test_loss_goes_down_and_best_is_kept() -> None:
    loop = build(None)
    result = loop.run()
    assert result.steps == 32
    assert result.history[0]["loss"] > 10 * result.best_metric
    assert result.best_metric == min(h["loss"] for h in result.history)
    assert result.best_step == int(next(h["step"] for h in result.history if h["loss"] == result.best_metric))


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference = build(tmp_path / "a").run()
    loop_full = build(tmp_path / "b")
    loop_full.run()
    reference_final = trainable_state(loop_full.model)

    with pytest.raises(TrainingInterruptedError):
        build(tmp_path / "c", stop_at=15).run()
    resumed_loop = build(tmp_path / "c")
    resumed = resumed_loop.run()

    assert resumed.steps == reference.steps
    assert resumed.history == reference.history
    for name, tensor in trainable_state(resumed_loop.model).items():
        assert torch.equal(tensor, reference_final[name]), name
    for name, tensor in resumed.best_state.items():
        assert torch.equal(tensor, reference.best_state[name]), name


def test_changed_settings_refuse_to_resume(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterruptedError):
        build(tmp_path, stop_at=5).run()
    with pytest.raises(ValueError, match="other settings"):
        build(tmp_path, seed=7).run()


def test_early_stopping_stops_when_metric_does_not_improve() -> None:
    result = build(None, learning_rate=0.0, patience=2).run()
    assert result.stopped_early
    assert result.steps == 10
    assert result.best_step == 0


def test_length_grouped_run_resumes_mid_epoch_exactly(tmp_path: Path) -> None:
    reference_loop = build(tmp_path / "a", lengths=LENGTHS)
    reference = reference_loop.run()
    with pytest.raises(TrainingInterruptedError):
        build(tmp_path / "b", stop_at=13, lengths=LENGTHS).run()  # 8 steps an epoch: the checkpoint is at step 10
    resumed_loop = build(tmp_path / "b", lengths=LENGTHS)
    resumed = resumed_loop.run()

    assert resumed.history == reference.history
    for name, tensor in trainable_state(resumed_loop.model).items():
        assert torch.equal(tensor, trainable_state(reference_loop.model)[name]), name
    assert reference_loop.batches(1) != build(None).batches(1)  # the lengths changed the order


def test_throughput_counts_padding_and_grouping_reduces_it() -> None:
    grouped = build(None, lengths=LENGTHS).run().throughput
    shuffled = build(None, lengths=LENGTHS, group_by_length=False).run().throughput
    assert grouped["steps_timed"] == 32 and grouped["mean_step_s"] > 0 and grouped["tokens_per_s"] > 0
    assert 1.0 <= grouped["padded_per_real_tokens"] < 1.3 < shuffled["padded_per_real_tokens"]
    assert grouped["mean_step_cpu_s"] > 0
    assert set(build(None).run().throughput) == {"steps_timed", "mean_step_s", "mean_step_cpu_s"}  # no token counts


def test_a_checkpoint_from_before_length_grouping_resumes_only_in_random_order(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterruptedError):
        build(tmp_path, stop_at=5, lengths=LENGTHS, group_by_length=False).run()
    state_file = tmp_path / "checkpoint" / "loop_state.json"
    meta = json.loads(state_file.read_text(encoding="utf-8"))
    del meta["config"]["order"], meta["throughput"]  # what older versions wrote
    state_file.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="other settings"):
        build(tmp_path, lengths=LENGTHS).run()
    assert build(tmp_path, lengths=LENGTHS, group_by_length=False).run().steps == 32
