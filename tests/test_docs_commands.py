"""What the documents promise is what runs: every `timellm` command of README.md and docs/*.md is
collected (shell code blocks, line continuations joined and comments dropped, `accelerate launch`
lines by the command they launch; and the complete commands quoted in the prose) and checked
without doing the work. It parses; its presets and its --set settings exist with valid values; a
training or forecasting command plans its memory with --dry-run (the run's own refusal, before
anything loads) within the machine its document describes, loading no weight and writing nothing.
The cheap ones (example-data, presets, info, forecasting with a saved tiny adapter) run for real."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import shared_datasets
from timellm.cli import main
from timellm.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("", "bash", "sh", "shell", "console")

# The machine each command is judged on: the memory (GiB) one process may use there. A document
# that states its machine is held to it; every other command to a laptop.
LAPTOP_GIB = 16
STATED_GIB = {
    # docs/scaling.md, Paper scale: "a 2-core AMD EPYC (Zen 4, AVX-512 BF16, 24 GiB)"
    ("docs/scaling.md", "random-llama-7b"): 24,
}
GPU_GIB = 24  # `accelerate launch` on GPUs: the smallest GPU the documents train on ("24 GB GPUs")
# commands that plan their memory before they load anything (--dry-run), and those cheap enough to run
DRY_RUN = ("train", "forecast", "backtest", "transfer", "m4")
RUN_FOR_REAL = ("example-data", "presets", "info")
# what a command in a code block names as a placeholder for the reader's own value
PLACEHOLDERS = {"DATA": "data folder"}


@dataclass(frozen=True)
class Documented:
    """A `timellm` command as a document shows it."""

    document: str  # path relative to the repository
    line: int
    argv: tuple[str, ...]  # the arguments after `timellm`
    processes: int = 1  # processes it runs as on one machine (`accelerate launch --num_processes`)
    gpu: bool = False  # launched on GPUs

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: timellm {shlex.join(self.argv)}"


def _code_blocks(text: str):
    """(first line number, code) of every shell code block."""
    language, start, lines = None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            if language is None:
                language, start, lines = line.strip()[3:].strip(), number + 1, []
            else:
                if language in SHELLS:
                    yield start, "\n".join(lines)
                language = None
        elif language is not None:
            lines.append(line)


def _launched(tokens: list[str]) -> tuple[list[str], int, bool] | None:
    """(arguments after `timellm`, processes, on GPUs) of one shell command; None if it runs no timellm."""
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        env[name] = value
    if tokens[:1] == ["timellm"]:
        return tokens[1:], 1, False
    if tokens[:2] != ["accelerate", "launch"]:
        return None
    for i, token in enumerate(tokens):
        if token == "timellm.cli" and tokens[i - 1] == "-m" or token.endswith("which timellm)"):
            launcher, argv = tokens[2:i], tokens[i + 1 :]
            break
    else:
        return None
    processes = int(launcher[launcher.index("--num_processes") + 1]) if "--num_processes" in launcher else 1
    return argv, processes, "--cpu" not in launcher and env.get("ACCELERATE_USE_CPU") != "1"


def _block_commands(document: str, start: int, code: str):
    logical, first = "", start
    for number, line in enumerate(code.splitlines(), start):
        if not logical:
            first = number
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        tokens = shlex.split(logical, comments=True)
        logical = ""
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token not in ("&&", ";", "||"):
                segment.append(token)
                continue
            launched = _launched(segment) if segment else None
            if launched is not None:
                argv, processes, gpu = launched
                yield Documented(document, first, tuple(argv), processes, gpu)
            segment = []


def _prose_commands(document: str, text: str):
    """Complete commands quoted in the prose: `timellm <command> <arguments>`. A quote that names a
    command (`timellm train`) or one of its options (`timellm train --out`), or shows a placeholder
    (<p>, [--backbone ...], ...), is not a command."""
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for match in re.finditer(r"`(timellm\s[^`]+)`", prose):
        tokens = shlex.split(match.group(1))
        if len(tokens) <= 2 or (len(tokens) == 3 and tokens[2].startswith("-")):
            continue
        if any(mark in token for token in tokens for mark in ("<", "[", "...")):
            continue
        yield Documented(document, prose[: match.start()].count("\n") + 1, tuple(tokens[1:]))


def documented_commands() -> list[Documented]:
    found = []
    for path in DOCUMENTS:
        text, name = path.read_text(), str(path.relative_to(ROOT))
        for start, code in _code_blocks(text):
            found.extend(_block_commands(name, start, code))
        found.extend(_prose_commands(name, text))
    return found


COMMANDS = documented_commands()


def test_the_documents_commands_are_found():
    """The collector sees the commands it should: a broken collector must not pass every check."""
    assert len(COMMANDS) >= 40
    shown = {str(c).split(": ", 1)[1] for c in COMMANDS}
    assert "timellm example-data etth1.csv" in shown
    assert any(c.argv[:3] == ("train", "--preset", "ETTh1-96") and c.processes == 8 for c in COMMANDS)
    assert any("backbone=random-llama-7b" in c.argv and c.argv[0] == "train" for c in COMMANDS)
    assert any(c.argv[0] == "m4" for c in COMMANDS) and any(c.argv[0] == "forecast" for c in COMMANDS)


def _machine_gib(command: Documented) -> float:
    if command.gpu:
        return GPU_GIB
    text = " ".join(command.argv)
    stated = [gib for (doc, mark), gib in STATED_GIB.items() if doc == command.document and mark in text]
    return (stated[0] if stated else LAPTOP_GIB) / command.processes


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding what the documents' commands read: the example data (etth1.csv, and as
    data.csv) and an adapter saved by a forecast with the tiny backbone (adapter/)."""
    folder = tmp_path_factory.mktemp("documents")
    assert main(["example-data", str(folder / "etth1.csv")]) == 0
    shutil.copy(folder / "etth1.csv", folder / "data.csv")
    tiny = shlex.split("--backbone tiny-random-llama --max-steps 2 --set d_ff=16 --set num_prototypes=20")
    adapter = ["--save", str(folder / "adapter"), *tiny]
    saved = ["forecast", str(folder / "data.csv"), "--horizon", "24", *adapter]
    assert main([*saved, "--out", str(folder / "saved.csv")]) == 0
    (folder / "saved.csv").unlink()
    return folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_documented_command_runs_as_written(command, workdir, monkeypatch, capsys):
    check(command, workdir, monkeypatch, capsys)


PAPER_SCALE = (
    *("train", "--preset", "ETTh1-96", "--set", "backbone=random-llama-7b", "--set", "weights=bf16"),
    *("--set", "gradient_checkpointing=true", "--set", "train.batch_size=1"),
)


@pytest.mark.parametrize(
    "argv, found",
    [
        # the paper-scale command without max_test_windows=1: 32 test windows of 7 series on 24 GiB
        (PAPER_SCALE, "needs about .* GiB for inference of 224 series"),
        (("train", "--preset", "ETTh1-96-cpu", "--set", "no_such_setting=1"), "unknown setting"),
        (("train", "--preset", "ETTh1-96-cpu", "--set", "llm_layers=-1"), "llm_layers"),
        (("forecast", "etth1.csv", "--horizon", "24", "--no-such-option"), "unrecognized arguments"),
        (("m4", "--frequency", "Fortnightly"), "Fortnightly"),
    ],
)
def test_a_command_that_drifted_is_caught(argv, found, workdir, monkeypatch, capsys):
    with pytest.raises(AssertionError, match=found):
        check(Documented("docs/scaling.md", 1, argv), workdir, monkeypatch, capsys)


def check(command: Documented, workdir: Path, monkeypatch, capsys) -> None:
    """Parse ``command``, resolve its settings, plan it (--dry-run) or run it if it is cheap."""
    data = shared_datasets()
    argv = [str(data) if a in PLACEHOLDERS and data else a for a in command.argv]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse: an unknown option, a bad value; --help exits 0
        assert stop.code == 0, f"{command}\n{capsys.readouterr().err}"
        return
    uses = {getattr(args, "preset", None), getattr(args, "source", None), getattr(args, "target", None)}
    if data is None and (args.command in ("m4", "transfer") or uses - {None, "ETTh1", "ETTh1-96"}):
        pytest.skip("benchmark data folder not found (set TIMELLM_DATA)")
    if data is not None:
        monkeypatch.setenv("TIMELLM_DATA", str(data))
    monkeypatch.chdir(workdir)
    # the documents' machines multiply bf16 natively (Sapphire Rapids, Zen 4): plan as they would
    monkeypatch.setattr("timellm.model.precision.emulation_reason", lambda precision, device: None)
    if args.command == "ablate":  # trains, no dry run: its settings, budget and variants resolve
        from timellm.cli.experiments import _resolve_preset
        from timellm.experiments.ablation import resolve_budget, resolve_variants

        resolve_budget(_resolve_preset(args).train, args.budget)
        resolve_variants(args.variants)
        return
    if args.command in DRY_RUN and not getattr(args, "resume", None):
        _dry_run(command, argv, workdir, monkeypatch, capsys)
    if args.command in RUN_FOR_REAL or (args.command == "forecast" and args.model):
        code = main(argv)
        assert code == 0, f"{command}\n{capsys.readouterr().err}"


def _dry_run(command: Documented, argv: list[str], workdir: Path, monkeypatch, capsys) -> None:
    """The command with --dry-run on its document's machine: it fits, loads nothing, writes nothing."""

    def no_load(*args, **kwargs):
        raise AssertionError("a dry run loaded a backbone")

    with monkeypatch.context() as patch:
        patch.setenv("TIMELLM_MEMORY_LIMIT", f"{_machine_gib(command)}G")
        patch.setattr("timellm.model.modeling.load_backbone", no_load)
        before = _listing(workdir)
        code = main([*argv, "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, f"{command}\n{captured.err}"
    assert "fits: a peak of about" in captured.out or "no language model" in captured.out
    assert _listing(workdir) == before, f"{command}: the dry run wrote files"
