"""The segmentation study's grid: the rows in the order they run, which budgets search the learning rate, and
what each row and the convergence check cost (for the heads stage's ETA)."""

from __future__ import annotations

from vpe_lib.config import SegConfig
from vpe_lib.models.encoders import PREDICTOR_ENCODERS
from vpe_lib.stages.seg_protocol import Method


def eta_kind(method: Method) -> str:
    """What an update of this row costs like, for the heads stage's ETA: the UNet's, or a head's
    (by type) on a fine-tuned encoder or on frozen features. Measured in the study: a frozen conv head's
    update ~4x a linear probe's, a fine-tuned encoder's ~3x a frozen conv head's."""
    if method.encoder == "unet":
        return "unet"
    return f"{method.mode}/{method.head}"


def row_work(method: Method, pct: float, s: SegConfig, search: bool | None = None) -> tuple[str, int]:
    """(kind, updates) of one row of the grid: the learning-rate search on the first seed (at a
    budget that searches), then the other seeds at the chosen rate."""
    tries = len(s.lr_grid) if (searches_lr(s, pct) if search is None else search) else 1
    return eta_kind(method), s.steps_at(pct) * (tries + len(s.seeds) - 1)


def grid_plan(methods: list[Method], ablations: list[Method], s: SegConfig) -> list[tuple[Method, float]]:
    """The rows of the grid in the order they run: each method's rows at the budgets that search the learning
    rate first (the others reuse its choice), then the ablations at the largest budget. The heads other than
    the main one (heads[0]) run only at seg.head_comparison_pcts, and the fine-tuned prediction transformers
    only at seg.finetune_predictor_pcts, when they are set; such a method with no searched budget among
    them searches the learning rate at its first row."""
    largest = max(s.label_pcts)
    order = sorted(s.label_pcts, key=lambda q: not searches_lr(s, q))

    def among(pcts: tuple[float, ...]) -> list[float]:
        return [q for q in order if any(abs(q - c) < 1e-9 for c in pcts)]

    def budgets(m: Method) -> list[float]:
        if m.encoder in PREDICTOR_ENCODERS and m.mode == "finetuned" and s.finetune_predictor_pcts:
            return among(s.finetune_predictor_pcts)
        if m.encoder != "unet" and m.head != s.heads[0] and s.head_comparison_pcts:
            return among(s.head_comparison_pcts)
        return order

    return [(m, pct) for m in methods for pct in budgets(m)] + [(m, largest) for m in ablations]


def searches_lr(s: SegConfig, pct: float) -> bool:
    """Whether the learning rate is searched at this label budget (seg.lr_search_pcts; empty: at every
    budget). The other budgets take the rate the method chose where it was searched."""
    return not s.lr_search_pcts or any(abs(pct - q) < 1e-9 for q in s.lr_search_pcts)


def convergence_work(s: SegConfig, methods: list[Method]) -> list[tuple[str, int]]:
    """(kind, updates) of the convergence check's methods (seg.convergence_*), none when it is off."""
    if not s.convergence_steps:
        return []
    by_name = {m.name: m for m in methods}
    n_seeds = len(s.seeds[:s.convergence_seeds])
    return [(eta_kind(by_name[n]), s.convergence_steps * n_seeds) for n in s.convergence_methods if n in by_name]
