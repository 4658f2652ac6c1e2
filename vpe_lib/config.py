"""Run configuration: nested dataclasses, named profiles, strict overrides.

One `RunConfig` describes a whole run (data → pretrain → latents → heads →
results). Profiles are plain functions returning a `RunConfig`; a user changes
anything with dotted overrides (`{"pretrain.train.steps": 100}`). Unknown
profile names and unknown keys fail at once and list the valid ones, because a
typo that silently falls back to a default wastes a GPU-day.

Every stage writes the resolved config next to its results (`save_config`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vpe_lib.data.loader import check_loader_settings
from vpe_lib.data.pushworld import PushWorldConfig
from vpe_lib.data.masking import MASKINGS
from vpe_lib.models.encoders import ENCODERS
from vpe_lib.models.heads import HEADS, MODES
from vpe_lib.models.tokenizer import QUANTIZERS, TokenizerConfig
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig
from vpe_lib.models.transformer import PREDICTORS
from vpe_lib.train.device import check_device_spec
from vpe_lib.train.loop import TrainConfig


class ConfigError(ValueError):
    """A profile name, key or value that does not exist or does not fit."""


@dataclass
class DataConfig:
    world: PushWorldConfig = field(default_factory=PushWorldConfig)
    n_train_videos: int = 200
    n_test_videos: int = 40
    videos_per_shard: int = 50
    workers: int = 2
    seed: int = 0  # base seed; a video's seed is derived from (seed, split, index)
    # Exports written for the other loaders (COCO, DAVIS layout, mp4): how many test videos.
    n_export_videos: int = 4
    # Labelled frames for segmentation (vpe_lib.data.seg_sources): "pushworld" (generated),
    # "davis:<DAVIS root>" or "coco:<COCO root or annotations/instances_*.json>"; or unlabelled video
    # that pretrains the models, "video:<a video file or folder of videos>" (judged on PushWorld's labels).
    source: str = "pushworld"
    # Side S that real frames are resized to (S x S, aspect ratio not kept); 0 = world.height.
    image_size: int = 0
    # DAVIS sequences per split (splits are by sequence); all three empty = automatic split of
    # the sorted names (val, test: round(0.2 n) each, at least 1; train: the rest).
    davis_train: tuple[str, ...] = ()
    davis_val: tuple[str, ...] = ()
    davis_test: tuple[str, ...] = ()
    davis_resolution: str = "480p"
    # COCO: (train, val, test) fractions of the images, split by image with `seed`.
    coco_fractions: tuple[float, ...] = (0.6, 0.2, 0.2)
    coco_image_dir: str = ""  # "" = auto-detected beside annotations/

    def __post_init__(self) -> None:
        from vpe_lib.data.seg_sources import parse_source  # lazy: keeps this module's imports light

        kind, _ = parse_source(self.source)
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 0:
            raise ValueError(f"image_size must be an int >= 0 (0 = world.height), got {self.image_size!r}")
        for key in ("davis_train", "davis_val", "davis_test"):
            names = getattr(self, key)
            if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{key} must be a list of sequence names, got {names!r}")
            setattr(self, key, tuple(names))
        splits = {"davis_train": self.davis_train, "davis_val": self.davis_val, "davis_test": self.davis_test}
        if any(splits.values()):
            if kind != "davis":
                raise ValueError(f"davis_train/val/test are set but source is {self.source!r}")
            if not self.davis_train or not self.davis_test:
                raise ValueError("davis_train and davis_test must both list sequences (davis_val may be "
                                 "empty); leave all three empty for the automatic split")
            seen: dict[str, str] = {}
            for key, names in splits.items():
                for name in names:
                    if name in seen:
                        where = f"twice in {key}" if seen[name] == key else f"in {seen[name]} and in {key}"
                        raise ValueError(f"sequence {name!r} is listed twice: {where} (splits are by video)")
                    seen[name] = key
        f = self.coco_fractions
        if not (isinstance(f, tuple) and len(f) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              for v in f)):
            raise ValueError(f"coco_fractions must be 3 numbers (train, val, test), got {f!r}")
        self.coco_fractions = tuple(float(v) for v in f)
        if min(f) < 0 or f[0] <= 0 or f[2] <= 0 or abs(sum(f) - 1) > 1e-6:
            raise ValueError(f"coco_fractions must be >= 0, sum to 1, with train and test > 0, got {f!r}")


@dataclass
class PretrainConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The clip length is tokenizer.clip_frames: the same length is used to repeat a still image.
    n_eval_clips: int = 32  # held-out clips for PSNR / codebook usage
    # Side runs, one per quantizer, with the same architecture, data and schedule but
    # `compare_steps` updates each, so VQ / LFQ / FSQ are compared like for like (0 = off).
    compare_quantizers: tuple[str, ...] = ()
    compare_steps: int = 0
    # More tokenizers with the same recipe and other seeds (init and batches), in pretrain/seeds/:
    # the segmentation study then pairs its seeds with them, so its spread includes pretraining's.
    extra_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = [q for q in self.compare_quantizers if q not in QUANTIZERS]
        if unknown:
            raise ValueError(f"compare_quantizers: unknown {unknown}; valid: {', '.join(QUANTIZERS)}")
        if not isinstance(self.compare_steps, int) or self.compare_steps < 0:
            raise ValueError(f"compare_steps must be an int >= 0, got {self.compare_steps!r}")
        if self.compare_quantizers and not self.compare_steps:
            raise ValueError("compare_quantizers is set but compare_steps is 0")
        if len(set(self.extra_seeds)) != len(self.extra_seeds) or self.train.seed in self.extra_seeds:
            raise ValueError(f"extra_seeds {self.extra_seeds} must be distinct and differ from train.seed "
                             f"{self.train.seed}")


@dataclass
class SegConfig:
    """The segmentation study (stage 05): encoders × heads × frozen / fine-tuned × label budgets,
    against a UNet from scratch; see vpe_lib.stages.seg_protocol for the protocol."""

    # the tokenizer, the two prediction transformers (stage 03), each with its random-weight twin; + "pixels"
    encoders: tuple[str, ...] = ("tokenizer", "random_tokenizer", "masked", "random_masked", "ar", "random_ar")
    heads: tuple[str, ...] = ("conv",)  # "linear" | "conv" | "segformer"
    modes: tuple[str, ...] = ("frozen", "finetuned")
    finetune_heads: tuple[str, ...] = ()  # heads that also run fine-tuned (empty = all of `heads`)
    finetune_predictors: bool = False  # the prediction transformers fine-tuned too (the seed paper's best setup)
    # label budgets at which the fine-tuned prediction transformers run (empty: every budget). An update of
    # one costs 3.7-5x a fine-tuned tokenizer's on a CPU (measured: 0.73 s AR, 1.0 s masked, 0.20 s tokenizer)
    finetune_predictor_pcts: tuple[float, ...] = ()
    # label budgets (of label_pcts) at which each method searches lr_grid on validation; the other budgets
    # reuse the rate it chose there (empty: search at every budget)
    lr_search_pcts: tuple[float, ...] = ()
    head_encoders: tuple[str, ...] = ()  # encoders that run every head; the others only heads[0] (empty = all)
    # label budgets (of label_pcts) at which the heads other than the main one (heads[0]) run: the head
    # comparison asks which head reads an encoder best, a question one budget answers (empty: every budget)
    head_comparison_pcts: tuple[float, ...] = ()
    label_pcts: tuple[float, ...] = (1.0, 10.0, 100.0)  # % of the labelled training videos
    seeds: tuple[int, ...] = (0, 1, 2)  # paired across methods: label subset, init, random encoder
    lr_grid: tuple[float, ...] = (1e-3, 3e-3)  # every method picks from the same grid on validation
    encoder_lr_scale: float = 0.1  # fine-tuning: encoder lr = this × head lr
    still: str = "repeat"  # how a still image enters the tokenizer: "repeat" | "single" (causal only)
    still_clip_frames: int = 0  # frames a still image is repeated to (0 = the tokenizer's clip length)
    head_hidden: int = 64
    head_out_stride: int = 1  # the heads predict at this stride (1 = input resolution, like the UNet)
    level_probes: bool = True  # ablation: a linear probe on each encoder level alone (largest budget)
    without_pixel_levels: bool = True  # ablation: the heads without the stride-1 maps (largest budget)
    coarse_out_stride: int = 0  # ablation: the heads predicting at this stride, upsampled (0 = off)
    coco_ap: bool = True  # COCO mask AP of every run (semantic classes + connected components)
    unet_base_channels: int = 16
    unet_depth: int = 3
    train: TrainConfig = field(default_factory=TrainConfig)
    # updates per label budget, in the order of label_pcts (empty: train.steps at every budget); every
    # method at a budget trains for the same number, and each run's test weights are those of its
    # best validation evaluation, so the updates actually used are chosen on validation
    budget_steps: tuple[int, ...] = ()
    # The convergence check (0 = off): at the largest label budget, `convergence_methods` (method names as
    # in the table, "unet" or "<encoder>/<head>/<mode>") train once more for this many updates, with the
    # first seed, the learning rate chosen at that budget and their own warmup + cosine schedule, so the
    # report shows what the budget's schedule left on the table. Not part of any run's identity.
    convergence_steps: int = 0
    convergence_methods: tuple[str, ...] = ("unet", "tokenizer/conv/finetuned", "random_tokenizer/conv/finetuned")
    convergence_seeds: int = 1  # the first k of `seeds`; with k >= 2 the longer runs get paired intervals
    n_val_videos: int = 40  # training videos held out for choosing hyperparameters
    frame_stride: int = 3  # labelled frames: every k-th frame of each training video
    test_frame_stride: int = 5  # validation and test frames
    flip_augment: bool = True  # horizontal flips, added as extra labelled frames for every model alike
    colour_baseline_pixels: int = 200_000  # pixels sampled to fit the per-pixel colour baseline

    def __post_init__(self) -> None:
        for name, valid in (("encoders", ENCODERS), ("heads", HEADS), ("modes", MODES), ("finetune_heads", HEADS),
                            ("head_encoders", ENCODERS)):
            bad = [v for v in getattr(self, name) if v not in valid]
            if bad or (not getattr(self, name) and name not in ("finetune_heads", "head_encoders")):
                raise ValueError(f"seg.{name}: unknown {bad or 'empty list'}; valid: {', '.join(valid)}")
        self.label_pcts = tuple(float(p) for p in self.label_pcts)
        if not self.label_pcts or any(not 0 < p <= 100 for p in self.label_pcts):
            raise ValueError(f"seg.label_pcts must be in (0, 100], got {self.label_pcts}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seg.seeds must be distinct and non-empty, got {self.seeds}")
        if not self.lr_grid or any(not lr > 0 for lr in self.lr_grid):
            raise ValueError(f"seg.lr_grid must hold positive rates, got {self.lr_grid}")
        self.budget_steps = tuple(int(n) for n in self.budget_steps)
        for name in ("lr_search_pcts", "head_comparison_pcts", "finetune_predictor_pcts"):
            pcts = tuple(float(q) for q in getattr(self, name))
            setattr(self, name, pcts)
            if any(all(abs(q - p) > 1e-9 for p in self.label_pcts) for q in pcts):
                raise ValueError(f"seg.{name} {pcts} must be among seg.label_pcts {self.label_pcts}")
        if self.budget_steps and (len(self.budget_steps) != len(self.label_pcts) or min(self.budget_steps) < 1):
            raise ValueError(f"seg.budget_steps must give a positive number of updates for each of the label "
                             f"budgets {self.label_pcts}, got {self.budget_steps}")
        if not isinstance(self.convergence_steps, int) or self.convergence_steps < 0:
            raise ValueError(f"seg.convergence_steps must be an int >= 0 (0 = off), got {self.convergence_steps!r}")
        if not isinstance(self.convergence_seeds, int) or not 1 <= self.convergence_seeds <= len(self.seeds):
            raise ValueError(f"seg.convergence_seeds must be an int in 1..{len(self.seeds)} (the first k of seg.seeds), "
                             f"got {self.convergence_seeds!r}")
        self.convergence_methods = tuple(self.convergence_methods)
        for name in self.convergence_methods:
            parts = name.split("/")
            if not (name == "unet" or (len(parts) == 3 and parts[0] in ENCODERS and parts[1] in HEADS
                                       and parts[2] in MODES)):
                raise ValueError(f"seg.convergence_methods: {name!r} is not 'unet' or '<encoder>/<head>/<mode>' "
                                 f"(encoders {', '.join(ENCODERS)}; heads {', '.join(HEADS)}; modes {', '.join(MODES)})")
        if self.still not in ("repeat", "single"):
            raise ValueError(f"seg.still must be 'repeat' or 'single', got {self.still!r}")

    def steps_at(self, pct: float) -> int:
        """Updates of every run at label budget `pct` (%)."""
        if not self.budget_steps:
            return self.train.steps
        for p, n in zip(self.label_pcts, self.budget_steps):
            if p == float(pct):
                return n
        raise ValueError(f"{pct}% is not one of the label budgets {self.label_pcts}")


MOTION_SOURCES = ("codec", "block_matching")


@dataclass
class PredictConfig:
    """Video prediction (stage 03): frame-conditioned transformers over the tokenizer's codes, and
    the masking study. A clip of `clip_frames` frames is tokenized; its first `cond_frames` latent
    frames are the condition (the condition frame edge-padded to the clip, as MAGVIT's COMMIT)."""

    models: tuple[str, ...] = ("masked", "ar")
    clip_frames: int = 6
    cond_frames: int = 1
    dim: int = 128
    depth: int = 4
    heads: int = 4
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, batch_size=16, lr=1e-3,
                                                                   warmup_steps=30, log_every=20, ckpt_every=100))
    # per-model learning rates (0 = train.lr): the two objectives want different rates (measured)
    masked_lr: float = 0.0
    ar_lr: float = 0.0
    # the levers of `TransformerConfig`: logits as a residual over the code table (the model starts at
    # the baseline it is judged against), and the condition code at each position's place as an input
    table_prior: bool = False
    cond_input: bool = False
    # seeds vary all pretraining: each extra tokenizer seed (pretrain.extra_seeds) gets its own masked and
    # autoregressive transformers, trained with that seed; the heads of seed k read seed k's models
    per_seed: bool = False
    masking: str = "random"  # which tokens the main masked model hides
    mask_ratio: float = 0.0  # 0 = a ratio per sample from MaskGIT's cosine schedule; else fixed in (0, 1)
    maskgit_steps: int = 12
    temperature: float = 1.0
    n_sample_clips: int = 16  # test clips whose futures are sampled and decoded for PSNR
    n_shown_samples: int = 4  # samples of the same condition frame in the filmstrips
    # The masking study: a masked transformer per strategy x budget (x one epoch budget = train.steps)
    # x seed, judged by probes on its frozen features, against a random-weight transformer.
    study_maskings: tuple[str, ...] = ("random", "mgm")
    study_budgets: tuple[float, ...] = (1.0, 1 / 3)
    study_seeds: tuple[int, ...] = (0,)
    study_mask_ratio: float = 0.75  # MGM's ratio (Fan et al. 2023), the same for every strategy; 0 = the schedule
    motion_source: str = "codec"  # what MGM reads: "codec" motion vectors | "block_matching" (explicit)
    probe_videos: int = 60  # training videos whose frames fit the masking study's probes
    probe_frames_per_video: int = 6

    def __post_init__(self) -> None:
        for name, valid in (("models", PREDICTORS), ("study_maskings", MASKINGS)):
            bad = [v for v in getattr(self, name) if v not in valid]
            if bad:
                raise ValueError(f"predict.{name}: unknown {bad}; valid: {', '.join(valid)}")
        if self.masking not in MASKINGS:
            raise ValueError(f"predict.masking: unknown {self.masking!r}; valid: {', '.join(MASKINGS)}")
        if self.motion_source not in MOTION_SOURCES:
            raise ValueError(f"predict.motion_source: unknown {self.motion_source!r}; valid: {', '.join(MOTION_SOURCES)}")
        if not (self.mask_ratio == 0 or 0 < self.mask_ratio < 1):
            raise ValueError(f"predict.mask_ratio must be in (0, 1), or 0 for the cosine schedule; got {self.mask_ratio}")
        if not (self.study_mask_ratio == 0 or 0 < self.study_mask_ratio < 1):
            raise ValueError(f"predict.study_mask_ratio must be in (0, 1), or 0 for the cosine schedule; "
                             f"got {self.study_mask_ratio}")
        if self.masking != "random" and self.mask_ratio == 0:
            raise ValueError(f"predict.masking={self.masking!r} needs a fixed predict.mask_ratio in (0, 1)")
        self.study_budgets = tuple(float(b) for b in self.study_budgets)
        if any(not 0 < b <= 1 for b in self.study_budgets):
            raise ValueError(f"predict.study_budgets must be fractions in (0, 1], got {self.study_budgets}")
        for name in ("clip_frames", "cond_frames", "dim", "depth", "heads", "maskgit_steps", "n_sample_clips"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"predict.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.dim % self.heads:
            raise ValueError(f"predict.dim ({self.dim}) must be divisible by predict.heads ({self.heads})")
        if not self.temperature > 0:
            raise ValueError(f"predict.temperature must be > 0, got {self.temperature}")
        for name in ("masked_lr", "ar_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"predict.{name} must be > 0, or 0 for predict.train.lr; got {getattr(self, name)}")

    def train_config(self, kind: str) -> TrainConfig:
        """The training schedule of one model: train, with its own learning rate when set."""
        lr = {"masked": self.masked_lr, "ar": self.ar_lr}[kind]
        return dataclasses.replace(self.train, lr=lr) if lr else self.train


@dataclass
class AnalysisConfig:
    """The latent-space analysis (stage 04): closed-form probes from a single still frame's token
    features (see vpe_lib.eval.latent_probes), code purity, and a 2-D embedding for the figure."""

    embedding: str = "umap"  # "umap" (umap-learn) or "pca" (fast, for the smoke profile)
    n_points: int = 2000  # test tokens embedded in 2-D
    # which encoders' token features are probed; the predictors' rows are skipped when stage 03 did
    # not train them
    encoders: tuple[str, ...] = ENCODERS
    probe_train_videos: int = 40  # training videos (not the seg validation ones) whose frames fit the probes
    probe_test_videos: int = 0  # test videos that score them (0 = all); the intervals resample these
    frames_per_video: int = 3  # still frames per video, spread evenly
    fate_frames: int = 4  # common fate: does a token move within the next k frames?
    ridge_alpha: float = 10.0  # on standardised features, as the masking study's probes
    mv_probe: bool = True  # probe the motion vectors' speed too (source: predict.motion_source)
    n_boot: int = 1000  # bootstrap resamples of the test videos
    ci_seed: int = 0
    # random-weight twins probed per twin (drawn from the first seeds of seg.seeds): their probes are
    # averaged, and the intervals of pretrained - random resample the draws as well as the videos
    random_draws: int = 3

    def __post_init__(self) -> None:
        if self.embedding not in ("umap", "pca"):
            raise ValueError(f"analysis.embedding: unknown {self.embedding!r}; valid: umap, pca")
        bad = [e for e in self.encoders if e not in ENCODERS]
        if bad or not self.encoders:
            raise ValueError(f"analysis.encoders: unknown {bad or 'empty list'}; valid: {', '.join(ENCODERS)}")
        for name in ("n_points", "probe_train_videos", "frames_per_video", "fate_frames", "n_boot", "random_draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"analysis.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.probe_test_videos, bool) or not isinstance(self.probe_test_videos, int) \
                or self.probe_test_videos < 0:
            raise ValueError(f"analysis.probe_test_videos must be an int >= 0 (0 = all), "
                             f"got {self.probe_test_videos!r}")
        if not self.ridge_alpha > 0:
            raise ValueError(f"analysis.ridge_alpha must be > 0, got {self.ridge_alpha}")


@dataclass
class RuntimeConfig:
    """Where the run computes (`--set run.device=cuda:1`). It never enters a run's identity (cache
    keys, run folders), so a run started on one device resumes on another."""

    # "auto" (the first GPU if CUDA is available, else the CPU) | "cpu" | "cuda" | "cuda:N". The machine
    # is consulted when a stage starts (vpe_lib.train.device.resolve_device), not here: a config may
    # be written on a laptop for a GPU node.
    device: str = "auto"
    # Pretraining batches (tokenizer clips, predictor tokens) built ahead by this many DataLoader
    # worker processes (vpe_lib.data.loader): the same batches in the same order, so it changes
    # speed, never results. 0 = in the training process, as always (the default: on 2 CPU cores
    # workers would take cores from training). loader_prefetch: batches each worker keeps ready.
    loader_workers: int = 0
    loader_prefetch: int = 2

    def __post_init__(self) -> None:
        check_device_spec(self.device)
        check_loader_settings(self.loader_workers, self.loader_prefetch)


@dataclass
class RunConfig:
    profile: str = "cpu"
    run: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def __post_init__(self) -> None:
        # the prediction horizon must fit the videos and the tokenizer's temporal grid
        p, tok, n = self.predict, self.pretrain.tokenizer, self.data.world.n_frames
        if p.clip_frames > n:
            raise ValueError(f"predict.clip_frames={p.clip_frames} is longer than the videos "
                             f"(data.world.n_frames={n}); valid: 1..{n}")
        tf = tok.temporal_factor
        t_lat = 1 + (p.clip_frames - 1) // tf if tok.causal else p.clip_frames // tf
        if (p.clip_frames - 1 if tok.causal else p.clip_frames) % tf:
            raise ValueError(f"predict.clip_frames={p.clip_frames} does not fit the tokenizer's temporal factor "
                             f"{tf}" + (" (causal: 1 + k*factor frames)" if tok.causal else " (a multiple of it)"))
        a = self.analysis
        if a.fate_frames > n - 1:
            raise ValueError(f"analysis.fate_frames={a.fate_frames} needs videos of more than {a.fate_frames} frames "
                             f"(data.world.n_frames={n}); valid: 1..{n - 1}")
        if not p.cond_frames < t_lat:
            raise ValueError(f"predict.cond_frames={p.cond_frames} leaves nothing to predict: a {p.clip_frames}-frame "
                             f"clip has {t_lat} latent frames; valid: 1..{t_lat - 1}")


# ---------------------------------------------------------------------------
# Profiles


def _smoke() -> RunConfig:
    """The whole pipeline in well under 3 minutes: proves the plumbing, not the science."""
    return RunConfig(
        profile="smoke",
        data=DataConfig(
            world=PushWorldConfig(height=32, width=32, n_frames=8),
            n_train_videos=12,
            n_test_videos=4,
            videos_per_shard=4,
            workers=2,
            n_export_videos=2,
        ),
        pretrain=PretrainConfig(
            tokenizer=TokenizerConfig(
                base_channels=8,
                channel_mults=(1, 2),
                blocks_per_level=1,
                temporal_down=(True,),
                spatial_down=(True,),
                full_res_blocks=False,
                embed_dim=16,
                codebook_size=32,
                clip_frames=4,
            ),
            train=TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=2, log_every=5, ckpt_every=10),
            n_eval_clips=4,
            compare_quantizers=("vq", "lfq", "fsq"),
            compare_steps=4,
        ),
        predict=PredictConfig(
            clip_frames=4, dim=32, depth=2, heads=2,
            train=TrainConfig(steps=10, batch_size=4, lr=2e-3, warmup_steps=2, log_every=5, eval_every=5, ckpt_every=0),
            maskgit_steps=4, n_sample_clips=4, n_shown_samples=2,
            study_budgets=(1.0, 0.5), probe_videos=4, probe_frames_per_video=2,
        ),
        seg=SegConfig(
            label_pcts=(50.0, 100.0),
            seeds=(0, 1),
            lr_grid=(2e-3,),
            head_hidden=16,
            unet_base_channels=8,
            unet_depth=2,
            train=TrainConfig(steps=15, batch_size=8, lr=2e-3, warmup_steps=2, log_every=5, eval_every=5,
                              ckpt_every=0, progress=False),
            convergence_steps=25,  # the convergence check, so the smoke report renders its section
            n_val_videos=3,
            frame_stride=2,
            test_frame_stride=2,
            colour_baseline_pixels=5_000,
        ),
        analysis=AnalysisConfig(embedding="pca", n_points=200, probe_train_videos=6, frames_per_video=2, fate_frames=3,
                                n_boot=200),
    )


def _cpu() -> RunConfig:
    """Meaningful results on 2 CPU cores (the default of `make report`): ~25 minutes on the host the
    budget was set on, 39 on a 2-core Zen 1 EPYC (measured; docs/running.md compares hosts)."""
    return RunConfig(
        profile="cpu",
        data=DataConfig(
            world=PushWorldConfig(height=64, width=64, n_frames=30),
            n_train_videos=240,
            n_test_videos=40,
            videos_per_shard=40,
        ),
        pretrain=PretrainConfig(
            tokenizer=TokenizerConfig(
                base_channels=16,
                channel_mults=(1, 2, 4),
                blocks_per_level=1,
                temporal_down=(True, False),
                spatial_down=(True, True),
                full_res_blocks=False,
                embed_dim=64,
                codebook_size=1024,
                clip_frames=4,
            ),
            # lr measured at 300 steps (held-out PSNR): 2e-3 17.4 dB, 1e-3 19.3, 5e-4 21.1, 2.5e-4 21.2.
            # Re-checked on the study's validation videos (make bench-lr, 300 steps, one seed): 2.5e-4
            # 21.49 dB / SSIM 0.504, 5e-4 21.37 / 0.511, 1e-3 19.62 / 0.457: a tie between the two
            # smaller rates (PSNR and SSIM disagree), so 5e-4 stays
            # The tokenizer must pass its gate (PSNR >= JPEG at its 0.3125 bpp on the same test frames, 22.77 dB):
            # 500 updates reached 22.02 dB (below), 600 22.42, 800 22.85 (measured); 1000 updates (10% warmup)
            # for a margin that does not hinge on the CPU's float order
            train=TrainConfig(steps=1000, batch_size=8, lr=5e-4, warmup_steps=100, log_every=20, eval_every=100,
                              ckpt_every=100),
            n_eval_clips=64,
            # The VQ / LFQ / FSQ comparison (120 updates each, ~4 minutes) runs in the study
            # profile: the cpu report spends its minutes on the segmentation protocol instead.
        ),
        predict=PredictConfig(
            # 2 latent frames: the condition and one to predict (video frames 2-3). Attention over the
            # clip's tokens is most of the cost: 3 latent frames at dim 128 / depth 4 trained at 5 clips/s
            # on one core, this at 15 (measured)
            clip_frames=4,
            dim=96, depth=3, heads=4,
            # 200 updates of the plain transformers lost to the code table by 1.1-1.3 bits per token. With
            # logits as a residual over the table and the condition code as an input (bench/predictor_levers.py,
            # validation bits, table 6.66) the masked model crosses the table by ~180 updates and reaches 6.17 at
            # 420; 400 updates fit the 25 minutes
            train=TrainConfig(steps=400, batch_size=8, lr=1e-3, warmup_steps=40, log_every=20, eval_every=50,
                              ckpt_every=100),
            table_prior=True, cond_input=True,
            # chosen on validation bits per token at 200 updates (the cpu tokens, plain models): masked 1e-3
            # 8.88, 3e-3 8.18; AR 1e-3 8.37, 3e-3 8.64
            masked_lr=3e-3, ar_lr=1e-3,
            # the reduced masking study: random vs MGM at the full budget, one seed, with the main
            # model's cosine-schedule ratio, so random / x1 is the main masked model itself. The 1/3
            # budget (~55 s: two trainings and their probes, measured) is in the study profile: with it
            # the report took 1,539 s from empty, over the 25 minutes
            study_maskings=("random", "mgm"),
            study_budgets=(1.0,),
            study_seeds=(0,),
            study_mask_ratio=0.0,
        ),
        seg=SegConfig(
            # the quick look: frozen encoders, the masked transformer (the AR model's features, fine-tuning
            # and the ablations are in the study profile, which has the minutes for them)
            encoders=("tokenizer", "random_tokenizer", "masked", "random_masked"),
            modes=("frozen",),
            level_probes=False,
            without_pixel_levels=False,
            label_pcts=(10.0, 100.0),
            seeds=(0, 1, 2),
            # 3e-3 beat 1e-3 on validation for every method at 160 updates (measured): the grid brackets it
            lr_grid=(3e-3, 1e-2),
            # the rate searched at 100% labels only, the 10% rows reuse each method's choice: the 25 minutes
            # with the gated pretraining (1000 tokenizer updates, 400 per predictor) need the ~1/8 of the heads
            # stage this saves (estimated for a 168 GFLOP/s host; docs/running.md)
            lr_search_pcts=(100.0,),
            # a still frame as a 2-frame static clip (the shortest this tokenizer takes): fine-tuning
            # runs at 121 instead of 49 images/s (measured), which is what lets it into this profile
            still_clip_frames=2,
            head_hidden=32,
            unet_base_channels=14,  # 411k parameters; the tokenizer encoder + conv head: 455k
            unet_depth=3,
            # 120 x 16 = 1,920 images per run: 8 epochs of the 10% budget, 0.8 of the 100% budget; at 160
            # updates the validation curves had flattened from about 120 on (measured)
            train=TrainConfig(steps=120, batch_size=16, lr=3e-3, warmup_steps=12, log_every=20, eval_every=30,
                              ckpt_every=0),
            n_val_videos=40,
            frame_stride=6,  # 5 labelled frames per training video (was 6 with stride 5): fewer features to compute
        ),
        # 40 + 40 videos x 3 frames: the four predictor encoders' features are most of the stage's
        # minute after UMAP's JIT (60 x 4 frames took the stage to ~3 minutes on 2 busy cores, measured)
        analysis=AnalysisConfig(embedding="umap", n_points=2000, probe_train_videos=40, frames_per_video=3,
                                fate_frames=4),
    )


def _gpu_long() -> RunConfig:
    """BAIR scale for a real run (hours on one GPU; resumable stage by stage and run by run):
    16x64x64 clips -> 4x16x16 tokens, a MAGVIT-B-like tokenizer with the GAN, 20,000 videos."""
    return RunConfig(
        profile="gpu-long",
        data=DataConfig(
            world=PushWorldConfig(height=64, width=64, n_frames=30),
            n_train_videos=20_000,
            n_test_videos=500,
            videos_per_shard=500,
            workers=8,
            n_export_videos=16,
        ),
        pretrain=PretrainConfig(
            tokenizer=TokenizerConfig(
                base_channels=64,
                channel_mults=(1, 2, 4),
                blocks_per_level=2,
                temporal_down=(True, True),
                spatial_down=(True, True),
                full_res_blocks=True,
                embed_dim=256,
                codebook_size=1024,
                clip_frames=16,
            ),
            # MAGVIT trains its BAIR tokenizer with the GAN on; it starts once reconstructions are decent
            loss=TokenizerLossConfig(adversarial=True, adversarial_start_step=20_000),
            train=TrainConfig(steps=100_000, batch_size=64, lr=1e-4, warmup_steps=2000, log_every=100, ckpt_every=2000),
            n_eval_clips=512,
            compare_quantizers=("vq", "lfq", "fsq"),
            compare_steps=10_000,
        ),
        predict=PredictConfig(
            clip_frames=16,  # BAIR: 15 frames predicted from 1 (4 latent frames, the first the condition)
            dim=512, depth=8, heads=8,  # between MAGVIT-B's transformer and a laptop
            train=TrainConfig(steps=20_000, batch_size=64, lr=3e-4, warmup_steps=1000, log_every=100, eval_every=1000,
                              ckpt_every=1000),
            n_sample_clips=64,
            study_maskings=("random", "tube", "simmotion", "mgm"),
            study_budgets=(1.0, 2 / 3, 1 / 3),
            study_seeds=(0, 1, 2),
            probe_videos=500,
        ),
        seg=SegConfig(
            head_hidden=128,
            unet_base_channels=32,
            unet_depth=4,
            train=TrainConfig(steps=5000, batch_size=64, lr=1e-3, warmup_steps=200, log_every=100, ckpt_every=1000),
            seeds=(0, 1, 2),
            frame_stride=1,
            test_frame_stride=1,
            # the seed paper's configuration (the transformers fine-tuned end to end) at every label budget:
            # on a GPU it costs what the CPU study cannot afford (seg.finetune_predictor_pcts there)
            finetune_predictors=True,
        ),
        analysis=AnalysisConfig(embedding="umap", n_points=10_000, probe_train_videos=500, frames_per_video=2,
                                fate_frames=4),
    )


def _gpu() -> RunConfig:
    """gpu-long's shapes and models (16x64x64 clips, the BAIR-preset tokenizer, 512-wide transformers)
    with budgets sized for about 10 minutes on one H100/H200, so one lent device call runs and checks
    the whole report. The sizes are an estimate, not yet a measurement: the BAIR-preset tokenizer
    costs 833 GFLOP per clip forward + backward (bench-mfu's FLOP count), so at 35% of an H200's
    989 bf16 TFLOP/s it trains at ~420 clips/s (1,200 x 32 clips: ~90 s); a 512-wide, 8-deep
    transformer over 1,024 tokens costs ~0.2 TFLOP per clip (~1,700 clips/s: ~60 s per model)."""
    cfg = _gpu_long()
    cfg.profile = "gpu"
    cfg.data = dataclasses.replace(cfg.data, n_train_videos=4000, n_test_videos=200, videos_per_shard=200, workers=16)
    p = cfg.pretrain
    p.loss = dataclasses.replace(p.loss, adversarial=False)  # the GAN starts after ~20k updates in MAGVIT's recipe
    p.train = dataclasses.replace(p.train, steps=1200, batch_size=32, warmup_steps=100, ckpt_every=400, eval_every=400)
    p.n_eval_clips, p.compare_quantizers, p.compare_steps = 128, (), 0  # the quantizer comparison: gpu-long
    pr = cfg.predict
    pr.train = dataclasses.replace(pr.train, steps=1500, warmup_steps=100, eval_every=500, ckpt_every=500)
    pr.study_maskings, pr.study_budgets, pr.study_seeds = ("random", "mgm"), (1.0, 1 / 3), (0,)
    pr.probe_videos = 200
    s = cfg.seg
    s.encoders = ("tokenizer", "random_tokenizer", "masked", "random_masked")
    s.finetune_predictors = False  # gpu-long's; its minutes are not in this profile's ten
    s.label_pcts = (10.0, 100.0)
    s.train = dataclasses.replace(s.train, steps=300, warmup_steps=30, eval_every=60, ckpt_every=0)
    s.frame_stride, s.test_frame_stride = 6, 5  # 40k labelled frames with flips: features fit in host RAM
    # the UNet and the fine-tuned tokenizer pair at 4x the 100% schedule, three seeds: paired intervals at convergence
    s.convergence_steps, s.convergence_seeds = 1200, 3
    cfg.analysis = dataclasses.replace(cfg.analysis, n_points=4000, probe_train_videos=200, probe_test_videos=100)
    return cfg


def _study() -> RunConfig:
    """The cpu profile's data and tokenizer recipe, pretraining that varies with the seed, and the study's
    grid; resumable stage by stage and run by run. Pretraining: three tokenizers (and the VQ / LFQ / FSQ
    comparison), a masked and an AR transformer on each, the masking study (four strategies, two budgets,
    three seeds). Heads: seven encoders with the conv head, frozen and fine-tuned (the prediction
    transformers fine-tuned at 1% labels only), the linear and SegFormer heads at 10%, 1 / 10 / 100%
    labels, three seeds, and the convergence check at 100%. The budget (150 minutes, half of them in
    pretraining) and what it measured are in docs/running.md."""
    cfg = _cpu()
    cfg.profile = "study"
    cfg.pretrain.compare_quantizers = ("vq", "lfq", "fsq")
    cfg.pretrain.compare_steps = 120
    cfg.pretrain.extra_seeds = (1, 2)  # with train.seed 0: three pretrained tokenizers
    seg = cfg.seg
    seg.encoders = ("tokenizer", "random_tokenizer", "masked", "random_masked", "ar", "random_ar", "pixels")
    # conv first: the main head, the one every encoder runs. The head comparison (linear probe, SegFormer
    # MLP) runs on the tokenizer and its random twin: all three heads on all seven encoders would be
    # 252 head runs, about 30 of the 90 minutes (from the cpu report's 5-6 s per run)
    seg.heads = ("conv", "linear", "segformer")
    seg.head_encoders = ("tokenizer", "random_tokenizer")
    # ... at 10% labels only (the budget that searches the learning rate): which head reads an encoder best
    # is one question, and the 1% and 100% rows of the two extra heads were ~8 of the grid's minutes
    seg.head_comparison_pcts = (10.0,)
    seg.modes = ("frozen", "finetuned")
    # the level probes and the no-stride-1 ablation (where in the encoder is the signal?) ran in the earlier
    # study; ~4 minutes that now go to pretraining (the profiles' defaults still run them)
    seg.level_probes = seg.without_pixel_levels = False
    seg.finetune_heads = ("conv",)  # the seed study's best; fine-tuning every head would double the time
    # ... and the seed paper's best configuration: the transformer-informed latent fine-tuned with the conv head,
    # at 1% labels only: an update costs 3.7-5x a fine-tuned tokenizer's (0.73-1.0 s against 0.20 s on 2 idle
    # cores at 127 GFLOP/s), so the four rows at every budget (11,040 updates with the seeds and the rate
    # search) would take ~2.6 hours alone; at 1%, where pretraining should matter most, ~30 minutes
    seg.finetune_predictors = True
    seg.finetune_predictor_pcts = (1.0,)
    # the learning rate searched at 10% labels only (every method the same search; ~18% fewer updates)
    seg.lr_search_pcts = (10.0,)
    seg.label_pcts = (1.0, 10.0, 100.0)
    # updates per label budget: 120 at 1% (every method's validation curve peaks by then: the UNet's at
    # 30-90), 240 at 10%, 480 at 100%. Measured for the UNet at 480 updates: validation fg IoU 0.605 at
    # 160 and flat from there at 10%; at 100% 0.593 at 120, 0.645 at 160, 0.669 at 460, still rising. 120
    # updates everywhere (the previous study) left the UNet 0.07-0.08 short at 10% and 100%. The test
    # weights are each run's best validation step, so longer schedules cannot hurt a method that peaks early.
    seg.budget_steps = (120, 240, 480)
    # ... but 480 is not convergence at 100% (bench/seg_convergence.py, seed 0): the UNet trained for 1920
    # updates plateaus at ~0.77 validation fg IoU from ~750 on, against 0.675 with the 480-update schedule.
    # The grid at that length would cost ~2-4x its largest budget; the convergence check trains the UNet and
    # the fine-tuned tokenizer pair for 960 updates (past the UNet's plateau) on the first seed (~8 minutes)
    seg.convergence_steps = 960
    # Seeds vary all pretraining: each of the three tokenizers gets its own masked and AR transformers,
    # and the heads of seed k read seed k's models
    cfg.predict.per_seed = True
    # The masking study (Fan et al.'s question): random, tube, simulated motion and MGM, each at 1/3 and the
    # full update budget, three seeds, all at MGM's ratio 0.75; MGM 1/3 - random 1x and MGM 1/3 - tube 1x
    # get paired intervals (masking/mgm/x0.33/minus_<s>_x1/...)
    cfg.predict.study_maskings = ("random", "tube", "simmotion", "mgm")
    cfg.predict.study_budgets = (1.0, 1 / 3)
    cfg.predict.study_seeds = (0, 1, 2)
    cfg.predict.study_mask_ratio = 0.75
    return cfg


# the four DAVIS-2016 sample sequences beside the project: the davis profile's default (a user gives their root)
DAVIS_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis_sample"


def _davis() -> RunConfig:
    """The whole study on a DAVIS layout (`make report PROFILE=davis DAVIS=<root>`; default: the four sample
    sequences beside the project). The tokenizer and both predictors pretrain on the training sequences'
    frames (the benchmark's split when `data.davis_train/val/test` list it, else the automatic split by
    sequence), the masking study runs with MGM from H.264 encodings of the frames, and the heads are scored
    by the benchmark's J, F and J&F at native resolution. The cpu profile's models at 64 x 64 with fewer
    updates; PushWorld stays small (the latent analysis and the figures still read it). The budget aimed at:
    30 minutes on 2 cores (not yet measured: docs/real-data.md)."""
    cfg = _cpu()
    cfg.profile = "davis"
    cfg.data = dataclasses.replace(cfg.data, source=f"davis:{DAVIS_SAMPLES}", image_size=64,
                                   n_train_videos=60, n_test_videos=20, videos_per_shard=20)
    cfg.pretrain.train = dataclasses.replace(cfg.pretrain.train, steps=600, warmup_steps=60)
    cfg.pretrain.n_eval_clips = 32
    cfg.predict.train = dataclasses.replace(cfg.predict.train, steps=300, warmup_steps=30)
    cfg.predict.probe_videos = 8
    cfg.seg.encoders = ("tokenizer", "random_tokenizer", "masked", "random_masked")
    cfg.seg.modes = ("frozen", "finetuned")
    cfg.seg.finetune_predictors = False  # fine-tuned transformers cost 4-5x a fine-tuned tokenizer (docs/running.md)
    cfg.seg.n_val_videos = 1  # unused on DAVIS (the val sequences are listed or split automatically)
    cfg.seg.frame_stride, cfg.seg.test_frame_stride = 2, 1  # every test frame: the benchmark scores them all
    cfg.analysis = dataclasses.replace(cfg.analysis, n_points=1000, probe_train_videos=20)
    return cfg


PROFILES: dict[str, Callable[[], RunConfig]] = {"smoke": _smoke, "cpu": _cpu, "study": _study, "gpu": _gpu,
                                                "gpu-long": _gpu_long, "davis": _davis}


# ---------------------------------------------------------------------------
# Building, overriding, saving


def get_config(profile: str = "cpu", overrides: dict[str, Any] | None = None) -> RunConfig:
    """The named profile with dotted-key overrides applied, e.g. {"seg.train.steps": 50}."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    # Overrides go into the profile's plain-dict form and the config is built once at
    # the end, so fields that must agree (e.g. quantizer and codebook_size) can be
    # changed together, and every check runs on the final combination.
    data = config_to_dict(PROFILES[profile]())
    for key, value in (overrides or {}).items():
        _set_dotted(data, RunConfig, key.split("."), value, key)
    return _from_dict(RunConfig, data)


def _set_dotted(data: dict[str, Any], cls: type, path: list[str], value: Any, full_key: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    head = path[0]
    if head not in names:
        raise ConfigError(
            f"unknown config key {full_key!r}: {cls.__name__} has no field {head!r}; valid: {', '.join(names)}"
        )
    tp = _field_type(cls, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key {full_key!r}: {head!r} is a value, not a section")
        _set_dotted(data[head], tp, path[1:], value, full_key)
    elif dataclasses.is_dataclass(tp) and isinstance(value, dict):
        data[head] = {**data[head], **value}
    else:
        data[head] = value


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """JSON and papermill give lists and ints; the dataclasses want tuples and floats."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config key {key!r} expects {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], key: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = key or cls.__name__
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; valid: {', '.join(names)}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = _from_dict(tp, value, sub)
        else:
            kwargs[name] = _coerce(value, tp, sub)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{key or cls.__name__}: {err}") from err


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _from_dict(RunConfig, data)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    return path


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    return config_from_dict(data)
