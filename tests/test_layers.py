"""The house's layers, read from the imports (every `import` in vpe_lib, at module level or inside a
function; imports under `if TYPE_CHECKING:` are for annotations and do not run): the data and model
layers import neither the trainer, the metrics, the run configuration, the stages, the figures nor the
explorers; the metrics import no stage; the run configuration (schema and profiles) imports no metric and
nothing above it; the stages import neither the report, the explorers nor the experiments; and no modules
import each other in a circle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vpe_lib"
# layer -> the layers it must not import
TOP = ("stages", "explore", "report", "experiments", "figures")
FORBIDDEN = {
    "data": ("train", "eval", "config") + TOP,
    "models": ("train", "eval", "config") + TOP,
    "eval": ("config",) + TOP,
    "train": ("config",) + TOP,
    # the run configuration is a schema and its profiles: it reads the lower layers' own config classes and
    # name lists, and nothing that computes; only the stages and what runs them read a RunConfig
    "config": ("eval",) + TOP,
    "figures": ("stages", "explore", "report", "experiments", "config"),  # figures draw what they are given
    "stages": ("explore", "report", "experiments"),  # the stages compute; the report and the explorers read them
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str] | None = None) -> set[str]:
    """vpe_lib modules a file imports when it runs (relative imports resolved; `from pkg import sub` counts
    the submodule, not the package's __init__, when `modules` says sub is a module)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vpe_lib")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("vpe_lib"):
                subs = {f"{base}.{a.name}" for a in node.names}
                found = subs & (modules or set())
                out |= found if found == subs else {base} | found
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in runtime_imports(p, set(files)) if m in files and m != name} for name, p in files.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_lower_layers_do_not_import_higher_ones():
    bad = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
           if layer(b) in FORBIDDEN.get(layer(a), ())]
    assert not bad, "back arrows:\n" + "\n".join(sorted(bad))


def test_no_modules_import_each_other_in_a_circle():
    g = graph()
    circles = []
    for start in g:  # a path from a module's imports back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in g[node]:
                if nxt == start:
                    circles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not circles, "circles:\n" + "\n".join(sorted(set(circles))[:10])


def test_the_reader_sees_type_only_and_relative_imports():
    quantizers = PACKAGE / "models" / "quantizers.py"
    assert "vpe_lib.models.tokenizer_config" not in runtime_imports(quantizers)  # under TYPE_CHECKING
    assert "vpe_lib.models.norms" in runtime_imports(quantizers)
    assert "vpe_lib.data.sharding" in runtime_imports(PACKAGE / "data" / "clip_batches.py")  # from .sharding
