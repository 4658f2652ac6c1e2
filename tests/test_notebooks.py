"""Every committed notebook: no outputs, exactly one `parameters` cell (papermill), valid nbformat."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean_and_parameterised(path):
    import json
    raw = json.loads(path.read_text())  # as committed: nbformat.read would fill a missing cell id in silently
    assert all("id" in c for c in raw["cells"]), f"{path.name}: a cell without an id (nbformat 4.5 needs one)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"


def test_the_explorer_notebooks_are_not_report_pages():
    from vpe_lib.report.build import notebooks

    stems = [p.stem for p in notebooks()]
    explorers = [p for p in NOTEBOOKS if p.stem.startswith("explore_")]
    assert {p.stem for p in explorers} == {"explore_latents", "explore_predictions"}
    assert not set(stems) & {p.stem for p in explorers} and len(NOTEBOOKS) == len(stems) + len(explorers)


def test_page_titles_number_as_the_notebooks_and_the_stage_modules_agree():
    import re

    from vpe_lib.stages.common import STAGES

    package = Path(__file__).resolve().parents[1] / "vpe_lib" / "stages"
    modules = {"data": "data_stage", "pretrain": "pretrain_stage", "predict": "predict_stage",
               "latents": "latents_stage", "heads": "heads_stage", "results": "results_stage"}
    for stage, stem in STAGES.items():
        nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert nb.cells[0].source.startswith(f"# {stem[:2]} ·"), stem  # the page title carries its number
        first = (package / f"{modules[stage]}.py").read_text().splitlines()[0]
        assert re.match(rf'"""Stage {stem[:2]}\b', first), (stage, first)
