"""The segmentation study: fine-tuned encoders, cached features, baselines, and the stage at smoke scale (the
protocol's rules: test_seg_protocol.py; the grid's plan: test_heads_grid.py)."""

import dataclasses
import json

import numpy as np
from PIL import Image
import pytest
import torch

from vpe_lib.config import ConfigError, get_config
from vpe_lib.eval.baselines import colour_baseline, fit_frame_difference, frame_difference
from vpe_lib.models.encoders import TokenizerEncoder
from vpe_lib.models.heads import SegmentationModel, build_head
from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D
from vpe_lib.stages.head_training import (
    CachedFeatureBatches,
    HeadOnFeatures,
    encoder_features,
    predict_probs,
    with_flips,
)

TINY = TokenizerConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, temporal_down=(True,),
                       spatial_down=(True,), full_res_blocks=False, embed_dim=8, codebook_size=16, clip_frames=2)


def _frames(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 4:10, 4:10] = 2
    return frames, labels


# -- encoders


def test_a_fine_tuned_predictor_encoder_learns_end_to_end():
    """Fine-tuned, the gradient reaches the transformer and the tokenizer maps it follows (not past the
    argmax codes into the quantizer's choice)."""
    from vpe_lib.models.encoders import PredictorEncoder
    from vpe_lib.models.heads import SegmentationModel, build_head
    from vpe_lib.models.transformer import TransformerConfig, build_predictor

    torch.manual_seed(0)
    tiny = dataclasses.replace(TINY, clip_frames=4)
    tok = VQVAE3D(cfg=tiny).eval()
    tcfg = TransformerConfig(codebook_size=16, grid=tok.latent_shape(4, 16, 16), dim=16, depth=1, heads=2)
    enc = PredictorEncoder(tok, build_predictor("masked", tcfg), clip_frames=4)
    model = SegmentationModel(enc, build_head("conv", enc.feature_info, n_classes=3, hidden=8), frozen=False)
    frames, labels = _frames(n=2)
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 127.5 - 1
    loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels).long())
    loss.backward()
    assert enc.predictor.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.tokens.parameters())


def test_seg_config_rejects_unknown_names():
    with pytest.raises(ConfigError, match="seg.heads: unknown"):
        get_config("smoke", {"seg.heads": ["mlp"]})
    with pytest.raises(ConfigError, match="label_pcts"):
        get_config("smoke", {"seg.label_pcts": [0]})
    assert get_config("smoke", {"seg.label_pcts": [1, 10]}).seg.label_pcts == (1.0, 10.0)
    with pytest.raises(ConfigError, match="budget_steps"):
        get_config("smoke", {"seg.label_pcts": [1, 10], "seg.budget_steps": [100]})
    seg = get_config("smoke", {"seg.label_pcts": [1, 10], "seg.budget_steps": [100, 200]}).seg
    assert (seg.steps_at(1), seg.steps_at(10.0)) == (100, 200)
    with pytest.raises(ValueError, match="not one of the label budgets"):
        seg.steps_at(50)
    assert get_config("smoke").seg.steps_at(50) == get_config("smoke").seg.train.steps


# -- caching and heads


def test_head_on_cached_features_matches_the_full_model(tmp_path):
    from vpe_lib.stages.head_training import encoder_feature_store

    torch.manual_seed(0)
    enc = TokenizerEncoder(VQVAE3D(cfg=TINY)).eval()
    head = build_head("conv", enc.feature_info, n_classes=3, hidden=8)
    model = SegmentationModel(enc, head, frozen=True).eval()
    frames, labels = _frames()
    feats = encoder_features(enc, frames, batch_size=4)
    assert [f.dtype for f in feats] == [torch.float16] * len(enc.feature_info)
    index = np.array([0, 2, 4])
    batch_feats, batch_labels = CachedFeatureBatches(feats, labels, index, batch_size=3, seed=1)(0)
    again, _ = CachedFeatureBatches(feats, labels, index, batch_size=3, seed=1)(0)
    assert all(torch.equal(a, b) for a, b in zip(batch_feats, again))
    assert batch_labels.shape == (3, 16, 16)
    full = predict_probs(model, frames).astype(np.float32)
    cached = predict_probs(HeadOnFeatures(head, (16, 16)), feats).astype(np.float32)
    assert np.allclose(full, cached, atol=2e-2)  # the cache is float16: equal up to its rounding
    assert full.shape == (6, 3, 16, 16)
    # the same maps on disk: the same batches and the same predictions as in memory
    store = encoder_feature_store(enc, frames, tmp_path / "store", batch_size=4)
    on_disk, disk_labels = CachedFeatureBatches(store, labels, index, batch_size=3, seed=1)(0)
    assert all(torch.equal(a, b) for a, b in zip(on_disk, batch_feats)) and torch.equal(disk_labels, batch_labels)
    assert np.array_equal(predict_probs(HeadOnFeatures(head, (16, 16)), store).astype(np.float32), cached)


def test_best_on_validation_keeps_the_best_weights_and_forgets_them_on_a_fresh_start(tmp_path):
    from vpe_lib.stages.head_training import BestOnValidation

    model = torch.nn.Linear(2, 1)
    best = BestOnValidation(tmp_path / "best.pt", fresh=True)
    for score, value in ((0.2, 1.0), (0.5, 2.0), (0.5, 3.0), (0.4, 4.0)):  # a tie keeps the earlier weights
        torch.nn.init.constant_(model.weight, value)
        best.offer(score, model)
    assert best.score == 0.5
    best.restore(model)
    assert torch.all(model.weight == 2.0)
    resumed = BestOnValidation(tmp_path / "best.pt", fresh=False)  # a resumed run goes on from its best
    assert resumed.score == 0.5
    resumed.offer(0.45, model)
    assert resumed.score == 0.5
    assert BestOnValidation(tmp_path / "best.pt", fresh=True).score == -np.inf  # a fresh run forgets it
    with pytest.raises(FileNotFoundError, match="best.pt"):
        BestOnValidation(tmp_path / "best.pt", fresh=True).restore(model)


def test_with_flips_doubles_consistently():
    frames, labels = _frames(2)
    labels[:, :, :2] = 1
    f2, m2 = with_flips(frames, labels)
    assert len(f2) == 4 and np.array_equal(f2[2], frames[0, :, ::-1]) and m2[2, 0, -1] == 1 and m2[2, 0, 0] == 0


# -- baselines


def test_colour_baseline_learns_a_colour_rule_and_fails_on_texture():
    rng = np.random.default_rng(0)
    frames = np.full((8, 16, 16, 3), 60, np.uint8)
    masks = rng.random((8, 16, 16)) < 0.3
    frames[masks] = (200, 40, 40)  # foreground is red: colour alone solves it
    pred = colour_baseline(frames, masks, frames, n_pixels=1000)
    assert (pred == masks).mean() > 0.99
    noise = rng.integers(0, 255, frames.shape, dtype=np.uint8)  # colour independent of the mask
    pred = colour_baseline(noise, masks, noise, n_pixels=1000)
    assert (pred & masks).sum() / max((pred | masks).sum(), 1) < 0.5


def test_frame_difference_finds_what_moved():
    prev = np.full((4, 16, 16, 3), 100, np.uint8)
    frames = prev.copy()
    frames[:, 4:8, 4:8] = 180  # a square appeared
    truth = np.zeros((4, 16, 16), bool)
    truth[:, 4:8, 4:8] = True
    thr, scores = fit_frame_difference(frames, prev, truth)
    assert scores[thr] == 1.0 and thr < 80
    assert np.array_equal(frame_difference(frames, prev, thr), truth)


# -- the stage, end to end at smoke scale


@pytest.mark.slow
def test_heads_stage_at_smoke_scale(tmp_path):
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.data_stage import run_data_stage
    from vpe_lib.stages.heads_stage import run_heads_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    from vpe_lib.stages.predict_stage import run_predict_stage

    over = {"pretrain.compare_quantizers": [], "pretrain.compare_steps": 0, "pretrain.train.steps": 4,
            "seg.train.steps": 6, "seg.train.eval_every": 3, "seg.level_probes": False, "seg.budget_steps": [3, 6],
            "predict.train.steps": 4, "predict.study_maskings": [], "predict.n_sample_clips": 2,
            "pretrain.extra_seeds": [1],  # seed 1 of the study then reads the second pretrained tokenizer
            # ... and its own predictors, trained on that tokenizer (with both levers of the transformers)
            "predict.per_seed": True, "predict.table_prior": True, "predict.cond_input": True,
            "seg.lr_search_pcts": [100],  # the 50% rows reuse the rate chosen at 100%
            "seg.finetune_predictors": True,  # the seed paper's configuration, at every budget
            "seg.convergence_steps": 9, "seg.convergence_seeds": 2}
    cfg, out = start_stage("smoke", tmp_path, "data", over)
    run_data_stage(cfg, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "pretrain", over)
    run_pretrain_stage(cfg, tmp_path, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "predict", over)
    pm = run_predict_stage(cfg, tmp_path, out, progress=False)
    for kind in ("masked", "ar", "code_table"):
        assert pm[f"predict/{kind}/seed0/nll_bits_per_token"] > 0 and pm[f"predict/{kind}/seed1/nll_bits_per_token"] > 0
    assert pm["predict/masked/seed0/nll_bits_per_token"] == pm["predict/masked/nll_bits_per_token"]
    seed1 = json.loads((out / "ar" / "seed1.json").read_text())
    assert seed1["tokenizer"].endswith("seeds/seed1/final.pt") and seed1["folder"] != \
        json.loads((out / "ar" / "latest.json").read_text())["folder"]
    from vpe_lib.stages.heads_study import Study
    study = Study(cfg, tmp_path, tmp_path / "probe_study", progress=False)
    idents = [study.predictor_encoder("ar", seed, k)[1] for k, seed in enumerate((0, 1))]
    assert idents[0] != idents[1]  # seed index 1: the transformer trained on tokenizer seed 1
    assert study.predictor_encoder("random_ar", 1, 1)[1] != study.predictor_encoder("random_ar", 1, 0)[1]
    cfg, out = start_stage("smoke", tmp_path, "heads", over)
    logs: list[str] = []
    m = run_heads_stage(cfg, tmp_path, out, progress=False, log=logs.append)
    rows = [line for line in logs if line.startswith("[heads] ") and "% labels (" in line]
    assert rows and "ETA" not in rows[0] and all("ETA" in line for line in rows[1:])  # once a row has been timed
    for name in ("tokenizer/conv/frozen", "tokenizer/conv/finetuned", "random_tokenizer/conv/frozen", "unet",
                 "masked/conv/frozen", "random_masked/conv/frozen", "ar/conv/frozen", "random_ar/conv/frozen"):
        for pct in ("labels50", "labels100"):
            for metric in ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f"):
                assert 0 <= m[f"seg/{metric}/{name}/{pct}"] <= 1, (metric, name, pct)
            assert f"seg/coco_ap/{name}/{pct}/ap" in m
    d = "seg/diff_vs_unet/tokenizer/conv/finetuned/labels100"
    assert m[f"{d}/ci_low"] <= m[f"{d}/mean"] <= m[f"{d}/ci_high"]
    o = "seg/objects_diff_vs_unet/tokenizer/conv/finetuned/labels100"  # the objects alone get intervals too
    assert m[f"{o}/ci_low"] <= m[f"{o}/mean"] <= m[f"{o}/ci_high"]
    assert "seg/objects_diff_vs_random/masked/conv/frozen/labels50/mean" in m
    assert "seg/diff_vs_random/tokenizer/conv/frozen/no-stride1/labels50/mean" not in m  # ablations: largest only
    assert "seg/diff_vs_random/tokenizer/conv/frozen/no-stride1/labels100/mean" in m
    assert "seg/diff_vs_random/masked/conv/frozen/labels50/mean" in m  # each predictor against its random twin
    # ... against the tokenizer it reads, and masked against autoregressive, paired by seed
    assert m["seg/diff_vs_tokenizer/ar/conv/frozen/labels50/ci_low"] <= m["seg/diff_vs_tokenizer/ar/conv/frozen/labels50/mean"]
    assert "seg/diff_vs_ar/masked/conv/finetuned/labels100/mean" in m and "seg/diff_vs_ar/ar/conv/frozen/labels50/mean" not in m
    for pct in ("labels50", "labels100"):  # fine-tuned predictors at every budget
        assert 0 <= m[f"seg/fg_iou/masked/conv/finetuned/{pct}"] <= 1
    assert "seg/diff_vs_random/ar/conv/finetuned/labels100/mean" in m
    assert m["seg/fg_iou/all_background"] == 0.0 and "seg/fg_iou/frame_difference" in m
    assert m["seg/pretrain_seeds"] == 2
    assert m["seg/fg_iou/unet"] == m["seg/fg_iou/unet/labels100"]  # the flat alias
    per_seed = json.loads((out / "per_seed.json").read_text())
    runs = per_seed["unet"]["labels100"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["curve"] for r in runs)
    assert [st for st, _ in per_seed["unet"]["labels50"][0]["curve"]] == [3]  # seg.budget_steps
    assert [st for st, _ in runs[0]["curve"]] == [3, 6]
    for r in runs:  # the test set sees the weights of the best validation evaluation (early stopping)
        assert r["trained_steps"] == 6 and not r["reused"]  # trained in this call, every update of it
        assert r["val_fg_iou"] == max(v for _, v in r["curve"])
        assert r["best_step"] == next(st for st, v in r["curve"] if v == r["val_fg_iou"])
    lr = json.loads((out / "lr_search.json").read_text())
    assert set(lr["unet"]["labels100"]) == {"0.002"} and set(lr["unet"]) == {"labels100"}
    # the convergence check: the first seed's run once more for 9 updates instead of 6, its curve beside the grid's
    conv = json.loads((out / "convergence.json").read_text())
    assert [(r["method"], r["seed"]) for r in conv["runs"]] == [(n, k) for n in cfg.seg.convergence_methods for k in (0, 1)]
    for r in conv["runs"]:
        grid = per_seed[r["method"]]["labels100"][r["seed"]]
        assert [st for st, _ in r["curve"]] == [3, 6, 9] and r["budget_curve"] == grid["curve"]
        assert r["lr"] == grid["lr"] and r["budget_fg_iou"] == grid["fg_iou"]
    for name in cfg.seg.convergence_methods:
        key, rs = f"seg/convergence/{name}", [r for r in conv["runs"] if r["method"] == name]
        assert m[f"{key}/steps"] == 9 and m[f"{key}/budget_steps"] == 6 and m[f"{key}/n_seeds"] == 2
        assert m[f"{key}/fg_iou"] == pytest.approx(np.mean([r["fg_iou"] for r in rs]))
        assert m[f"{key}/gain"] == pytest.approx(m[f"{key}/fg_iou"] - m[f"{key}/budget_fg_iou"])
        assert (f"{key}/diff_vs_unet/ci_low" in m) == (name != "unet")
    # a second run with the same config reuses every finished training run and gives the same numbers
    logs.clear()
    again = run_heads_stage(cfg, tmp_path, out, progress=False, log=logs.append)
    # every row came from the cache: no pace measured, so no ETA rather than a wrong one
    assert not any("ETA" in line for line in logs if line.startswith("[heads] ") and "% labels (" in line)
    assert all(r["reused"] and r["trained_steps"] == 0
               for rs in json.loads((out / "per_seed.json").read_text()).values() for r in rs["labels100"])
    timing = [k for k in m if "train_wall_s" in k]  # resumed runs add the seconds it took to load them
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in m.items() if k not in timing}


# -- real data by parameter (skipped without ../shared/data)

SHARED = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = {"pretrain.compare_quantizers": [], "pretrain.compare_steps": 0, "pretrain.train.steps": 3,
        "seg.train.steps": 4, "seg.train.eval_every": 2, "seg.level_probes": False, "seg.without_pixel_levels": False,
        "seg.label_pcts": [100], "seg.coco_ap": True}


def _shared(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} absent (real data samples live beside the project)")
    return path


@pytest.mark.slow
def test_davis_layout_by_parameter(tmp_path):
    """`data.source=davis:<root>`: the tokenizer pretrains on the training sequences' frames, heads
    train on their masks and are scored on the test sequence; metrics are named seg/davis/..."""
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.heads_stage import run_heads_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {**REAL, "data.source": f"davis:{_shared('davis_sample')}", "data.davis_train": ["blackswan", "dog"],
            "data.davis_val": ["car-shadow"], "data.davis_test": ["motocross-jump"], "seg.frame_stride": 4,
            "seg.test_frame_stride": 4, "seg.encoders": ["tokenizer", "random_tokenizer"]}  # no stage 03 here
    cfg, out = start_stage("smoke", tmp_path, "pretrain", over)
    pm = run_pretrain_stage(cfg, tmp_path, out, progress=False)  # no PushWorld data stage needed
    assert pm["tokenizer/steps"] == 3
    cfg, out = start_stage("smoke", tmp_path, "heads", over)
    m = run_heads_stage(cfg, tmp_path, out, progress=False, log=lambda s: None)
    assert 0 <= m["seg/davis/fg_iou/tokenizer/conv/frozen/labels100"] <= 1
    assert 0 <= m["seg/davis/fg_iou/unet/labels100"] <= 1
    assert m["seg/davis/n_test_frames"] == 10  # motocross-jump: 40 frames, every 4th
    for k in ("j_mean", "f_mean", "jf_mean", "j_recall", "f_decay"):  # the benchmark's J and F beside the pooled IoU
        assert -1 <= m[f"seg/davis/{k}/unet/labels100"] <= 1, k
    jf = m["seg/davis/jf_mean/unet/labels100"]
    assert jf == pytest.approx((m["seg/davis/j_mean/unet/labels100"] + m["seg/davis/f_mean/unet/labels100"]) / 2)
    assert not any(k.startswith("seg/fg_iou") for k in m)  # never mistaken for PushWorld rows
    # the benchmark's format at native resolution: indexed PNGs per method and seed, scored from those files
    from vpe_lib.eval.benchmark_formats import native_truth, read_davis_pngs
    from vpe_lib.eval.davis import davis_scores
    folder = out / "benchmark" / "davis" / "unet" / "seed1"
    pngs = sorted(folder.glob("motocross-jump/*.png"))
    assert len(pngs) == 10 and Image.open(pngs[0]).size == (854, 480) and Image.open(pngs[0]).mode == "P"
    items = [{"sequence": "motocross-jump", "frame": p.stem,
              "annotation": str(_shared("davis_sample") / "Annotations/480p/motocross-jump" / f"{p.stem}.png")}
             for p in pngs]
    again = davis_scores(read_davis_pngs(folder.parent / "seed1", items), [native_truth(i) for i in items],
                                [i["sequence"] for i in items])
    seeds = [json.loads((out / "per_seed.json").read_text())["unet"]["labels100"][k]["native_jf_mean"] for k in (0, 1)]
    assert again["jf_mean"] == pytest.approx(seeds[1], abs=1e-9)
    assert m["seg/davis/native_jf_mean/unet/labels100"] == pytest.approx(np.mean(seeds))
    assert 0.5 < m["seg/davis/ceiling/jf_mean"] <= 1  # the truth at 32 px and back: below 1, far above chance


@pytest.mark.slow
def test_tiny_coco_by_parameter(tmp_path):
    """`data.source=coco:<root>`: heads train and are scored on COCO images (crowd ignored), with
    COCO mask AP; the encoder is the one pretrained on PushWorld video."""
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.data_stage import run_data_stage
    from vpe_lib.stages.heads_stage import run_heads_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {**REAL, "data.source": f"coco:{_shared('tiny_coco')}", "seg.encoders": ["tokenizer"],
            "seg.modes": ["frozen"]}
    cfg, out = start_stage("smoke", tmp_path, "data", over)
    run_data_stage(cfg, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "pretrain", over)
    run_pretrain_stage(cfg, tmp_path, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "heads", over)
    m = run_heads_stage(cfg, tmp_path, out, progress=False, log=lambda s: None)
    assert 0 <= m["seg/coco/fg_iou/tokenizer/conv/frozen/labels100"] <= 1
    assert 0 <= m["seg/coco/coco_ap/tokenizer/conv/frozen/labels100/ap"] <= 1
    assert m["seg/coco/n_test_frames"] == 10  # 20% of 50 images
    # a results JSON per method and seed at native resolution; plain pycocotools scores it to the page's AP
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    results = out / "benchmark" / "coco" / "tokenizer__conv__frozen" / "seed0.json"
    dets = json.loads(results.read_text())
    assert dets and all(0 <= d["score"] <= 1 for d in dets) and len({d["score"] for d in dets}) > 1
    gt = COCO(str(_shared("tiny_coco") / "annotations" / "instances_train2017.json"))
    ev = COCOeval(gt, gt.loadRes(str(results)), "segm")
    per_seed = json.loads((out / "per_seed.json").read_text())["tokenizer/conv/frozen"]["labels100"][0]
    ev.params.imgIds = json.loads((out / "benchmark" / "coco" / "test_image_ids.json").read_text())
    assert len(ev.params.imgIds) == 10
    ev.evaluate(); ev.accumulate(); ev.summarize()
    assert per_seed["native_ap"] == pytest.approx(max(ev.stats[0], 0.0), abs=1e-12)


def test_predictor_features_from_a_shared_token_store_equal_the_encoders_own(tmp_path):
    """Every predictor encoder on one tokenizer reads its maps and codes from one token store: the
    stores it then writes hold the same bytes as running each encoder whole."""
    from vpe_lib.models.encoders import PredictorEncoder
    from vpe_lib.models.transformer import TransformerConfig, build_predictor
    from vpe_lib.stages.head_training import encoder_feature_store, predictor_feature_store, token_store

    torch.manual_seed(0)
    tiny = dataclasses.replace(TINY, clip_frames=4)
    tok = VQVAE3D(cfg=tiny).eval()
    tcfg = TransformerConfig(codebook_size=16, grid=tok.latent_shape(4, 16, 16), dim=16, depth=2, heads=2)
    frames, _ = _frames(n=7)
    tokens = token_store(PredictorEncoder(tok, build_predictor("masked", tcfg).eval(), clip_frames=4), frames,
                         tmp_path / "tokens", batch_size=3)
    for i, kind in enumerate(("masked", "ar", "masked")):
        torch.manual_seed(10 + i)
        enc = PredictorEncoder(tok, build_predictor(kind, tcfg).eval(), clip_frames=4)
        shared = predictor_feature_store(enc, tokens, tmp_path / f"shared{i}", batch_size=3)
        own = encoder_feature_store(enc, frames, tmp_path / f"own{i}", batch_size=3)
        assert len(shared.shapes) == len(own.shapes) == len(enc.feature_info)
        for a, b in zip(shared.rows(np.arange(7)), own.rows(np.arange(7))):
            assert torch.equal(a, b)
