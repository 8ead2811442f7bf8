"""The package's layers: imports point one way (cli -> experiments -> forecaster -> settings ->
training -> evaluation -> data -> model -> backbones), so the library never depends on its harness."""

import ast
from pathlib import Path

import timellm

PACKAGE = Path(timellm.__file__).parent
LAYERS = [
    "cli",
    "experiments",
    "forecaster",
    "settings",
    "training",
    "evaluation",
    "data",
    "model",
    "backbones",
]


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


def test_the_forecast_path_never_imports_the_experiment_harness():
    """forecast and backtest read their settings from timellm.settings: of the practitioner's
    commands only the demo, which trains a packaged preset, reaches into timellm.experiments."""
    harness = []
    paths = [
        PACKAGE / "settings.py",
        *(PACKAGE / "forecaster").rglob("*.py"),
        *(PACKAGE / "evaluation").rglob("*.py"),
    ]
    for path in paths:
        harness += [f"{path.name} imports {m}" for m in _imports(path) if m.startswith("timellm.experiments")]
    tree = ast.parse((PACKAGE / "cli" / "forecast.py").read_text())
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        if function.name == "cmd_demo":
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("timellm.experiments"):
                harness.append(f"cli/forecast.py:{function.name} imports {node.module}")
    module_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    harness += [
        f"cli/forecast.py imports {n.module}"
        for n in module_level
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("timellm.experiments")
    ]
    assert not harness, "\n".join(harness)


def test_the_command_line_loads_without_the_harness():
    """Building the parser (every command's options) imports nothing of timellm.experiments."""
    import subprocess
    import sys

    code = (
        "import sys; from timellm.cli.main import build_parser; build_parser(); "
        "print(any(k.startswith('timellm.experiments') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _options(parser) -> set[str]:
    import argparse

    found = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found - {"--help"}


def test_no_cli_option_is_named_below_the_cli():
    """Messages of the library and the harness name API arguments (``data_dir=``); the CLI
    writes them as its options, so a flag named below it would be wrong for every API caller."""
    import re

    from timellm.cli.main import build_parser

    options = _options(build_parser())
    named = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            # a recorded command line rewritten (the ablation summary's per-row command) is not a message
            rewritten = (
                isinstance(node, ast.Constant) and "command line, not a message" in lines[node.lineno - 1]
            )
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and not rewritten
            ):
                for option in set(re.findall(r"--[a-z][a-z0-9-]*", node.value)) & options:
                    named.append(f"{path.relative_to(PACKAGE)}:{node.lineno} names {option}")
    assert not named, "\n".join(named)


def test_the_command_line_imports_neither_torchao_nor_transformers_model_code():
    """Importing them prints torchao's kernel-load lines before logging is set up (`timellm --help`
    would show them): they load when a backbone or the int8 storage is built, quieted there."""
    import subprocess
    import sys

    code = (
        "import sys, timellm.cli.main; "
        "print(sorted(m for m in sys.modules if m == 'torchao' or m.startswith('transformers.models.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert "Failed to load" not in out.stderr, out.stderr
