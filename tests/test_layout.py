"""The package's layers: imports point one way (cli -> experiments -> forecaster -> training ->
evaluation -> data -> model -> backbones), so the library never depends on its harness."""

import ast
from pathlib import Path

import timellm

PACKAGE = Path(timellm.__file__).parent
LAYERS = ["cli", "experiments", "forecaster", "training", "evaluation", "data", "model", "backbones"]


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return [m for m in modules if m.startswith("timellm.")]


def test_imports_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer not in rank:
            continue
        for module in _imports(path):
            other = module.split(".")[1]
            if other in rank and rank[other] < rank[layer]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_every_layer_is_a_package_or_module_that_exists():
    for name in LAYERS:
        assert (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file(), name
