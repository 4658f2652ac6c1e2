"""A static, interactive embedding for the HTML report: hover a point and see the patch under its
token, its class and its foreground share; zoom, pan and toggle classes in the legend.

plotly draws it (no kernel, no network): the page references `plotly.min.js` beside it, which the
report writer copies there once (`write_plotly_js`); the patches travel inside the page as small
PNG data URIs (customdata), shown by a few lines of script on hover. In JupyterLab the live
ipywidgets explorer (`vpe_lib.explore.latents.umap_explorer`) does this with a kernel instead."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from vpe_lib.atomic import atomic_write_text

PLOTLY_JS = "plotly.min.js"  # the file name plotly's include_plotlyjs="directory" refers to


def png_data_uri(patch: np.ndarray, scale: int = 4) -> str:
    """An (h, w, 3) uint8 patch as a nearest-neighbour enlarged PNG data URI."""
    if patch.ndim != 3 or patch.shape[2] != 3 or patch.dtype != np.uint8:
        raise ValueError(f"a patch must be (h, w, 3) uint8, got {patch.shape} {patch.dtype}")
    img = Image.fromarray(patch).resize((patch.shape[1] * scale, patch.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def hover_embedding_html(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                         patches: np.ndarray, class_names: Sequence[str], colours: np.ndarray, *,
                         fg_fraction: dict[str, np.ndarray] | None = None, div_id: str = "hover-umap",
                         height: int = 430) -> str:
    """One plotly figure with a panel per embedding (e.g. pretrained and random, the same tokens),
    points coloured by class (`colours`: (n_classes, 3) uint8), and a preview box that shows the
    hovered token's patch. Returns an HTML fragment for `IPython.display.HTML`; its script tag
    loads `plotly.min.js` from the page's folder."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots

    names = list(embeddings)
    if not names:
        raise ValueError("hover_embedding_html needs at least one embedding")
    n = len(patches)
    for name in names:
        if len(embeddings[name]) != n or len(labels[name]) != n:
            raise ValueError(f"embedding {name!r}: {len(embeddings[name])} points and {len(labels[name])} labels "
                             f"for {n} patches")
    # each patch once, at its own size (the browser enlarges it): ~1 kB a token instead of one copy per panel
    uris = [png_data_uri(p, scale=1) for p in patches]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{k} encoder" for k in names],
                        horizontal_spacing=0.04)
    for col, name in enumerate(names, start=1):
        emb, lab = np.asarray(embeddings[name]), np.asarray(labels[name])
        fg = None if fg_fraction is None else np.asarray(fg_fraction[name])
        for c in np.unique(lab):
            sel = np.flatnonzero(lab == c)
            rgb = colours[int(c)]
            text = [f"{class_names[int(c)]}" + ("" if fg is None else f"<br>foreground {fg[i]:.0%}") + f"<br>token {i}"
                    for i in sel]
            fig.add_trace(go.Scatter(  # SVG: no WebGL needed (headless, GPU-less machines)
                x=emb[sel, 0], y=emb[sel, 1], mode="markers", name=class_names[int(c)],
                legendgroup=class_names[int(c)], showlegend=col == 1,
                marker=dict(size=5, color=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"),
                # plain JSON ints: a numpy int64 array would travel as binary that plotly.js misreads
                customdata=sel.tolist(), text=text, hovertemplate="%{text}<extra></extra>"),
                row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
        fig.update_yaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), legend=dict(itemsizing="constant"),
                      template="plotly_white")
    preview = f"{div_id}-patch"
    # the hovered token's patch in the box beside the plot (plotly's hover label holds text only)
    # (the box is looked up on hover: this script runs before the page has parsed it)
    post = (f"var gd = document.getElementById('{{plot_id}}'), patches = {json.dumps(uris)};"
            "gd.on('plotly_hover', function (ev) { var p = ev.points[0],"
            f" box = document.getElementById({json.dumps(preview)});"
            " box.querySelector('img').src = patches[p.customdata];"
            " box.querySelector('span').innerHTML = p.text; });")
    plot = pio.to_html(fig, include_plotlyjs="directory", full_html=False, post_script=post, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return (f'<div style="display:flex;gap:12px;align-items:flex-start"><div style="flex:1;min-width:0">{plot}</div>'
            f'<div id="{html.escape(preview)}" style="width:140px;font:12px sans-serif">'
            f'<img alt="patch under the hovered token" style="width:128px;height:128px;image-rendering:pixelated;'
            f'border:1px solid #ccc" src="{uris[0]}"><br><span>hover a point</span></div></div>')


def write_plotly_js(folder: Path) -> Path:
    """plotly.js (from the installed plotly package) as `folder/plotly.min.js`, for pages that
    reference it; rewritten only when its content changed."""
    from plotly.offline import get_plotlyjs


    path = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not path.exists() or path.read_text(encoding="utf-8") != js:
        atomic_write_text(js, path)
        path.chmod(0o644)  # a page's asset: readable by whoever serves or opens the report
    return path
