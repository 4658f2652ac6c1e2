"""Flat metrics of a small study (the results stage, its plots and the index read them in the tests)."""


def study_metrics():
    m = {"seg/n_seeds": 3}
    for name, v in (("tokenizer/conv/frozen", 0.6), ("random_tokenizer/conv/frozen", 0.55), ("unet", 0.7),
                    ("tokenizer/linear/frozen/probe-mid", 0.3), ("colour_baseline", 0.2)):
        for pct in ("labels10", "labels100"):
            m[f"seg/fg_iou/{name}/{pct}"] = v - (0.1 if pct == "labels10" else 0)
            m[f"seg/fg_iou_std/{name}/{pct}"] = 0.01
    # 10%: the pretrained encoder beats the UNet (interval above 0); 100%: no measurable difference
    for pct, (lo, hi) in (("labels10", (0.02, 0.08)), ("labels100", (-0.2, 0.05))):
        base = "seg/diff_vs_unet/tokenizer/conv/frozen/" + pct
        m.update({f"{base}/mean": (lo + hi) / 2, f"{base}/ci_low": lo, f"{base}/ci_high": hi})
    m["seg/still_rising/unet/labels100"] = 1 / 3
    m["seg/still_rising/tokenizer/conv/frozen/labels100"] = 0.0
    m["seg/fg_iou/all_foreground"] = 0.16
    m["seg/fg_iou/unet"] = 0.7
    return m
