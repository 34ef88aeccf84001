"""The shared training loop: it learns, keeps the best checkpoint, stops early and resumes exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def collate(rows: Sequence[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Stack rows, plus random noise drawn from the step generator (like MLM masking)."""
    x = torch.stack([r[0] for r in rows])
    return {"x": x + 0.001 * torch.randn(x.shape, generator=gen), "y": torch.stack([r[1] for r in rows])}


def build(work_dir: Path | None, stop_at: int | None = None, **overrides: object) -> TrainLoop:
    """A tiny model with dropout (so per-step seeding matters) and its loop."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(4, 1))
    examples, _ = make_problem()
    x_val = torch.stack([e[0] for e in examples[:16]])
    y_val = torch.stack([e[1] for e in examples[:16]])

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return {"loss": float(torch.nn.functional.mse_loss(m(x_val), y_val))}

    settings: dict[str, object] = {"learning_rate": 0.3, "batch_size": 8, "epochs": 4, "eval_every": 5}
    cfg = LoopConfig(progress=False, **(settings | overrides))  # type: ignore[arg-type]
    return TrainLoop(model, examples, collate, loss_fn, evaluate, cfg, work_dir=work_dir, stop_at_step=stop_at)


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
