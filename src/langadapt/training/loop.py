"""A small, deterministic, resumable training loop shared by language-adapter and task-adapter training.

Determinism is by construction rather than by restoring RNG state: the batches of epoch `e` come from a
generator seeded with `seed + e` (grouped by length when the examples' lengths are given, see `sampler`), and
every optimisation step `s` reseeds torch with `seed`, `s` before its forward pass (dropout, masking). A run
resumed from a checkpoint at step `s` therefore takes exactly the same steps as an uninterrupted one.
Checkpoints hold only tensors (safetensors) and JSON, never pickle. The loop measures its own throughput
(step time, real tokens per second, padded/real tokens) for the run record.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from langadapt.training.sampler import BatchSampler, RandomBatches, batch_sampler

Batch = Mapping[str, torch.Tensor]
Collate = Callable[[Sequence[Any], torch.Generator], Batch]
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[torch.nn.Module], dict[str, float]]

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "loop_state.json"


@dataclass
class LoopConfig:
    """Optimisation settings; defaults are the paper's task-adapter values."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    max_steps: int | None = None
    eval_every: int = 100
    checkpoint_every: int | None = None
    patience: int | None = None
    metric: str = "loss"
    greater_is_better: bool = False
    max_grad_norm: float = 1.0
    seed: int = 42
    group_by_length: bool = True
    progress: bool = True
    description: str = "training"


@dataclass
class LoopResult:
    """What a finished run reports: the best evaluation, where it happened, and every evaluation."""

    steps: int
    best_step: int
    best_metrics: dict[str, float]
    metric: str
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    throughput: dict[str, float] = field(default_factory=dict)

    @property
    def best_metric(self) -> float:
        """The value of the selection metric at the best evaluation."""
        return self.best_metrics[self.metric]


@dataclass
class Throughput:
    """Running totals of the optimisation steps: time (no evaluation, no checkpoints) and tokens, real and padded."""

    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    real_tokens: int = 0
    padded_tokens: int = 0

    def add(self, seconds: float, cpu_seconds: float, batch: Batch) -> None:
        """Count one step; tokens come from the batch's attention mask when it has one."""
        self.steps += 1
        self.seconds += seconds
        self.cpu_seconds += cpu_seconds
        mask = batch.get("attention_mask")
        if mask is not None:
            self.real_tokens += int(mask.sum())
            self.padded_tokens += mask.numel()

    def figures(self) -> dict[str, float]:
        """Mean step time (wall clock, and CPU time of all the process's threads: on a shared machine the CPU time is
        the comparable one), real tokens per second and padded/real tokens (the last two only when counted)."""
        if not self.steps:
            return {}
        out = {
            "steps_timed": float(self.steps),
            "mean_step_s": self.seconds / self.steps,
            "mean_step_cpu_s": self.cpu_seconds / self.steps,
        }
        if self.real_tokens:
            out |= {
                "tokens_per_s": self.real_tokens / self.seconds,
                "padded_per_real_tokens": self.padded_tokens / self.real_tokens,
            }
        return out


class TrainingInterruptedError(RuntimeError):
    """Raised by `stop_at_step` to simulate a crash after a checkpoint (used by tests and by users' signals)."""


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that require gradients, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable parameters."""
    return {name: p.detach().clone().contiguous() for name, p in trainable_parameters(model).items()}


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable parameters (names must match exactly)."""
    params = trainable_parameters(model)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"trainable state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def announce(message: str) -> None:
    """One line on stderr for a phase of a run (loading, reading, validating, testing), kept clear of any bar."""
    tqdm.write(message, file=sys.stderr)


def step_seed(seed: int, step: int) -> int:
    """The torch seed used for the forward pass of one optimisation step."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


class TrainLoop:
    """Trains the model's trainable parameters with AdamW, linear warm-up/decay, periodic evaluation and resume."""

    def __init__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        collate: Collate,
        loss_fn: LossFn,
        evaluate: EvalFn,
        config: LoopConfig,
        work_dir: Path | None = None,
        stop_at_step: int | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        if not examples:
            raise ValueError("no training examples: check the training file and its text/label columns")
        self.model = model
        self.examples = examples
        self.collate = collate
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.config = config
        self.work_dir = work_dir
        self.stop_at_step = stop_at_step
        self.params = trainable_parameters(model)
        if not self.params:
            raise ValueError("the model has no trainable parameters: was an adapter activated for training?")
        self.steps_per_epoch = math.ceil(len(examples) / config.batch_size)
        self.sampler: BatchSampler = (
            batch_sampler(len(examples), config.batch_size, config.seed, lengths)
            if config.group_by_length
            else RandomBatches(len(examples), config.batch_size, config.seed)
        )
        self._epoch_batches: tuple[int, list[list[int]]] | None = None
        self.throughput = Throughput()
        self.total_steps = config.max_steps or max(1, math.ceil(self.steps_per_epoch * config.epochs))
        self.optimizer = self._build_optimizer()
        warmup = int(self.total_steps * config.warmup_ratio)
        self.lr_factor = self._lr_lambda(warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)

    def _build_optimizer(self) -> torch.optim.AdamW:
        """AdamW with no weight decay on biases and layer norms."""
        decay: list[torch.Tensor] = []
        no_decay: list[torch.Tensor] = []
        for name, p in self.params.items():
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.config.learning_rate)

    def _lr_lambda(self, warmup: int) -> Callable[[int], float]:
        """Linear warm-up to the base rate, then linear decay to zero at the last step."""
        total = self.total_steps

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        return factor

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches (example indices) of one epoch, a pure function of seed and epoch; the last epoch is cached."""
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, self.sampler.batches(epoch))
        return self._epoch_batches[1]

    def batch_at(self, step: int) -> Batch:
        """The batch for a global step."""
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = [self.examples[i] for i in self.batches(epoch)[index]]
        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step))
        return self.collate(rows, gen)

    def run(self) -> LoopResult:
        """Train to the end (or early stop), resuming from the work dir's checkpoint if there is one."""
        cfg = self.config
        state = self._resume()
        step: int = state["step"]
        best_step: int = state["best_step"]
        best_metrics: dict[str, float] = state["best_metrics"]
        history: list[dict[str, float]] = state["history"]
        bad_evals: int = state["bad_evals"]
        best_state = state["best_state"]
        if not best_metrics:  # evaluate the starting point so "best" is never worse than where we began
            best_metrics = self._evaluate(step, history)
            best_state = trainable_state(self.model)
        stopped_early = False
        bar = tqdm(total=self.total_steps, initial=step, desc=cfg.description, disable=not cfg.progress, unit="step")
        while step < self.total_steps:
            loss = self._train_step(step)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step % cfg.eval_every == 0 or step == self.total_steps:
                metrics = self._evaluate(step, history)
                if self._improved(metrics, best_metrics):
                    best_metrics, best_step, best_state, bad_evals = metrics, step, trainable_state(self.model), 0
                else:
                    bad_evals += 1
                bar.set_postfix({"loss": f"{loss:.4f}", f"eval_{cfg.metric}": f"{metrics[cfg.metric]:.4f}"})
                if not cfg.progress:  # without a bar, say each validation on a line of its own
                    announce(self._validation_line(step, loss, metrics, best_metrics))
                if cfg.patience is not None and bad_evals >= cfg.patience:
                    stopped_early = True
            every = cfg.checkpoint_every or cfg.eval_every
            if self.work_dir is not None and (step % every == 0 or stopped_early):
                self._save_checkpoint(step, best_step, best_metrics, history, bad_evals, best_state)
            if self.stop_at_step is not None and step >= self.stop_at_step:
                bar.close()
                raise TrainingInterruptedError(f"stopped at step {step} as asked")
            if stopped_early:
                break
        bar.close()
        return LoopResult(
            step, best_step, best_metrics, cfg.metric, history, stopped_early, best_state, self.throughput.figures()
        )

    def _train_step(self, step: int) -> float:
        """One optimisation step; returns the loss."""
        started, cpu_started = time.perf_counter(), time.process_time()
        self.model.train()
        batch = self.batch_at(step)
        torch.manual_seed(step_seed(self.config.seed, step))
        loss = self.loss_fn(self.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower the learning rate")
        loss.backward()
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        self.throughput.add(time.perf_counter() - started, time.process_time() - cpu_started, batch)
        return value

    def _evaluate(self, step: int, history: list[dict[str, float]]) -> dict[str, float]:
        """Run the evaluation callback in eval mode and record it."""
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate(self.model).items()}
        if self.config.metric not in metrics:
            raise KeyError(f"evaluation returned {sorted(metrics)}, not the selection metric {self.config.metric!r}")
        history.append({"step": float(step), **metrics})
        return metrics

    def _validation_line(self, step: int, loss: float, metrics: Mapping[str, float], best: Mapping[str, float]) -> str:
        """`epoch 2/3  step 20/30  loss 0.41  validation macro_f1 0.52 (best 0.55)`."""
        cfg = self.config
        epoch = f"epoch {step / self.steps_per_epoch:.3g}/{cfg.epochs:g}  " if not cfg.max_steps else ""
        return (
            f"{cfg.description}: {epoch}step {step}/{self.total_steps}  loss {loss:.4f}  "
            f"validation {cfg.metric} {metrics[cfg.metric]:.4f} (best {best[cfg.metric]:.4f})"
        )

    def _improved(self, metrics: Mapping[str, float], best: Mapping[str, float]) -> bool:
        """Whether `metrics` beats `best` on the selection metric."""
        new, old = metrics[self.config.metric], best[self.config.metric]
        return new > old if self.config.greater_is_better else new < old

    def _resume(self) -> dict[str, Any]:
        """Load the checkpoint in the work dir, or a fresh state."""
        fresh: dict[str, Any] = {
            "step": 0,
            "best_step": 0,
            "best_metrics": {},
            "history": [],
            "bad_evals": 0,
            "best_state": {},
        }
        ckpt = self._checkpoint_path()
        if ckpt is None:
            return fresh
        meta = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        meta["config"] = {"order": "random"} | meta["config"]  # checkpoints from before length grouping
        if meta["config"] != self._config_fingerprint():
            raise ValueError(
                f"the checkpoint in {ckpt} was made with other settings ({meta['config']}); "
                "use a new work directory or the same settings to resume"
            )
        load_trainable_state(self.model, load_file(ckpt / "trainable.safetensors"))
        self._load_optimizer(load_file(ckpt / "optimizer.safetensors"), meta["optimizer_steps"])
        self._set_schedule_step(meta["step"])
        self.throughput = Throughput(**meta.get("throughput", {}))
        return {
            "step": meta["step"],
            "best_step": meta["best_step"],
            "best_metrics": meta["best_metrics"],
            "history": meta["history"],
            "bad_evals": meta["bad_evals"],
            "best_state": load_file(ckpt / "best.safetensors"),
        }

    def _set_schedule_step(self, step: int) -> None:
        """Move the learning-rate schedule to `step`, as if that many steps had run."""
        self.scheduler.last_epoch = step
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * self.lr_factor(step)

    def _checkpoint_path(self) -> Path | None:
        """The complete checkpoint to resume from: the current one, or the previous one if a swap was cut short."""
        if self.work_dir is None:
            return None
        for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
            if (self.work_dir / name / STATE_FILE).is_file():
                return self.work_dir / name
        return None

    def _config_fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        keep = ("learning_rate", "batch_size", "weight_decay", "warmup_ratio", "epochs", "max_steps", "seed")
        cfg = asdict(self.config)
        return {k: cfg[k] for k in keep} | {"examples": len(self.examples), "order": self.sampler.describe()}

    def _optimizer_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """AdamW moments as named tensors, plus each parameter's step count."""
        tensors: dict[str, torch.Tensor] = {}
        steps: dict[str, int] = {}
        for name, p in self.params.items():
            st = self.optimizer.state.get(p)
            if not st:
                continue
            tensors[f"{name}::exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"{name}::exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            steps[name] = int(st["step"])
        return tensors, steps

    def _load_optimizer(self, tensors: Mapping[str, torch.Tensor], steps: Mapping[str, int]) -> None:
        """Restore AdamW moments saved by `_optimizer_tensors`."""
        for name, p in self.params.items():
            if name not in steps:
                continue
            self.optimizer.state[p] = {
                "step": torch.tensor(float(steps[name])),
                "exp_avg": tensors[f"{name}::exp_avg"].clone(),
                "exp_avg_sq": tensors[f"{name}::exp_avg_sq"].clone(),
            }

    def _save_checkpoint(
        self,
        step: int,
        best_step: int,
        best_metrics: dict[str, float],
        history: list[dict[str, float]],
        bad_evals: int,
        best_state: dict[str, torch.Tensor],
    ) -> None:
        """Write the checkpoint to a temp folder and swap it in, so a crash never leaves a half checkpoint."""
        assert self.work_dir is not None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.work_dir / f".{CHECKPOINT_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(trainable_state(self.model), tmp / "trainable.safetensors")
        save_file({k: v.contiguous() for k, v in best_state.items()}, tmp / "best.safetensors")
        opt_tensors, opt_steps = self._optimizer_tensors()
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        meta = {
            "step": step,
            "best_step": best_step,
            "best_metrics": best_metrics,
            "history": history,
            "bad_evals": bad_evals,
            "optimizer_steps": opt_steps,
            "config": self._config_fingerprint(),
            "throughput": asdict(self.throughput),
        }
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        final = self.work_dir / CHECKPOINT_DIR
        old = self.work_dir / f".{CHECKPOINT_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
