"""The run configuration's schema: one nested dataclass per section, each checking its own fields.

One `RunConfig` describes a whole run (data → pretrain → predict → latents → heads → results). The named
profiles are in `vpe_lib.config.profiles`; building one with dotted overrides, and saving and loading, in
`vpe_lib.config` itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vpe_lib.data.loader import check_loader_settings
from vpe_lib.data.pushworld import PushWorldConfig
from vpe_lib.data.seg_sources import parse_source
from vpe_lib.data.masking import MASKINGS
from vpe_lib.models.encoders import ENCODERS
from vpe_lib.models.heads import HEADS, MODES
from vpe_lib.models.tokenizer_config import QUANTIZERS, TokenizerConfig
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig
from vpe_lib.models.transformer import PREDICTORS
from vpe_lib.train.device import check_device_spec
from vpe_lib.train.recipe import TrainConfig


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
