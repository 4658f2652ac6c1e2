"""Training and loading the prediction transformers of stage 03: the batches, one training run, the
folders runs live in (named by everything that determines them), and bits per true future token.

Stage 03 (`predict_stage`) and the masking study (`masking_study`) both train through this module,
so neither imports the other back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from vpe_lib.config import RunConfig
from vpe_lib.data.loader import batch_source
from vpe_lib.data.masking import make_mask
from vpe_lib.models.code_prior import TablePrior
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.transformer import ARVideoTransformer, TransformerConfig, build_predictor, check_compatible
from vpe_lib.stages.common import write_json
from vpe_lib.stages.seg_protocol import run_key
from vpe_lib.train.device import module_device
from vpe_lib.train.distributed import is_main_process
from vpe_lib.train.loop import TrainConfig, recipe, train

LN2 = math.log(2.0)


def run_folder(out: Path, tokens_key: str, tcfg: TransformerConfig, train_cfg: TrainConfig, *extra) -> Path:
    """out/<key>/: a training run's folder named by everything that determines it (the tokens, hence
    the tokenizer and data; the architecture; the schedule; the masks), so a changed tokenizer or
    recipe trains afresh instead of resuming or scoring a model trained on other codes, and the
    earlier run stays on disk."""
    return out / run_key(tokens_key, tcfg, recipe(train_cfg), *extra)


def predictor_folder(predict_dir: Path, kind: str, tokenizer_seed: int | None = None) -> Path:
    """The folder of the current `kind` predictor of a run (predict/<kind>/latest.json names it), or of
    the one trained on another pretraining seed's tokenizer (predict/<kind>/seed<k>.json)."""
    pointer = predict_dir / kind / ("latest.json" if tokenizer_seed is None else f"seed{tokenizer_seed}.json")
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer} is missing: the {kind!r} predictor has not finished training in "
                                f"{predict_dir.parent}; run notebook 03_predict (or `vpe report`) first")
    return predict_dir / kind / json.loads(pointer.read_text())["folder"]


class TokenBatches:
    """batches(step) -> {"codes", "cond", "mask"}: a pure function of (seed, step), so a resumed run
    sees the same batches. The mask is drawn here (not in the model) because strategies like MGM
    need the data's motion; ratio 0 draws each sample's ratio from MaskGIT's cosine schedule."""

    def __init__(self, tokens: dict[str, np.ndarray], *, batch_size: int, seed: int, masking: str = "random",
                 mask_ratio: float = 0.0, motion: np.ndarray | None = None):
        self.codes, self.cond = tokens["codes"], tokens["cond"]
        self.batch_size, self.seed, self.masking, self.mask_ratio, self.motion = batch_size, seed, masking, mask_ratio, motion
        self.grid = tuple(self.codes.shape[1:])

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.codes), self.batch_size)
        masks = []
        for i in idx:
            ratio = self.mask_ratio or float(np.clip(math.cos(math.pi / 2 * rng.uniform()), 1e-3, 0.999))
            masks.append(make_mask(self.masking, self.grid, ratio, rng,
                                   motion=None if self.motion is None else self.motion[i]))
        return {"codes": torch.from_numpy(self.codes[idx].astype(np.int64)),
                "cond": torch.from_numpy(self.cond[idx].astype(np.int64)),
                "mask": torch.from_numpy(np.stack(masks))}


def predict_step(model, batch):
    # (loss, logs), computed inside forward (DDP). Training clips are the ones the code table was
    # counted on: a table prior leaves each clip's own pairs out (no effect on a model without one)
    return model(batch["codes"], batch["cond"], batch["mask"], exclude_own=True)


def transformer_config(cfg: RunConfig, tokenizer: VQVAE3D, grid: tuple[int, int, int]) -> TransformerConfig:
    p = cfg.predict
    return TransformerConfig(codebook_size=tokenizer.cfg.codebook_size, grid=tuple(grid), cond_frames=p.cond_frames,
                             dim=p.dim, depth=p.depth, heads=p.heads, table_prior=p.table_prior,
                             cond_input=p.cond_input)


def train_predictor(kind: str, tcfg: TransformerConfig, tokens: dict, train_cfg: TrainConfig, out: Path, *,
                    masking: str = "random", mask_ratio: float = 0.0, motion: np.ndarray | None = None,
                    eval_tokens: dict | None = None, desc: str = "", device: torch.device | str = "cpu",
                    loader_workers: int = 0, loader_prefetch: int = 2, prior: TablePrior | None = None):
    """One predictor trained on `device` into `out` (resumes from its checkpoint); its config beside
    the weights (written by rank 0 under torchrun). The initial weights are drawn on the CPU: the
    same on every device. loader_workers > 0: batches (and their masks) built by DataLoader workers.
    prior: the code table a `table_prior` model adds its logits to (required by one)."""
    torch.manual_seed(train_cfg.seed)
    model = build_predictor(kind, tcfg)
    if tcfg.table_prior:
        if prior is None:
            raise ValueError("a table_prior predictor needs the code table (prior=TablePrior(...))")
        model.prior.fit(prior.counts, prior.unigram, prior.eps)
    model = model.to(device)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "transformer.json", {"kind": kind, **dataclasses.asdict(tcfg)})
    batches = TokenBatches(tokens, batch_size=train_cfg.batch_size, seed=train_cfg.seed, masking=masking,
                           mask_ratio=mask_ratio, motion=motion)
    eval_fn = None
    if eval_tokens is not None:
        eval_fn = lambda m: {"bits_per_token": float(future_bits(m, eval_tokens).mean())}  # noqa: E731
    with batch_source(batches, workers=loader_workers, prefetch_factor=loader_prefetch, device=device,
                      stop=train_cfg.steps * train_cfg.grad_accum) as batches:
        return train(model, predict_step, batches, train_cfg, out, eval_fn=eval_fn, desc=desc or kind)


def learning_curve(folder: Path) -> list[dict[str, float]]:
    """A predictor run's validation curve: step, bits per token, and the training wall-clock seconds
    at that step (interpolated between the logged steps; evaluation time excluded when logs allow)."""
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    clock = sorted((h["step"], h["elapsed_s"]) for h in history if "elapsed_s" in h)
    evals = [h for h in history if "eval/bits_per_token" in h]
    if not clock:
        return [{"step": h["step"], "elapsed_s": float("nan"), "bits_per_token": h["eval/bits_per_token"]} for h in evals]
    steps, secs = zip(*([(0, 0.0)] + clock))
    return [{"step": h["step"], "elapsed_s": float(np.interp(h["step"], steps, secs)),
             "bits_per_token": h["eval/bits_per_token"]} for h in evals]


def load_predictor(path: Path, *, codebook_size: int, grid: tuple[int, int, int], device: torch.device | str = "cpu"):
    """A trained predictor from out/<kind>/ (transformer.json + final.pt), on `device`, in eval mode;
    refused when it was trained on another tokenizer's codes (codebook size or token grid)."""
    spec = json.loads((path / "transformer.json").read_text())
    kind = spec.pop("kind")
    spec["grid"] = tuple(spec["grid"])
    tcfg = TransformerConfig(**spec)
    check_compatible(tcfg, codebook_size=codebook_size, grid=tuple(grid), source=str(path))
    model = build_predictor(kind, tcfg)
    model.load_state_dict(torch.load(path / "final.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()


@torch.no_grad()
def future_bits(model, tokens: dict[str, np.ndarray], *, batch_size: int = 32) -> np.ndarray:
    """Bits per true future token, (N, t - cond_frames, h, w): the masked model's one-pass marginals
    given the condition; the AR model's teacher-forced conditionals (a joint likelihood's factors)."""
    was = model.training
    model.eval()
    device = module_device(model)
    out = []
    codes, cond = tokens["codes"].astype(np.int64), tokens["cond"].astype(np.int64)
    cf = cond.shape[1]
    for i in range(0, len(codes), batch_size):
        c = torch.from_numpy(codes[i:i + batch_size]).to(device)
        k = torch.from_numpy(cond[i:i + batch_size]).to(device)
        if isinstance(model, ARVideoTransformer):
            logp = model.future_log_probs(c, k)
        else:
            logp = model.future_log_probs(k)
        true = c[:, cf:]
        out.append((-logp.gather(-1, true.unsqueeze(-1)).squeeze(-1) / LN2).cpu().numpy())
    model.train(was)
    return np.concatenate(out)
