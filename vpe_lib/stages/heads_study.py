"""`Study`: everything one heads stage needs (data splits, encoders, feature caches) and one `run` per training
run, scored on the test split (and, on DAVIS, by the benchmark's J and F)."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vpe_lib.config import RunConfig
from vpe_lib.data.pushworld import CLASS_NAMES
from vpe_lib.data.feature_store import FeatureStore, LevelView
from vpe_lib.data.samplers import FrameBatches
from vpe_lib.data.seg_sources import labels_kind, load_labelled_splits
from vpe_lib.eval.benchmark_formats import (coco_ap_from_file, coco_results, davis_ceiling, davis_native,
                                             native_truth, write_coco_results)
from vpe_lib.eval.davis import davis_scores
from vpe_lib.eval.segmentation import (SegAccumulator, curve_status)
from vpe_lib.models.encoders import (PREDICTOR_ENCODERS, ImageEncoder, LevelSelect, PixelEncoder, PredictorEncoder,
                                     TokenizerEncoder, select_levels)
from vpe_lib.models.heads import SegmentationModel, build_head
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.unet import UNet2D
from vpe_lib.stages.common import require, write_json
from vpe_lib.stages.head_training import (MAX_CACHED_ENCODERS, BestOnValidation, CachedFeatureBatches, HeadOnFeatures,
                                         encoder_feature_store, n_trainable, predict_probs, predictor_feature_store,
                                         segmentation_step, token_store, with_flips)
from vpe_lib.stages.encoder_loading import load_predictor_encoder, random_tokenizer
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.stages.seg_protocol import (Method, budget_index, file_digest, pct_name, pushworld_splits,
                                         run_key, seg_identity)
from vpe_lib.train.device import resolve_device
from vpe_lib.train.loop import recipe, train


# the DAVIS benchmark's numbers of a run on a DAVIS source (vpe_lib.eval.davis), beside the pooled IoU
DAVIS_KEYS = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "jf_mean")
# the same at the annotations' native resolution, scored from the written benchmark files (largest budget)
NATIVE_KEYS = tuple(f"native_{k}" for k in DAVIS_KEYS) + ("native_ap", "native_ap50")


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
        self.source = labels_kind(cfg.data.source)  # a video: source is judged on PushWorld's labels
        self.skipped: list[dict] = []  # data skipped (unreadable files, ...)
        self.not_run: list[dict] = []  # methods not run on this source, each with its reason
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

    def benchmark_outputs(self, method: Method, seed: int, probs: np.ndarray) -> dict[str, float]:
        """Write one run's test predictions in its benchmark's format at native resolution, under
        out/benchmark/<source>/<method>/seed<k>[.json], and score them from those files: DAVIS J, F, J&F
        (native_j_mean, ...), COCO AP (native_ap, native_ap50). Nothing for PushWorld."""
        test = self.splits["test"]
        if test.items is None or self.source not in ("davis", "coco"):
            return {}
        folder = self.out / "benchmark" / self.source / method.key
        if self.source == "davis":
            d = davis_native(1.0 - probs[:, 0], test.items, self.native_truths(), out_dir=folder / f"seed{seed}")
            return {f"native_{k}": d[k] for k in DAVIS_KEYS}
        path = folder / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        image_ids = sorted(it["image_id"] for it in test.items)
        write_json(folder.parent / "test_image_ids.json", image_ids)  # what the APs are over
        write_coco_results(path, coco_results(probs, test.items, test.meta["category_ids"], self.object_classes))
        ap = coco_ap_from_file(test.meta["annotations"], path, image_ids)
        return {"native_ap": ap["AP"], "native_ap50": ap["AP50"]}

    def native_truths(self) -> list[np.ndarray]:
        if not hasattr(self, "_native_truths"):
            self._native_truths = [native_truth(it) for it in self.splits["test"].items]
        return self._native_truths

    def davis_ceiling(self) -> dict[str, float]:
        """J, F, J&F of the ground truth brought to the study's resolution and back: what no model beats."""
        return davis_ceiling(self.splits["test"].items, self.size, self.native_truths())

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
