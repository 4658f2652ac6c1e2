"""The named profiles: plain functions returning a `RunConfig` (`get_config(name)` builds one with overrides).

smoke proves the plumbing; cpu is `make report`'s default; study is the full protocol on 2 cores; gpu and
gpu-long scale it; davis runs the study on a DAVIS layout. Every number in a profile says why it is what it
is (measured, or chosen on validation).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from vpe_lib.config.schema import AnalysisConfig, DataConfig, PredictConfig, PretrainConfig, RunConfig, SegConfig
from vpe_lib.data.pushworld import PushWorldConfig
from vpe_lib.models.tokenizer_config import TokenizerConfig
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig
from vpe_lib.train.recipe import TrainConfig


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
DAVIS_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "davis_sample"


def _davis() -> RunConfig:
    """The whole study on a DAVIS layout (`make report PROFILE=davis DAVIS=<root>`; default: the four sample
    sequences beside the project). The tokenizer and both predictors pretrain on the training sequences'
    frames (the benchmark's split when `data.davis_train/val/test` list it, else the automatic split by
    sequence), the masking study runs with MGM from H.264 encodings of the frames, and the heads are scored
    by the benchmark's J, F and J&F at native resolution. The cpu profile's models at 64 x 64 with fewer
    updates; PushWorld stays small (the latent analysis and the figures still read it).

    The budget: 30 minutes on 2 cores. Measured from empty on the samples (115 GFLOP/s host): 600 tokenizer
    updates, 300 per predictor and frozen + fine-tuned heads took 2,485 s (pretrain 587, predict 593, heads
    1,176: a fine-tuned run costs 3x a frozen one); hence 300 / 150 updates and frozen heads, as the cpu
    profile (fine-tuning is in the study). The learning-rate grid stays: the UNet chose 1e-2 where every
    encoder head chose 3e-3 (both renders), so one rate for all would handicap the baseline."""
    cfg = _cpu()
    cfg.profile = "davis"
    cfg.data = dataclasses.replace(cfg.data, source=f"davis:{DAVIS_SAMPLES}", image_size=64,
                                   n_train_videos=60, n_test_videos=20, videos_per_shard=20)
    cfg.pretrain.train = dataclasses.replace(cfg.pretrain.train, steps=300, warmup_steps=30)
    cfg.pretrain.n_eval_clips = 32
    cfg.predict.train = dataclasses.replace(cfg.predict.train, steps=150, warmup_steps=15)
    cfg.predict.probe_videos = 8
    cfg.seg.encoders = ("tokenizer", "random_tokenizer", "masked", "random_masked")
    cfg.seg.modes = ("frozen",)
    cfg.seg.n_val_videos = 1  # unused on DAVIS (the val sequences are listed or split automatically)
    cfg.seg.frame_stride, cfg.seg.test_frame_stride = 2, 1  # every test frame: the benchmark scores them all
    cfg.analysis = dataclasses.replace(cfg.analysis, n_points=1000, probe_train_videos=20)
    return cfg


PROFILES: dict[str, Callable[[], RunConfig]] = {"smoke": _smoke, "cpu": _cpu, "study": _study, "gpu": _gpu,
                                                "gpu-long": _gpu_long, "davis": _davis}
