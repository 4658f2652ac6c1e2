"""Watch a future being decoded from one frame (ipywidgets, live in JupyterLab: `make lab`).

`PredictionExplorer` shows, for a test clip of a run and one of its prediction models (masked, AR,
or their random-weight twins):
- the true clip, the tokenizer's reconstruction of it (the ceiling any token model can reach) and
  the copy-tokens baseline (the condition's codes at every future place);
- several samples from the same condition frame, at a decoding step chosen with a slider: for the
  masked model the MaskGIT iteration (which tokens are committed so far, this step's guess for the
  rest); for the AR model the raster order (the first tokens sampled, the rest still the condition's);
- where the model knows more than the code table: bits of the true future under the model minus
  under the table, per token (blue: the model is surer of what happened).

The logic is plain torch / numpy (`PredictionData`, `PredictionExplorer.state`), so tests drive it
without a kernel; `render()` draws the current view as a matplotlib figure (what a static page shows).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from torch import nn

from vpe_lib.config import load_config
from vpe_lib.data.samplers import from_unit_range
from vpe_lib.models.transformer import ARVideoTransformer, MaskedVideoTransformer, build_predictor
from vpe_lib.stages.common import require
from vpe_lib.eval.token_baselines import code_table_bits, fit_baselines
from vpe_lib.stages.predict_stage import cached_tokens, stage_videos
from vpe_lib.stages.predictor_training import load_predictor, predictor_folder
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.explore.latents import bind_controls

LN2 = float(np.log(2.0))


class NoPredictionModels(FileNotFoundError):
    """The run has no trained prediction model to show."""


class PredictionData:
    """One run's test clips as the prediction models see them: `tokens` (codes N t h w, cond N cf h w,
    video N, start N, as stage 03 caches them), the true frames from `videos` (a PredictionVideos), the tokenizer that
    decodes codes, the models by name, and the code table (`table`: predict_stage.TablePrior)."""

    def __init__(self, tokenizer, models: dict[str, nn.Module], tokens: dict[str, np.ndarray], videos, table, *,
                 clip_frames: int, maskgit_steps: int = 12):
        if not models:
            raise NoPredictionModels("no prediction model given")
        self.tokenizer, self.models, self.videos, self.table = tokenizer.eval(), models, videos, table
        self.codes = tokens["codes"].astype(np.int64)
        self.cond = tokens["cond"].astype(np.int64)
        self.video, self.start = tokens["video"], tokens["start"]
        self.clip_frames, self.maskgit_steps = clip_frames, maskgit_steps
        self.cond_frames = self.cond.shape[1]
        self._decoded: dict[tuple, np.ndarray] = {}
        self._samples: dict[tuple, list] = {}

    @property
    def n_clips(self) -> int:
        return len(self.codes)

    @property
    def n_future(self) -> int:
        return int(np.prod(self.codes.shape[1:])) - int(np.prod(self.cond.shape[1:]))

    def kind(self, name: str) -> str:
        return "ar" if isinstance(self.models[name], ARVideoTransformer) else "masked"

    def true_frames(self, i: int) -> np.ndarray:
        s = int(self.start[i])
        return self.videos.frames(int(self.video[i]), slice(s, s + self.clip_frames))

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes n t h w -> frames n T H W 3 uint8 (cached: sliders revisit the same codes)."""
        key = (codes.shape, codes.tobytes())
        if key not in self._decoded:
            frames = from_unit_range(self.tokenizer.decode_codes(torch.from_numpy(codes)))
            self._decoded[key] = rearrange(frames, "n c t h w -> n t h w c")
        return self._decoded[key]

    def copy_tokens(self, i: int) -> np.ndarray:
        """The condition's codes at every future place (t h w)."""
        out = self.codes[i].copy()
        out[self.cond_frames:] = self.cond[i, -1]
        out[:self.cond_frames] = self.cond[i]
        return out

    def references(self, i: int) -> dict[str, np.ndarray]:
        """Rows shown above the samples: the true clip, its reconstruction, the copy-tokens baseline."""
        decoded = self.decode(np.stack([self.codes[i], self.copy_tokens(i)]))
        return {"true clip": self.true_frames(i), "tokenizer (ceiling)": decoded[0], "copy tokens": decoded[1]}

    @torch.no_grad()
    def model_bits(self, i: int, name: str) -> np.ndarray:
        """Bits of the true future tokens under a model, t' h w (as stage 03 scores it)."""
        model = self.models[name].eval()
        c = torch.from_numpy(self.codes[i:i + 1])
        k = torch.from_numpy(self.cond[i:i + 1])
        logp = model.future_log_probs(c, k) if self.kind(name) == "ar" else model.future_log_probs(k)
        true = c[:, self.cond_frames:]
        return (-logp.gather(-1, true.unsqueeze(-1)).squeeze(-1) / LN2)[0].numpy()

    def table_bits(self, i: int) -> np.ndarray:
        """Bits of the true future tokens under the code table, t' h w."""
        t = self.table
        return code_table_bits(self.codes[i:i + 1, self.cond_frames:], self.cond[i:i + 1, 0], t.counts, t.unigram,
                               t.eps)[0]

    @torch.no_grad()
    def samples(self, i: int, name: str, *, temperature: float, seed: int, n_samples: int) -> list[dict]:
        """Per decoding step s = 1..maskgit_steps: {"codes": n t h w shown (the guess where not yet
        committed: masked; the condition's codes: AR), "committed": n t' h w}. The last step is the
        finished samples; the same seed gives the same samples."""
        key = (i, name, float(temperature), int(seed), int(n_samples))
        if key in self._samples:
            return self._samples[key]
        model = self.models[name].eval()
        cond = torch.from_numpy(self.cond[i:i + 1]).expand(n_samples, -1, -1, -1).contiguous()
        g = torch.Generator().manual_seed(int(seed))
        cf, steps = self.cond_frames, self.maskgit_steps
        out = []
        if isinstance(model, MaskedVideoTransformer):
            for step in model.decode_steps(cond, steps=steps, temperature=temperature, generator=g):
                out.append({"codes": step.guess.numpy(), "committed": step.committed[:, cf:].numpy()})
        else:
            final = model.generate(cond, temperature=temperature, generator=g).numpy()
            copy = np.broadcast_to(self.copy_tokens(i), final.shape)
            order = np.arange(self.n_future).reshape(final[:, cf:].shape[1:])  # raster order of the future
            for s in range(1, steps + 1):
                done = order < round(self.n_future * s / steps)
                codes = final.copy()
                codes[:, cf:] = np.where(done, final[:, cf:], copy[:, cf:])
                out.append({"codes": codes, "committed": np.broadcast_to(done, final[:, cf:].shape).copy()})
        self._samples[key] = out
        return out


class PredictionExplorer:
    """Controls: test clip, model, temperature, seed, decoding step. `state()` and `render()` are the
    kernel-free API; `widget` the live one."""

    def __init__(self, data: PredictionData, *, clip: int = 0, model: str | None = None, temperature: float = 1.0,
                 seed: int = 0, n_samples: int = 3, step: int | None = None):
        self.data = data
        self.clip, self.temperature, self.seed, self.n_samples = clip, temperature, seed, n_samples
        self.model = model or next(iter(data.models))
        self.step = data.maskgit_steps if step is None else step
        self._widget = None

    def _check(self) -> None:
        if self.model not in self.data.models:
            raise ValueError(f"unknown model {self.model!r}; this run has {', '.join(self.data.models)}")
        if not 0 <= self.clip < self.data.n_clips:
            raise ValueError(f"clip {self.clip} out of range: the run has {self.data.n_clips} test clips")
        if not 1 <= self.step <= self.data.maskgit_steps:
            raise ValueError(f"step {self.step} out of range 1..{self.data.maskgit_steps}")

    def current(self) -> dict:
        self._check()
        return self.data.samples(self.clip, self.model, temperature=self.temperature, seed=self.seed,
                                 n_samples=self.n_samples)[self.step - 1]

    def state(self) -> dict:
        cur = self.current()
        d = self.data
        model_bits, table_bits = d.model_bits(self.clip, self.model), d.table_bits(self.clip)
        return {"clip": self.clip, "video": int(d.video[self.clip]), "start": int(d.start[self.clip]),
                "model": self.model, "kind": d.kind(self.model), "step": self.step, "steps": d.maskgit_steps,
                "committed": int(cur["committed"][0].sum()), "n_future": d.n_future,
                "sample_codes": cur["codes"], "bits_model": float(model_bits.mean()),
                "bits_table": float(table_bits.mean())}

    def render(self):
        d, st, cur = self.data, self.state(), self.current()
        refs = d.references(self.clip)
        shown = d.decode(np.ascontiguousarray(cur["codes"]))
        rows = [*refs.items(), *((f"sample {k + 1}", shown[k]) for k in range(len(shown)))]
        n_t = d.clip_frames
        diff = d.model_bits(self.clip, self.model) - d.table_bits(self.clip)  # t' h w
        fig = plt.figure(figsize=(2.0 * (n_t + 2) + 1, 1.9 * len(rows) + 0.6))
        gs = fig.add_gridspec(len(rows), n_t + 2, wspace=0.05, hspace=0.25, top=0.9)
        for r, (title, frames) in enumerate(rows):
            for t in range(n_t):
                ax = fig.add_subplot(gs[r, t])
                ax.imshow(frames[t], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(title, fontsize=8)
                if r == 0:
                    ax.set_title(f"frame {t}" + (" (condition)" if t == 0 else ""), fontsize=8)
        committed = cur["committed"][0].astype(float)  # sample 1's committed future tokens
        ax = fig.add_subplot(gs[: max(1, len(rows) // 2), n_t:])
        ax.imshow(np.concatenate(list(committed), axis=1), cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"sample 1: {st['committed']}/{st['n_future']} future tokens committed", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        ax = fig.add_subplot(gs[max(1, len(rows) // 2):, n_t:])
        lim = max(float(np.abs(diff).max()), 1e-6)
        im = ax.imshow(np.concatenate(list(diff), axis=1), cmap="coolwarm", vmin=-lim, vmax=lim,
                       interpolation="nearest")
        ax.set_title(f"bits of the true future: model - code table\n(mean {st['bits_model']:.2f} vs "
                     f"{st['bits_table']:.2f}; blue: the model knows more)", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, shrink=0.8)
        how = "MaskGIT iteration" if st["kind"] == "masked" else "raster order, share of the future sampled"
        fig.suptitle(f"{self.model}: test clip {self.clip} (video {st['video']}, frames {st['start']}-"
                     f"{st['start'] + n_t - 1}); step {self.step}/{st['steps']} ({how}); temperature "
                     f"{self.temperature:g}, seed {self.seed}", fontsize=9)
        return fig

    @property
    def widget(self):
        """The ipywidgets box (controls + the live figure)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self):
        import ipywidgets as w

        d = self.data
        controls = {
            "clip": w.IntSlider(self.clip, 0, d.n_clips - 1, description="test clip"),
            "model": w.Dropdown(options=list(d.models), value=self.model, description="model"),
            "temperature": w.FloatSlider(self.temperature, min=0.0, max=2.0, step=0.1, description="temperature"),
            "seed": w.IntSlider(self.seed, 0, 99, description="seed"),
            "step": w.IntSlider(self.step, 1, d.maskgit_steps, description="decoding step"),
        }
        out = bind_controls(self, controls)
        self.controls, self.output = controls, out
        return w.VBox([w.HBox([controls["clip"], controls["model"], controls["temperature"]]),
                       w.HBox([controls["seed"], controls["step"]]), out])


def prediction_explorer(run_dir: str | Path, *, random_twins: bool = True, **kw) -> PredictionExplorer:
    """The explorer on a run's stage-03 models (the main tokenizer's), its test clips and its code table;
    with `random_twins`, each model's random-weight twin too. A clear error when the run has none."""
    run_dir = Path(run_dir)
    predict = run_dir / "predict"
    kinds = [k for k in ("masked", "ar") if (predict / k / "latest.json").exists()]
    if not kinds:
        skipped = ""
        metrics = predict / "metrics.json"
        if metrics.exists() and "predict/skipped_no_video" in json.loads(metrics.read_text()):
            skipped = " (stage 03 skipped it: the run's data source holds still images, no video)"
        raise NoPredictionModels(
            f"{run_dir} has no prediction models{skipped}: neither {predict / 'masked' / 'latest.json'} nor "
            f"{predict / 'ar' / 'latest.json'} exists; run notebook 03_predict (or `vpe report`) with this run_dir first")
    cfg = load_config(require(run_dir, "predict", "config.json") / "config.json")
    tokenizer = load_tokenizer(run_dir)
    videos = stage_videos(cfg, run_dir)
    tokens, _ = cached_tokens(cfg, run_dir, predict, tokenizer, videos=videos)
    K, cf = tokenizer.cfg.codebook_size, cfg.predict.cond_frames
    _, table, _ = fit_baselines(tokens, K, cf)
    grid = tuple(tokens["test"]["codes"].shape[1:])
    models: dict[str, nn.Module] = {}
    for kind in kinds:
        models[kind] = load_predictor(predictor_folder(predict, kind), codebook_size=K, grid=grid)
    if random_twins:
        for kind in kinds:
            torch.manual_seed(10_000)  # as the heads stage draws seed 0's twin
            models[f"random_{kind}"] = build_predictor(kind, models[kind].cfg).eval()
    data = PredictionData(tokenizer, models, tokens["test"], videos["test"], table, clip_frames=cfg.predict.clip_frames,
                          maskgit_steps=cfg.predict.maskgit_steps)
    return PredictionExplorer(data, **kw)
