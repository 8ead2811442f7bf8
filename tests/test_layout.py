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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports, at module level or inside
    a function: ``from timellm.a import b`` names module ``timellm.a.b`` where there is one."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    imported.add(target if target in paths else base)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest circle of imports through each module on one, as a path; each circle once."""
    found = {}
    for start in sorted(graph):
        came_from, frontier = {}, [start]  # breadth first from start until it is reached again
        while frontier and start not in came_from:
            reached = []
            for module in frontier:
                for other in sorted(graph[module] - came_from.keys()):
                    came_from[other] = module
                    reached.append(other)
            frontier = reached
        if start in came_from:
            path, module = [start], came_from[start]
            while module != start:
                path.append(module)
                module = came_from[module]
            found.setdefault(frozenset(path), [start, *reversed(path[1:]), start])
    return list(found.values())


def test_no_two_modules_import_each_other_even_through_others():
    """Dependencies point one way inside the layers too: a module never ends up importing itself,
    at module level or from inside a function (where two classes need one builder, the builder
    lives in a third module above both)."""
    circles = _circles(_import_graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_circle_finder_names_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert _circles(graph) == [["a", "b", "c", "a"]]
    assert "timellm.model.variants" in _import_graph()["timellm.model"]


MAX_FUNCTION_LINES = 100  # a screen and a half is the aim (STYLE.md); past this, it is a finding
SHORT_FUNCTIONS = ["training", "cli", "experiments/runs.py", "experiments/protocols.py"]


def test_the_main_paths_are_written_in_functions_that_fit_a_screen():
    """fit, the commands, a benchmark run and the protocols read as named steps."""
    long = []
    for place in SHORT_FUNCTIONS:
        root = PACKAGE / place
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
