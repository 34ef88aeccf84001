"""Default learning rates of task adapters per base model: the measured recipe where there is one, else the paper's.

The paper trains task adapters at 1e-4. On the embedded multilingual-e5-small that rate underfits within CPU
budgets: SIB-200 Hausa topic stays at the majority class after 10 epochs (macro-F1 0.06), while 1e-3 for the
adapter and 1e-2 for the head reach 0.64 in 3 epochs (docs/default-adapters.md); users reported the same for
Marathi sentiment (macro-F1 0.375 against 0.671, issue 16). Other bases keep the paper's rate until a recipe is
measured for them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL_FINETUNE", "MEASURED", "PAPER", "Recipe", "rate", "recipe_for", "recipes_help"]


@dataclass(frozen=True)
class Recipe:
    """Peak learning rates for the adapter (or the whole model) and the head, and where they come from."""

    learning_rate: float
    head_learning_rate: float | None  # None: the same as `learning_rate`
    source: str


PAPER = Recipe(1e-4, None, "the paper's task-adapter rate (Gurgurov et al., 2025)")
FULL_FINETUNE = Recipe(2e-5, None, "the usual full fine-tuning rate for base-size encoders")
MEASURED: dict[str, Recipe] = {
    "embedded": Recipe(1e-3, 1e-2, "measured on the embedded multilingual-e5-small (docs/default-adapters.md)"),
}


def recipe_for(base_id: str, full_finetune: bool = False) -> Recipe:
    """The default rates for a base model: measured for it, else the paper's (full fine-tuning: 2e-5)."""
    if full_finetune:
        return FULL_FINETUNE
    return MEASURED.get(base_id, PAPER)


def rate(value: float) -> str:
    """A learning rate as people write it: 1e-3, 2e-5."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}" if float(f"{mantissa}e{exponent}") == value else f"{value:g}"


def recipes_help() -> str:
    """The defaults per base model, for `--lr` help."""
    measured = "; ".join(
        f"{base} {rate(r.learning_rate)}, head {rate(r.head_learning_rate or r.learning_rate)}"
        for base, r in MEASURED.items()
    )
    return (
        f"measured per base model: {measured} (docs/default-adapters.md); other bases the paper's "
        f"{rate(PAPER.learning_rate)}; full fine-tuning {rate(FULL_FINETUNE.learning_rate)}"
    )
