"""The pretrained and random-weight encoders of a run, as the heads and latents stages both build them:
the random-weight draw of a seed, the prediction transformers (and their twins) on the tokenizer whose codes
they were trained on. Here, below both stages, so the latents stage no longer imports the heads stage."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vpe_lib.models.encoders import PredictorEncoder
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.transformer import build_predictor
from vpe_lib.stages.common import require
from vpe_lib.stages.predictor_training import load_predictor, predictor_folder
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.stages.seg_protocol import file_digest


def load_predictor_encoder(run_dir: Path, encoder: str, seed: int, *, clip_frames: int,
                           device: torch.device | str = "cpu", tokenizer_seed: int | None = None
                           ) -> tuple[PredictorEncoder, str]:
    """A prediction transformer of stage 03 on the main tokenizer (whose codes it was trained on),
    or the same architecture with random weights drawn from the seed (on the CPU, so the draw does
    not depend on `device`); with an identity for caches. The tokenizer moves to `device` whole: its
    quantizer is not a submodule of the encoder, so `encoder.to(device)` alone would leave it behind.
    tokenizer_seed: the transformer trained on that extra pretraining seed's tokenizer, with it
    (`predict.per_seed`; the random twin keeps that tokenizer too)."""
    kind = encoder.removeprefix("random_")
    if tokenizer_seed is None:
        folder = predictor_folder(require(run_dir, "predict", f"{kind}/latest.json"), kind)
        tok = load_tokenizer(run_dir).channels_last_()
    else:
        pointer = require(run_dir, "predict", f"{kind}/seed{tokenizer_seed}.json") / f"{kind}/seed{tokenizer_seed}.json"
        folder = predictor_folder(Path(run_dir) / "predict", kind, tokenizer_seed)
        tok = load_tokenizer(run_dir, weights=json.loads(pointer.read_text())["tokenizer"]).channels_last_()
    model = load_predictor(folder, codebook_size=tok.cfg.codebook_size, grid=tuple(
        json.loads((folder / "transformer.json").read_text())["grid"]))
    if encoder.startswith("random_"):
        torch.manual_seed(10_000 + seed)
        model = build_predictor(kind, model.cfg).eval()
        ident = f"{encoder}{seed}" + ("" if tokenizer_seed is None else f"@{file_digest(folder / 'final.pt')}")
    else:
        ident = f"{kind}:{file_digest(folder / 'final.pt')}"
    return PredictorEncoder(tok.to(device), model.to(device), clip_frames=clip_frames), ident


def random_tokenizer(tok_cfg, seed: int) -> VQVAE3D:
    """The random-weight control of a seed (the draw varies with the seed; drawn on the CPU, so it is
    the same on every device): what the heads and latents stages both compare against."""
    torch.manual_seed(10_000 + seed)
    return VQVAE3D(cfg=tok_cfg).eval()


def predictor_available(run_dir: Path, encoder: str) -> bool:
    """Whether stage 03 trained the transformer behind a predictor encoder (masked, random_ar, ...)."""
    return (Path(run_dir) / "predict" / encoder.removeprefix("random_") / "latest.json").exists()
