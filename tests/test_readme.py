"""The README is the product page: its own-data commands run exactly as written, on the example data
(a tiny backbone and budget appended), and every relative link of the documents resolves."""

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from timellm.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OWN_DATA = "## Forecast and backtest your own CSV"
# what the test adds to each training command: a backbone of a few thousand weights, two steps
TINY = shlex.split("--backbone tiny-random-llama --max-steps 2 --set d_ff=16 --set num_prototypes=20")
# statsforecast's AutoARIMA takes minutes on hourly series (season 24): the test keeps the fast ones
FAST_BASELINES = ["--baselines", "AutoETS,AutoTheta,SeasonalNaive,Naive"]


def own_data_commands() -> list[str]:
    """The `timellm` lines of the README's own-data section, as written."""
    text = README.read_text()
    assert OWN_DATA in text, f"the README has no section {OWN_DATA!r}"
    section = text.split(OWN_DATA, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("timellm ")]


def test_the_readme_shows_how_to_forecast_your_own_csv_early():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:80])
    assert "timellm forecast" in first and "timellm backtest" in first
    assert "make demo" in first and "make test" in first


def test_the_readme_own_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    commands = own_data_commands()
    assert [shlex.split(c)[1] for c in commands] == ["example-data", "forecast", "backtest"]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        args = shlex.split(command)[1:]
        if args[0] != "example-data":
            args += TINY
        if args[0] == "backtest":
            args += FAST_BASELINES
        code = main(args)
        captured = capsys.readouterr()
        assert code == 0, f"{command}\n{captured.err}"
    forecasts = pd.read_csv(tmp_path / "forecasts.csv")
    assert list(forecasts.columns[:3]) == ["unique_id", "ds", "TimeLLM"]
    assert {"TimeLLM-lo-95", "TimeLLM-hi-80"} <= set(forecasts.columns)
    assert forecasts.groupby("unique_id").size().to_dict() == {"HUFL": 24, "OT": 24}
    assert (tmp_path / "forecasts.png").stat().st_size > 0
    assert (tmp_path / "backtest.png").stat().st_size > 0
    assert "SeasonalNaive" in captured.out and "overall" in captured.out


def _documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "results").glob("*.md"))]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    text = document.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor in the same page
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
        elif not path.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{document.name}: " + ", ".join(broken)


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_speak_of_the_product_not_of_how_it_was_made(document):
    """No commit hash (a results CSV may record one in a column) and no word of work sessions."""
    text = document.read_text()
    hashes = re.findall(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text)
    assert not hashes, f"{document.name}: commit hashes {hashes[:3]}"
    assert not re.search(r"\bsessions?\b", text, re.IGNORECASE), f"{document.name} speaks of a session"
