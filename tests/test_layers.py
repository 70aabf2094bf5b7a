"""The house's arrows point one way: read every geotag module's imports (ast, nothing imported) and check
the layer order of GUIDE section 2 and that no module reaches itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

import geotag

ROOT = Path(geotag.__file__).parent
# The rank of each package; a module may import only modules of a lower or equal rank. Top-level helper
# modules (errors, config, progress) sit at the bottom, the tensor cache beside io; cli, the review app
# (geotag/review: a local web server over the engine) and the rest on top.
RANK = {"base": 0, "io": 1, "geo": 1, "models": 2, "engine": 3, "eval": 3, "review": 4, "top": 4}
BASE_MODULES = {"geotag", "geotag.errors", "geotag.config", "geotag.progress"}
BESIDE = {"geotag.cache": "io"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module -> the geotag modules it imports anywhere (top level, functions, TYPE_CHECKING)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    if module in BESIDE:
        return BESIDE[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else "top"


def test_graph_sees_the_package():
    graph = import_graph()
    assert "geotag.cli" in graph and "geotag.models.registry" in graph
    assert "geotag.engine.predict" in graph["geotag.cli"] or any("engine" in m for m in graph["geotag.cli"])


def test_layers_point_down():
    graph = import_graph()
    wrong = sorted(
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        for dst in dsts
        if RANK[layer(dst)] > RANK[layer(src)]
    )
    assert wrong == []


def arrows(source_layer: str, *target_layers: str) -> list[str]:
    graph = import_graph()
    return sorted(
        f"{s} -> {d}"
        for s, ds in graph.items()
        for d in ds
        if layer(s) == source_layer and layer(d) in target_layers
    )


def test_eval_does_not_import_the_engine():
    assert arrows("eval", "engine") == []


def test_models_know_nothing_of_the_engine_or_the_cli():
    assert arrows("models", "engine", "eval", "top") == []


def test_io_and_geo_import_no_model():
    assert arrows("io", "models", "engine", "eval", "top") == []
    assert arrows("geo", "models", "engine", "eval", "top") == []


def test_no_import_cycles():
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


# Model modules read no files (GUIDE section 2): reading lives in geotag/io (geotag/io/weights.py for weight
# and config files) and is called by the builders and loaders listed here, which may also read directly.
LOADER_MODULES = {
    "geotag.models.registry",  # models.json: the catalogue of published models
    "geotag.models.checkpoint",  # geotag checkpoint folders (config.json, safetensors, trainer state)
    "geotag.models.hub",  # the Hugging Face cache and downloads
    "geotag.models.catalog",  # which weights are where, for `geotag models`
    "geotag.models.geoclip_builder",  # builds GeoCLIP from a checkpoint folder
}
# Calls that read a file: a bare name (open, load_file) or an attribute (torch.load, Path.read_text).
READING_NAMES = {"open", "load_file", "safe_open", "read_parquet", "read_table", "read_csv", "ParquetFile"}
READING_ATTRS = {
    "read_text", "read_bytes", "load_file", "safe_open", "read_parquet", "read_table", "read_csv",
    "read_json", "ParquetFile", "fromfile", "memmap", "read_schema", "read_metadata",
}  # fmt: skip
READING_OWNER_ATTRS = {
    ("torch", "load"),
    ("json", "load"),
    ("np", "load"),
    ("numpy", "load"),
    ("pickle", "load"),
}
READING_OWNER_ATTRS |= {
    ("os", "open"),
    ("io", "open"),
    ("gzip", "open"),
    ("Image", "open"),
    ("pq", "read_table"),
}


def file_reads(path: Path) -> list[str]:
    """Every call in a module's source that reads a file, as 'line: call'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in READING_NAMES:
            found.append(f"{node.lineno}: {func.id}()")
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            if func.attr in READING_ATTRS or (owner, func.attr) in READING_OWNER_ATTRS:
                found.append(f"{node.lineno}: {owner or '...'}.{func.attr}()")
    return found


def test_the_file_read_check_sees_reads(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json, torch\nfrom pathlib import Path\n"
        "a = torch.load('w.pth', weights_only=True)\nb = json.loads(Path('c.json').read_text())\n"
        "with open('x') as fh:\n    pass\nc = load_file('m.safetensors')\nd = json.loads('{}')\n"
    )
    assert sorted(int(r.split(":")[0]) for r in file_reads(sample)) == [3, 4, 5, 7]


def test_model_modules_read_no_files():
    models = {module_name(p): p for p in (ROOT / "models").glob("*.py")}
    assert set(models) >= LOADER_MODULES  # a renamed loader is renamed here too
    reads = {name: file_reads(path) for name, path in sorted(models.items()) if name not in LOADER_MODULES}
    assert {name: found for name, found in reads.items() if found} == {}
