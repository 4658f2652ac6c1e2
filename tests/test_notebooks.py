"""Every committed notebook: no outputs, exactly one `parameters` cell (papermill), valid nbformat."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"


def test_the_explorer_notebooks_are_not_report_pages():
    from vpe_lib.report import notebooks

    stems = [p.stem for p in notebooks()]
    explorers = [p for p in NOTEBOOKS if p.stem.startswith("explore_")]
    assert {p.stem for p in explorers} == {"explore_latents", "explore_predictions"}
    assert not set(stems) & {p.stem for p in explorers} and len(NOTEBOOKS) == len(stems) + len(explorers)
