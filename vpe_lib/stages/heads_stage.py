"""Stage 05: the segmentation study. Does a video-pretrained encoder segment objects from a
single still image better than the same architecture with random weights, and than a UNet
trained from scratch?

For every method (encoder × head × frozen / fine-tuned, and the UNet), at every label budget
and seed (see `seg_protocol`): the learning rate is chosen on validation videos from the same
grid, the run's held-out learning curve is kept, and the test videos are scored once.

- Frozen encoders: the heads train on cached features (computed once per encoder instance, in
  float16); the encoder's forward pass would otherwise dominate every step of every run.
- Fine-tuned encoders: the encoder trains at `seg.encoder_lr_scale` × the head's rate, with
  the same schedule for the pretrained and the random-init control.
- Seeds vary the label subset, the head's init and batch order, the random encoder's draw and,
  where the pretrain stage trained several tokenizers, the pretraining.
- Every model predicts the semantic classes; foreground (objects + arm), objects only, mIoU,
  Dice, boundary F and COCO mask AP all come from that one prediction.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from vpe_lib.config import RunConfig, SegConfig
from vpe_lib.data.pushworld import CLASS_NAMES
from vpe_lib.data.feature_store import FeatureStore, LevelView, write_feature_store
from vpe_lib.data.samplers import FrameBatches, to_unit_range
from vpe_lib.data.seg_sources import load_labelled_splits, parse_source
from vpe_lib.eval.baselines import colour_baseline, fit_frame_difference, frame_difference
from vpe_lib.eval.davis import davis_scores
from vpe_lib.eval.segmentation import (SegAccumulator, coco_ground_truth, curve_status, instance_ap,
                                       paired_difference, semantic_to_instances)
from vpe_lib.models.encoders import (PREDICTOR_ENCODERS, ImageEncoder, LevelSelect, PixelEncoder, PredictorEncoder,
                                     TokenizerEncoder, select_levels)
from vpe_lib.models.heads import SegmentationModel, build_head
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.unet import UNet2D
from vpe_lib.stages.common import require, stage_device, write_json, write_metrics
from vpe_lib.stages.encoder_loading import load_predictor_encoder, random_tokenizer
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.progress import WorkEta, format_duration
from vpe_lib.stages.seg_protocol import (Method, budget_index, choose_lr, file_digest, main_methods,
                                         method_from_name, pct_name, pushworld_splits, run_key, seg_identity)
from vpe_lib.train.device import module_device, resolve_device
from vpe_lib.train.checkpoint import atomic_save
from vpe_lib.train.loop import recipe, train


# ---------------------------------------------------------------------------- helpers

MAX_CACHED_ENCODERS = 6  # frozen-feature stores kept on disk (cpu profile: ~0.75 GB each)


def segmentation_step(model: nn.Module, batch):
    inputs, target = batch
    logits = model(inputs)
    return F.cross_entropy(logits, target, ignore_index=255), {}


def with_flips(frames: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal-flip augmentation as extra labelled frames: the same set for every model."""
    return np.concatenate([frames, frames[:, :, ::-1]]), np.concatenate([labels, labels[:, :, ::-1]])


def foreground(semantic: np.ndarray) -> np.ndarray:
    """Any class but background; ignore (255, COCO crowd) is not foreground."""
    return (semantic > 0) & (semantic != 255)


def images(frames: np.ndarray) -> torch.Tensor:
    return rearrange(to_unit_range(frames), "b h w c -> b c h w")


@torch.no_grad()
def encoder_features(encoder: ImageEncoder, frames: np.ndarray, *, batch_size: int = 32, progress: bool = False,
                     desc: str = "encoder features") -> list[torch.Tensor]:
    """The frozen encoder's maps for every frame, in float16 in CPU memory (small sets and tests; the
    study writes them to disk with `encoder_feature_store`, whose memory does not grow with the set)."""
    encoder.eval()
    device = module_device(encoder)
    chunks = []
    for k in tqdm(range(0, len(frames), batch_size), desc=desc, disable=not progress, leave=False):
        maps = encoder.forward_intermediates(images(frames[k:k + batch_size]).to(device))
        chunks.append([f.half().cpu() for f in maps])
    return [torch.cat(level) for level in zip(*chunks)]


@torch.no_grad()
def encoder_feature_store(encoder: ImageEncoder, frames: np.ndarray, folder: Path, *, batch_size: int = 32,
                          progress: bool = False, desc: str = "encoder features") -> FeatureStore:
    """The frozen encoder's maps for every frame, computed once (on the encoder's device) and written
    in float16 to `folder`, a chunk at a time (see `vpe_lib.data.feature_store`)."""
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        return encoder.forward_intermediates(images(frames[start:stop]).to(device))

    return _write_store_with_bar(folder, len(frames), compute, batch_size, progress, desc)


def _write_store_with_bar(folder: Path, n: int, compute, batch_size: int, progress: bool, desc: str) -> FeatureStore:
    """`write_feature_store` with a progress bar over the rows written."""
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    try:
        return write_feature_store(folder, n, compute, chunk=batch_size, on_chunk=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()


def token_store(encoder: PredictorEncoder, frames: np.ndarray, folder: Path, *,
                batch_size: int = 32) -> FeatureStore:
    """What a predictor encoder's tokenizer makes of every frame: its maps at the first time index
    (the maps `forward_intermediates` returns) and, as a last level, the condition codes (integers
    below the codebook size, exact in float16). Every predictor on the same tokenizer (the trained
    one and the random twin of each seed) reads them instead of tokenizing again: the tokenizer is
    most of a predictor encoder's cost (4.3 s of 6.8 s per 256 frames at the cpu profile, measured)."""
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        with torch.no_grad():
            maps, codes = encoder._tokenize(images(frames[start:stop]).to(device))
        return [m[:, :, 0] for m in maps] + [codes.half()]

    return write_feature_store(folder, len(frames), compute, chunk=batch_size)


def predictor_feature_store(encoder: PredictorEncoder, tokens: FeatureStore, folder: Path, *,
                            batch_size: int = 32, progress: bool = False,
                            desc: str = "encoder features") -> FeatureStore:
    """The predictor encoder's maps from a `token_store` of the same frames and tokenizer: the same
    maps as `encoder_feature_store` (float16 values survive the round trip exactly), the tokenizer
    run once."""
    if not encoder.with_tokenizer_maps:
        raise ValueError("predictor_feature_store needs an encoder that returns the tokenizer's maps too")
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        *maps, codes = tokens.rows(np.arange(start, stop))
        with torch.no_grad():
            states = encoder.forward_from_codes(codes.long().to(device))
        return maps + states

    return _write_store_with_bar(folder, len(tokens), compute, batch_size, progress, desc)


def feature_rows(features, idx: torch.Tensor) -> list[torch.Tensor]:
    """Rows `idx` of every level, float32, from in-memory maps or a store on disk."""
    if isinstance(features, (list, tuple)):
        return [f[idx].float() for f in features]
    return features.rows(idx)


class CachedFeatureBatches:
    """Random (cached features, labels) batches of a subset; deterministic per step like FrameBatches."""

    def __init__(self, features, labels: np.ndarray, index: np.ndarray, *, batch_size: int, seed: int):
        # labels stay in their own (uint8) dtype; a batch's rows become int64 (all of them at once would
        # be 8x the labels' memory)
        self.features, self.labels = features, torch.from_numpy(np.ascontiguousarray(labels))
        self.index, self.batch_size, self.seed = torch.from_numpy(index), batch_size, seed

    def __call__(self, step: int):
        pick = np.random.default_rng([self.seed, step]).integers(0, len(self.index), self.batch_size)
        idx = self.index[torch.from_numpy(pick)]
        return feature_rows(self.features, idx), self.labels[idx].long()


class HeadOnFeatures(nn.Module):
    """A head trained on cached maps; the same module the full model uses."""

    def __init__(self, head: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.head, self.size = head, size

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features, size=self.size)


@torch.no_grad()
def predict_probs(model: nn.Module, inputs, *, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, C, H, W) float16 for uint8 frames, or for cached feature maps (in
    memory or a store on disk), computed on the model's device and returned in CPU memory."""
    was = model.training
    model.eval()
    device = module_device(model)
    if isinstance(inputs, np.ndarray):
        batches = (images(inputs[k:k + batch_size]) for k in range(0, len(inputs), batch_size))
    elif isinstance(inputs, (list, tuple)):
        batches = ([f[k:k + batch_size].float() for f in inputs] for k in range(0, len(inputs[0]), batch_size))
    else:
        batches = inputs.chunks(batch_size)
    out = []
    for x in batches:
        x = x.to(device) if isinstance(x, torch.Tensor) else [f.to(device) for f in x]
        out.append(model(x).softmax(1).half().cpu().numpy())
    model.train(was)
    return np.concatenate(out)


class BestOnValidation:
    """Keeps the weights of a run's best validation evaluation on disk (`path`, written atomically),
    so the test set sees the model at the step validation chose: early stopping, with the same
    evaluation schedule for every method. A run that starts fresh (`fresh`) forgets an older file;
    a resumed one goes on from the best it had."""

    def __init__(self, path: Path, *, fresh: bool):
        self.path = Path(path)
        if fresh:
            self.path.unlink(missing_ok=True)
        self.score = float(torch.load(self.path, map_location="cpu")["score"]) if self.path.exists() else -np.inf

    def offer(self, score: float, model: nn.Module) -> None:
        if score > self.score:  # strictly better: ties keep the earlier (shorter) run
            self.score = float(score)
            atomic_save({"score": self.score, "model": model.state_dict()}, self.path)

    def restore(self, model: nn.Module) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no validation evaluation was kept (seg.train.eval_every = 0?)")
        model.load_state_dict(torch.load(self.path, map_location=module_device(model))["model"])


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- the study


class Study:
    """Everything one heads stage needs: data, encoders, caches, and one `run` per training run."""

    def __init__(self, cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True,
                 device: torch.device | str | None = None):
        self.cfg, self.s, self.run_dir, self.out, self.progress = cfg, cfg.seg, run_dir, out, progress
        # every model of the study is built on this device (default: run.device); weights are drawn on
        # the CPU first, so a seed gives the same initial weights on every device
        self.device = resolve_device(cfg.run.device) if device is None else torch.device(device)
        require(run_dir, "pretrain", "final.pt")
        s = self.s
        self.source = parse_source(cfg.data.source)[0]
        self.skipped: list[dict] = []
        if self.source == "pushworld":
            data_dir = require(run_dir, "data", "pushworld/manifest.json")
            self.splits, self.previous = pushworld_splits(data_dir / "pushworld", n_val_videos=s.n_val_videos,
                                                          frame_stride=s.frame_stride,
                                                          test_frame_stride=s.test_frame_stride)
            self.class_names = list(CLASS_NAMES)
            self.object_classes = list(range(2, len(CLASS_NAMES)))  # the pushable objects, not the arm
            self.data_digest = file_digest(data_dir / "pushworld" / "manifest.json")
        else:  # DAVIS / COCO by parameter: every non-background class is an object
            strides = {"train": s.frame_stride, "val": s.test_frame_stride, "test": s.test_frame_stride}
            self.splits, report, self.class_names = load_labelled_splits(cfg.data, frame_stride=strides)
            self.skipped = list(report.skipped)
            if "val" not in self.splits:
                raise ValueError(f"{cfg.data.source}: the study chooses hyperparameters on a validation split, "
                                 f"and this source has none; give it one (data.davis_val / data.coco_fractions)")
            self.previous = {}
            self.object_classes = list(range(1, len(self.class_names)))
            self.data_digest = run_key(cfg.data, {k: (len(v.frames), v.names) for k, v in self.splits.items()})
        self.n_classes = len(self.class_names)
        train = self.splits["train"]
        frames, labels = train.frames, train.semantic
        vids = train.video_ids
        if s.flip_augment:
            frames, labels = with_flips(frames, labels)
            vids = np.concatenate([vids, vids])
        self.train_frames, self.train_labels, self.train_vids = frames, labels, vids
        self.size = tuple(frames.shape[1:3])
        self.tokenizers = self._pretrained_tokenizers()
        self._features: dict[str, dict] = {}
        self._token_stores: dict[str, FeatureStore] = {}
        # feature stores live for one stage run: a store left by a crashed run under another config is
        # never trusted (recomputing the maps costs little next to the head runs, which have their own cache)
        self.feature_dir = out / "features"
        shutil.rmtree(self.feature_dir, ignore_errors=True)

    # -- encoders

    def _pretrained_tokenizers(self) -> list[tuple[str, Path]]:
        """(digest, folder) of every pretrained tokenizer: the main one, then the extra pretraining seeds."""
        pre = self.run_dir / "pretrain"
        folders = [pre] + sorted((pre / "seeds").glob("seed*")) if (pre / "seeds").exists() else [pre]
        return [(file_digest(f / "final.pt"), f) for f in folders if (f / "final.pt").exists()]

    def tokenizer_for(self, encoder: str, seed_index: int, seed: int) -> tuple[VQVAE3D, str]:
        """The pretrained tokenizer paired with this seed, or a random one drawn from the seed."""
        main = load_tokenizer(self.run_dir, device=self.device)
        if encoder == "random_tokenizer":
            return random_tokenizer(main.cfg, seed).channels_last_().to(self.device), f"random{seed}"
        digest, folder = self.tokenizers[seed_index % len(self.tokenizers)]
        if folder != self.run_dir / "pretrain":  # another pretraining seed: its final.pt holds a TokenizerTrainer
            main = load_tokenizer(self.run_dir, weights=folder / "final.pt", device=self.device)
        return main.channels_last_(), digest  # +40% for 3D convs on CPU (measured), same results

    def encoder(self, method: Method, seed_index: int, seed: int) -> tuple[ImageEncoder, str]:
        if method.encoder == "pixels":
            enc, ident = PixelEncoder(), "pixels"
        elif method.encoder in PREDICTOR_ENCODERS:
            enc, ident = self.predictor_encoder(method.encoder, seed, seed_index)
        else:
            tok, ident = self.tokenizer_for(method.encoder, seed_index, seed)
            enc = TokenizerEncoder(tok, still=self.s.still, clip_frames=self.s.still_clip_frames or None)
        return select_levels(enc, list(method.levels) or None), ident

    def predictor_encoder(self, encoder: str, seed: int, seed_index: int = 0) -> tuple[ImageEncoder, str]:
        """With per-seed predictors (predict.per_seed), seed index i reads the transformer trained on the
        i-th pretrained tokenizer, as `tokenizer_for` pairs tokenizers with seeds; else the main one."""
        _, folder = self.tokenizers[seed_index % len(self.tokenizers)]
        tokenizer_seed = None
        if folder != self.run_dir / "pretrain":
            n = int(folder.name.removeprefix("seed"))
            if (self.run_dir / "predict" / encoder.removeprefix("random_") / f"seed{n}.json").exists():
                tokenizer_seed = n
        return load_predictor_encoder(self.run_dir, encoder, seed, clip_frames=self.cfg.predict.clip_frames,
                                      device=self.device, tokenizer_seed=tokenizer_seed)

    def features(self, encoder: ImageEncoder, ident: str) -> dict[str, FeatureStore | LevelView]:
        """Maps of train (with flips), val and test frames, computed once per encoder instance and
        kept in float16 on disk (`vpe_lib.data.feature_store`: the stage's memory does not grow with
        the number of frames). A store holds every map of the full encoder, so a level-restricted
        view (an ablation) is a selection, not a recomputation. The `MAX_CACHED_ENCODERS` most
        recently used instances (the pretrained and random encoders of every seed) are kept, which
        bounds the disk used; the stage removes them all when it is done."""
        full, index = (encoder.inner, encoder.index) if isinstance(encoder, LevelSelect) else (encoder, None)
        if ident not in self._features:
            while len(self._features) >= MAX_CACHED_ENCODERS:
                shutil.rmtree(self._features.pop(next(iter(self._features)))["folder"], ignore_errors=True)
            folder = self.feature_dir / run_key(ident, self.data_digest, self.s.still, self.s.still_clip_frames)
            frames = {"train": self.train_frames, "val": self.splits["val"].frames, "test": self.splits["test"].frames}
            self._features[ident] = {"folder": folder}
            for split, x in frames.items():
                show = dict(progress=self.progress, desc=f"{ident} features") if split == "train" else {}
                if isinstance(full, PredictorEncoder) and full.with_tokenizer_maps:
                    tokens = self.tokens(full, split, x)
                    self._features[ident][split] = predictor_feature_store(full, tokens, folder / split, **show)
                else:
                    self._features[ident][split] = encoder_feature_store(full, x, folder / split, **show)
        maps = self._features.pop(ident)
        self._features[ident] = maps  # most recently used last: eviction takes the least recent
        splits = {k: v for k, v in maps.items() if k != "folder"}
        return splits if index is None else {k: v.select(index) for k, v in splits.items()}

    def tokens(self, encoder: PredictorEncoder, split: str, frames: np.ndarray) -> FeatureStore:
        """The `token_store` of a split, shared by every predictor encoder (all of them tokenize with
        the main tokenizer, at the prediction stage's clip length); kept until the stage ends."""
        key = run_key("tokens", self.tokenizers[0][0] if self.tokenizers else "", self.data_digest,
                      encoder.tokens.clip_frames, encoder.cond_frames, split)
        if key not in self._token_stores:
            self._token_stores[key] = token_store(encoder, frames, self.feature_dir / f"tokens-{key}")
        return self._token_stores[key]

    def remove_feature_stores(self) -> None:
        self._token_stores.clear()
        self._features.clear()
        shutil.rmtree(self.feature_dir, ignore_errors=True)

    # -- one training run

    def run(self, method: Method, pct: float, seed_index: int, seed: int, lr: float) -> dict:
        s = self.s
        index = budget_index(self.train_vids, pct, seed)
        tcfg = dataclasses.replace(s.train, seed=seed, lr=lr, progress=self.progress, steps=s.steps_at(pct))
        torch.manual_seed(seed)
        val_sem = self.splits["val"].semantic
        if method.encoder == "unet":
            model = UNet2D(in_channels=3, n_classes=self.n_classes, base_channels=s.unet_base_channels,
                           depth=s.unet_depth).to(self.device)
            ident, inputs = "unet", None
        else:
            enc, ident = self.encoder(method, seed_index, seed)
            torch.manual_seed(seed)
            head = build_head(method.head, enc.feature_info, n_classes=self.n_classes, hidden=s.head_hidden,
                              out_stride=method.out_stride or s.head_out_stride)
            model = SegmentationModel(enc if method.mode == "frozen" else copy.deepcopy(enc), head,
                                      frozen=method.mode == "frozen", encoder_lr_scale=s.encoder_lr_scale
                                      ).to(self.device)  # the head, drawn on the CPU
            inputs = self.features(enc, ident) if method.mode == "frozen" else None
        if inputs is not None:  # frozen: train the head on cached maps
            trained: nn.Module = HeadOnFeatures(model.head, self.size)
            batches = CachedFeatureBatches(inputs["train"], self.train_labels, index, batch_size=tcfg.batch_size,
                                           seed=seed)
            val_in, test_in = inputs["val"], inputs["test"]
        else:
            trained = model
            batches = FrameBatches(self.train_frames[index], self.train_labels[index], batch_size=tcfg.batch_size,
                                   seed=seed, flip=False)
            val_in, test_in = self.splits["val"].frames, self.splits["test"].frames

        # the recipe only: a progress bar, logging cadence or torch.compile reuses the run
        key = run_key(method, pct, seed, lr, recipe(tcfg), seg_identity(s), ident,
                      self.data_digest)
        folder = self.out / "runs" / method.key / f"{pct_name(pct)}_seed{seed}_lr{lr:g}_{key}"
        best = BestOnValidation(folder / "best.pt", fresh=not (folder / "checkpoint.pt").exists())

        def val_score(m: nn.Module) -> dict[str, float]:
            pred = predict_probs(m, val_in).argmax(1)
            acc = SegAccumulator(self.n_classes, object_classes=self.object_classes, boundary=False)  # regions only
            acc.update(pred, val_sem)
            r = acc.result()
            best.offer(r["fg_iou"], m)
            return {"fg_iou": r["fg_iou"], "fg_iou_objects": r["fg_iou_objects"]}

        start = time.perf_counter()
        result = train(trained, segmentation_step, batches, tcfg, folder, eval_fn=val_score,
                       desc=f"{method.name} {pct_name(pct)} seed {seed} lr {lr:g}")
        curve = [(r["step"], r["eval/fg_iou"]) for r in result.history if "eval/fg_iou" in r]
        final = result.final_model
        best.restore(final)  # the number of updates is chosen on validation, like the learning rate
        probs = predict_probs(final, test_in)
        best_step = curve[int(np.argmax([c[1] for c in curve]))][0] if curve else tcfg.steps
        return {"method": method.name, "pct": pct, "seed": seed, "lr": lr, "curve": curve,
                "val_fg_iou": best.score, "best_step": best_step,
                "train_wall_s": result.wall_time_s, "stage_wall_s": time.perf_counter() - start,
                "trained_steps": result.trained_steps,  # updates this call ran: 0 for a run found finished
                "reused": result.trained_steps == 0,
                "trainable_params": n_trainable(model), "encoder": ident, "probs": probs,
                "curve_status": curve_status([c[0] for c in curve], [c[1] for c in curve])}

    # -- scoring

    def score(self, pred: np.ndarray) -> dict[str, float]:
        test = self.splits["test"]
        acc = SegAccumulator(self.n_classes, object_classes=self.object_classes)
        acc.update(pred, test.semantic)
        r = acc.result()
        out = {k: r[k] for k in ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f", "pixel_acc")}
        if self.source == "davis":  # the benchmark's J, F and J&F on the foreground, per sequence (at the
            # model's resolution: the native-resolution scoring is still to come)
            d = davis_scores(pred != 0, test.semantic != 0, test.video_ids)
            out.update({k: d[k] for k in DAVIS_KEYS})
        return out


# the DAVIS benchmark's numbers of a run on a DAVIS source (vpe_lib.eval.davis), beside the pooled IoU
DAVIS_KEYS = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "jf_mean")


def _summarise(records: list[dict]) -> dict[str, float]:
    out = {}
    for key in ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f", "ap", "ap50", "ap75", *DAVIS_KEYS):
        vals = np.array([r[key] for r in records if key in r], float)
        if len(vals):
            out[key] = float(vals.mean())
            out[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
    return out


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


def run_heads_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict[str, float]:
    device = stage_device(cfg)
    s = cfg.seg
    study = Study(cfg, run_dir, out, progress=progress, device=device)
    test = study.splits["test"]
    gt = coco_ground_truth(test.instance, test.semantic, class_names=study.class_names,
                           classes=study.object_classes) if s.coco_ap and test.instance is not None else None
    encoders = list(s.encoders)
    if study.source != "pushworld" and any(e in PREDICTOR_ENCODERS for e in encoders):
        # stage 03 trains the predictors on PushWorld only (so far): say so, do not fail or hide it
        dropped = [e for e in encoders if e in PREDICTOR_ENCODERS]
        encoders = [e for e in encoders if e not in PREDICTOR_ENCODERS]
        study.skipped.append({"path": cfg.data.source, "kind": "encoders " + ", ".join(dropped),
                              "reason": "the prediction stage (03) trains on PushWorld only so far"})
    methods = main_methods(encoders, s.heads, s.modes, s.finetune_heads, s.head_encoders, s.finetune_predictors)
    largest = max(s.label_pcts)
    ablations = ablation_methods(cfg, study)
    plan = grid_plan(methods, ablations, s)
    chosen: dict[str, float] = {}

    per_run: dict[str, dict[str, list[dict]]] = {}
    lr_search: dict[str, dict[str, dict[str, float]]] = {}
    test_preds: dict[str, np.ndarray] = {}
    # the ETA weighs each row by its updates and the pace of its kind (a fine-tuned encoder's update
    # costs several frozen heads'), and counts the convergence check that follows the grid
    eta = WorkEta()
    # a row searches the rate at a searched budget, or where its method has none (its first row); the
    # others reuse the method's choice
    first_rows = {m.name: i for i, (m, _) in reversed(list(enumerate(plan)))}
    searches = [searches_lr(s, pct) or first_rows[m.name] == i for i, (m, pct) in enumerate(plan)]
    work = [row_work(m, pct, s, search=search) for (m, pct), search in zip(plan, searches)]
    check = convergence_work(s, methods)
    t0 = time.perf_counter()
    for i, (method, pct) in enumerate(plan):
        elapsed = time.perf_counter() - t0
        left = eta.remaining_s(work[i:] + check)
        eta_text = f", ETA {format_duration(left)}" if left is not None else ""
        log(f"[heads] {i + 1}/{len(plan)} {method.name} at {pct:g}% labels ({format_duration(elapsed)}{eta_text})")
        row_start = time.perf_counter()
        seed0 = s.seeds[0]
        if searches[i]:
            first = {lr: study.run(method, pct, 0, seed0, lr) for lr in s.lr_grid}
            lr = chosen[method.name] = choose_lr({lr: r["val_fg_iou"] for lr, r in first.items()})
            lr_search.setdefault(method.name, {})[pct_name(pct)] = {f"{k:g}": r["val_fg_iou"] for k, r in first.items()}
        else:  # the rate this method chose at a searched budget
            lr = chosen[method.name]
            first = {lr: study.run(method, pct, 0, seed0, lr)}
        runs = [first[lr]] + [study.run(method, pct, k, seed, lr) for k, seed in enumerate(s.seeds) if k > 0]
        for r in runs:
            probs = r.pop("probs")
            pred = probs.argmax(1).astype(np.uint8)
            r.update(study.score(pred))
            if gt is not None:
                r.update(instance_ap(gt, [semantic_to_instances(p.astype(np.float32), classes=study.object_classes)
                                          for p in probs]))
            if r["seed"] == seed0 and pct == largest:
                test_preds[method.key] = pred
        per_run.setdefault(method.name, {})[pct_name(pct)] = runs
        # the pace from the updates this call ran: runs found finished in the cache took no time
        eta.record(work[i][0], sum(r["trained_steps"] for r in [*first.values(), *runs[1:]]),
                   time.perf_counter() - row_start)

    study.remove_feature_stores()
    metrics = collect(per_run, s, study)
    if s.convergence_steps:
        conv = run_convergence(cfg, run_dir, out, per_run, device=device, progress=progress, log=log)
        metrics.update(conv["metrics"])
        write_json(out / "convergence.json", {k: v for k, v in conv.items() if k != "metrics"})
    baselines = run_baselines(study, s)
    for name, res in baselines.items():
        for k, v in res.items():
            metrics[f"seg/{k}/{name}"] = v
    if study.source != "pushworld":  # seg/davis/..., seg/coco/...: never mistaken for PushWorld rows
        metrics = {k.replace("seg/", f"seg/{study.source}/", 1): v for k, v in metrics.items()}
        metrics[f"seg/{study.source}/n_skipped"] = len(study.skipped)
    write_json(out / "skipped.json", {"skipped": study.skipped})
    write_json(out / "per_seed.json", {m: {p: [{k: v for k, v in r.items()} for r in rs] for p, rs in d.items()}
                                       for m, d in per_run.items()})
    write_json(out / "lr_search.json", lr_search)
    write_json(out / "baselines.json", baselines)
    np.savez_compressed(out / "test_preds.npz", frames=test.frames, truth=test.semantic, **test_preds)
    write_metrics(out, metrics)
    return metrics


def run_convergence(cfg: RunConfig, run_dir: Path, out: Path, per_run: dict[str, dict[str, list[dict]]], *,
                    device, progress: bool, log: Callable[[str], None]) -> dict:
    """The heads stage's convergence check (seg.convergence_*): `convergence_check` on the methods of the
    grid, each at the learning rate it chose at the largest budget, beside the grid's runs of the same
    seeds. Metrics per method: means over the seeds, the gain over the grid's runs, the share still
    rising, and with two or more seeds the paired difference from the UNet trained as long."""
    s = cfg.seg
    largest_pct = max(s.label_pcts)
    largest, budget_steps = pct_name(largest_pct), s.steps_at(largest_pct)
    names = [n for n in s.convergence_methods if n in per_run]
    missing = [n for n in s.convergence_methods if n not in per_run]
    if missing:  # said, not dropped silently: those rows are not in this profile's grid
        log(f"[heads] convergence check: {', '.join(missing)} not in this study's methods, left out")
    seeds = list(s.seeds[:s.convergence_seeds])
    log(f"[heads] convergence check: {', '.join(names)} at {largest_pct:g}% labels for "
        f"{s.convergence_steps} updates, seed(s) {', '.join(map(str, seeds))}")
    rows = convergence_check(cfg, run_dir, out, [(method_from_name(n), per_run[n][largest][0]["lr"]) for n in names],
                             s.convergence_steps, n_seeds=len(seeds), device=device, progress=progress)
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        grid = next(r for r in per_run[row["method"]][largest] if r["seed"] == row["seed"])
        row.update(budget_curve=grid["curve"], budget_fg_iou=grid["fg_iou"], budget_steps=budget_steps)
        by_method.setdefault(row["method"], []).append(row)
    m: dict[str, float] = {}
    for name, rs in by_method.items():
        key = f"seg/convergence/{name}"
        for k in ("steps", "budget_steps", "fg_iou", "fg_iou_objects", "budget_fg_iou", "val_fg_iou", "best_step",
                  "train_wall_s"):
            m[f"{key}/{k}"] = float(np.mean([r[k] for r in rs]))
        m[f"{key}/gain"] = float(np.mean([r["fg_iou"] - r["budget_fg_iou"] for r in rs]))
        m[f"{key}/still_rising"] = float(np.mean([r["curve_status"] == "still rising" for r in rs]))
        m[f"{key}/n_seeds"] = float(len(rs))
        if name != "unet" and "unet" in by_method and len(rs) >= 2:
            d = paired_difference([r["fg_iou"] for r in rs], [r["fg_iou"] for r in by_method["unet"]])
            for k in ("mean", "ci_low", "ci_high"):
                m[f"{key}/diff_vs_unet/{k}"] = d[k]
    return {"label_pct": largest_pct, "seeds": seeds, "runs": rows, "metrics": m}


def convergence_check(cfg: RunConfig, run_dir: Path, out: Path, methods: list[tuple[Method, float]], steps: int,
                      *, n_seeds: int = 1, device: torch.device | str | None = None, progress: bool = False
                      ) -> list[dict]:
    """Each (method, learning rate) once more at the largest label budget for `steps` updates: the
    first `n_seeds` seeds (their label subsets and initialisations), its own warmup + cosine schedule
    and validation every seg.train.eval_every updates; test weights from its best validation step, as
    in the grid. Only the update count differs from the grid's runs of those seeds, so the curves show
    whether the budget's schedule had converged. Runs are cached like the grid's (resumable, reused
    when finished)."""
    s = cfg.seg
    largest = max(s.label_pcts)
    per_budget = s.budget_steps or tuple(s.train.steps for _ in s.label_pcts)
    budget = tuple(steps if p == largest else n for p, n in zip(s.label_pcts, per_budget))
    study = Study(dataclasses.replace(cfg, seg=dataclasses.replace(s, budget_steps=budget)), run_dir, out,
                  progress=progress, device=device)
    fields = ("method", "seed", "lr", "curve", "curve_status", "best_step", "val_fg_iou", "fg_iou", "fg_iou_objects",
              "train_wall_s")
    rows = []
    for method, lr in methods:
        for k, seed in enumerate(s.seeds[:n_seeds]):
            r = study.run(method, largest, k, seed, lr)
            r.update(study.score(r.pop("probs").argmax(1)))
            rows.append({"steps": steps, **{f: r[f] for f in fields}})
    study.remove_feature_stores()
    return rows


def ablation_methods(cfg: RunConfig, study: Study) -> list[Method]:
    """Where is the signal? A linear probe on each encoder level alone, and the main head without
    the near-pixel (stride-1) maps; pretrained and random, frozen, at the largest budget."""
    s = cfg.seg
    out: list[Method] = []
    encs = [e for e in ("tokenizer", "random_tokenizer") if e in s.encoders]
    if not encs:
        return out
    info = study.encoder(Method("tokenizer"), 0, s.seeds[0])[0].feature_info
    if s.level_probes:
        for f in info:
            out += [Method(e, "linear", "frozen", levels=(f.name,), tag=f"probe-{f.name}") for e in encs]
    # the structural ablations use the main head (conv) only: repeating them per head doubled the
    # study's ablation time for a question the probes already answer level by level
    ablated_heads = [h for h in s.heads if h == "conv"] or list(s.heads[:1])
    if s.without_pixel_levels:
        coarse = tuple(f.name for f in info if f.stride > 1)
        for head in ablated_heads:
            out += [Method(e, head, "frozen", levels=coarse, tag="no-stride1") for e in encs]
    if s.coarse_out_stride:
        for head in ablated_heads:
            out += [Method(e, head, "frozen", out_stride=s.coarse_out_stride, tag=f"out-stride{s.coarse_out_stride}")
                    for e in encs]
    return out


def collect(per_run: dict[str, dict[str, list[dict]]], s, study: Study) -> dict[str, float]:
    """Flat metrics: per method and budget the mean ± std over seeds, the paired difference from the
    UNet and (for pretrained encoders) from the random-weight control, with 95% intervals."""
    m: dict[str, float] = {
        "seg/n_train_frames": len(study.train_frames),
        "seg/n_train_videos": len(np.unique(study.train_vids)),
        "seg/n_val_frames": len(study.splits["val"].frames),
        "seg/n_test_frames": len(study.splits["test"].frames),
        "seg/test_fg_fraction": float(foreground(study.splits["test"].semantic).mean()),
        "seg/n_seeds": len(s.seeds),
        "seg/pretrain_seeds": len(study.tokenizers),
    }
    for name, budgets in per_run.items():
        for pct, runs in budgets.items():
            for k, v in _summarise(runs).items():
                metric, std = (k[:-4], "_std") if k.endswith("_std") else (k, "")
                prefix = "coco_ap" if metric.startswith("ap") else metric + std
                if metric.startswith("ap"):
                    if std:
                        continue
                    m[f"seg/coco_ap/{name}/{pct}/{metric}"] = v
                else:
                    m[f"seg/{prefix}/{name}/{pct}"] = v
            m[f"seg/lr/{name}/{pct}"] = runs[0]["lr"]
            m[f"seg/trainable_params/{name}/{pct}"] = runs[0]["trainable_params"]
            m[f"seg/train_wall_s/{name}/{pct}"] = float(np.mean([r["train_wall_s"] for r in runs]))
            m[f"seg/steps/{name}/{pct}"] = float(s.steps_at(runs[0]["pct"]))
            m[f"seg/best_step/{name}/{pct}"] = float(np.mean([r.get("best_step", np.nan) for r in runs]))
            m[f"seg/still_rising/{name}/{pct}"] = float(np.mean([r["curve_status"] == "still rising" for r in runs]))
    for name, budgets in per_run.items():
        if name == "unet":
            continue
        for pct, runs in budgets.items():
            a = [r["fg_iou"] for r in runs]
            refs = {"diff_vs_unet": per_run.get("unet", {}).get(pct)}
            if not name.startswith("random_") and "random_" + name in per_run:  # its random-weight twin
                refs["diff_vs_random"] = per_run.get("random_" + name, {}).get(pct)
            encoder, _, rest = name.partition("/")
            if encoder in ("masked", "ar"):  # what the transformer adds over the tokenizer it reads (same head, mode)
                refs["diff_vs_tokenizer"] = per_run.get(f"tokenizer/{rest}", {}).get(pct)
            if encoder == "masked":  # masked against autoregressive prediction
                refs["diff_vs_ar"] = per_run.get(f"ar/{rest}", {}).get(pct)
            for label, ref in refs.items():
                if ref:
                    d = paired_difference(a, [r["fg_iou"] for r in ref])
                    for k in ("mean", "ci_low", "ci_high"):
                        m[f"seg/{label}/{name}/{pct}/{k}"] = d[k]
                    # the same on the pushable objects alone: foreground IoU is dominated by the arm
                    d = paired_difference([r["fg_iou_objects"] for r in runs], [r["fg_iou_objects"] for r in ref])
                    for k in ("mean", "ci_low", "ci_high"):
                        m[f"seg/objects_{label}/{name}/{pct}/{k}"] = d[k]
    # aliases of the flat keys earlier reports used: the 100% frozen rows
    for name in per_run:
        full = f"seg/fg_iou/{name}/labels100"
        if name.endswith("/frozen") and full in m:
            m[f"seg/fg_iou/{name.removesuffix('/frozen')}"] = m[full]
    if "seg/fg_iou/unet/labels100" in m:
        m["seg/fg_iou/unet"] = m["seg/fg_iou/unet/labels100"]
    return m


def run_baselines(study: Study, s) -> dict[str, dict[str, float]]:
    """All-background, all-foreground, the per-pixel colour model (per budget, first seed's videos)
    and frame differencing (threshold chosen on validation)."""
    test = study.splits["test"]
    out = {"all_background": study.score(np.zeros_like(test.semantic)),
           "all_foreground": study.score(np.ones_like(test.semantic))}
    for pct in s.label_pcts:
        idx = budget_index(study.train_vids, pct, s.seeds[0])
        fg = colour_baseline(study.train_frames[idx], foreground(study.train_labels[idx]), test.frames,
                             n_pixels=s.colour_baseline_pixels)
        out[f"colour_baseline/{pct_name(pct)}"] = study.score(fg.astype(np.uint8))
    if study.previous:  # video sources only
        val = study.splits["val"]
        thr, _ = fit_frame_difference(val.frames, study.previous["val"], foreground(val.semantic))
        fd = frame_difference(test.frames, study.previous["test"], thr)
        out["frame_difference"] = {**study.score(fd.astype(np.uint8)), "threshold": thr}
    return out
