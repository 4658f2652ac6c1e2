"""Where a rendered study's minutes went, run by run, and what it would cost on an idle host.

Reads every training run a study left in its run folder (the tokenizers, the quantizer comparison, the
masked and AR transformers, the masking study, every head run) and sums, per component:
- the wall time each run measured (`elapsed_s` at its last logged step), whatever else shared the cores;
- an idle-host estimate: updates x batch / the component's sustained rate, taken as the 90th percentile
  of the items-per-second its runs logged (the rate they reached when nothing else ran). Evaluation,
  feature extraction and page rendering are not in it, so it is a floor for the training alone.

    python bench/study_budget.py --run-dir runs/study [--json bench/results/study_budget.json]

The budget question it answers: which part of the study profile is pretraining, and which cut of the heads
grid would bring the whole under a given number of minutes on this host (the speed is printed with it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpe_lib.host_speed import host_speed  # noqa: E402
from vpe_lib.stages.pretrain_stage import read_history  # noqa: E402


def read_run(folder: Path) -> dict | None:
    """steps, batch, elapsed and the logged rates of one training run folder (None if it logged nothing)."""
    cfg = folder / "train_config.json"
    timed = [r for r in read_history(folder) if "items_per_s" in r]
    if not timed:
        return None
    batch = json.loads(cfg.read_text()).get("batch_size", 1) if cfg.exists() else 1
    return {"steps": timed[-1]["step"], "batch": batch, "elapsed_s": timed[-1]["elapsed_s"],
            "rates": [r["items_per_s"] for r in timed]}


def components(run_dir: Path) -> dict[str, list[dict]]:
    """{component: [run, ...]}: pretraining (tokenizers, quantizer comparison, predictors, masking study)
    and the heads grid, one component per head method."""
    out: dict[str, list[dict]] = {}

    def add(name: str, folder: Path) -> None:
        run = read_run(folder)
        if run is not None:
            out.setdefault(name, []).append({**run, "folder": str(folder.relative_to(run_dir))})

    pre = run_dir / "pretrain"
    add("pretrain/tokenizer", pre)
    for seed in sorted((pre / "seeds").glob("*")):
        add("pretrain/tokenizer", seed)
    for q in sorted((pre / "compare").glob("*")):
        add("pretrain/quantizer_comparison", q)
    for kind in ("masked", "ar"):
        for run in sorted((run_dir / "predict" / kind).glob("*")):
            add(f"pretrain/{kind}_transformer", run)
    for log in sorted((run_dir / "predict" / "masking").glob("*/*/*/*/metrics.jsonl")):
        strategy, budget = log.parts[-5], log.parts[-4]
        add(f"pretrain/masking/{strategy}/{budget}", log.parent)
    for method in sorted((run_dir / "heads" / "runs").glob("*")):
        for run in sorted(method.glob("*")):
            add(f"heads/{method.name.replace('__', '/')}", run)
    return out


def summarise(comps: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for name, runs in comps.items():
        rate = float(np.percentile([r for run in runs for r in run["rates"]], 90))
        idle = sum(run["steps"] * run["batch"] / rate for run in runs)
        table[name] = {"runs": len(runs), "updates": int(sum(r["steps"] for r in runs)),
                       "measured_s": round(sum(r["elapsed_s"] for r in runs), 1),
                       "idle_estimate_s": round(idle, 1), "sustained_items_per_s": round(rate, 2)}
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/study"))
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if not a.run_dir.exists():
        print(f"study_budget: no run folder {a.run_dir}", file=sys.stderr)
        return 1
    table = summarise(components(a.run_dir))
    if not table:
        print(f"study_budget: no training runs under {a.run_dir}", file=sys.stderr)
        return 1
    stages = {}
    for stage in ("data", "pretrain", "predict", "latents", "heads", "results"):
        stamp = a.run_dir / stage / "stage_key.json"
        if stamp.exists():
            stages[stage] = json.loads(stamp.read_text()).get("wall_s")
    speed = host_speed()
    groups = {"pretraining": [k for k in table if k.startswith("pretrain/")],
              "heads": [k for k in table if k.startswith("heads/")]}
    totals = {g: {"measured_s": round(sum(table[k]["measured_s"] for k in ks), 1),
                  "idle_estimate_s": round(sum(table[k]["idle_estimate_s"] for k in ks), 1)} for g, ks in groups.items()}
    print(f"{'component':48s} {'runs':>4s} {'updates':>8s} {'measured s':>11s} {'idle est. s':>11s}")
    for name, row in table.items():
        print(f"{name:48s} {row['runs']:4d} {row['updates']:8d} {row['measured_s']:11.0f} {row['idle_estimate_s']:11.0f}")
    for g, t in totals.items():
        print(f"{'TOTAL ' + g:48s} {'':4s} {'':8s} {t['measured_s']:11.0f} {t['idle_estimate_s']:11.0f}")
    share = totals["pretraining"]["idle_estimate_s"] / max(1e-9, sum(t["idle_estimate_s"] for t in totals.values()))
    print(f"pretraining's share of the training time on an idle host: {share:.0%}; "
          f"stage walls as recorded: {stages}; host fp32 matmul {speed.get('fp32_matmul_gflops', 0):.0f} GFLOP/s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"run_dir": str(a.run_dir), "components": table, "totals": totals,
                                      "pretraining_share_idle": share, "stage_wall_s": stages,
                                      "host": speed}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
