"""A user's table files: read a CSV (plain or compressed) or Parquet file, write one, and refuse an
output path that cannot be written before any work is done."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from timellm.data.errors import DataFileError, quote_columns
from timellm.data.series import FrameFormat

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}
# how compressed files and Parquet begin, to read a file whose name does not say what it holds
MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"PK\x03\x04": "zip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PAR1": "parquet",
}
# pandas' default markers of a missing cell (read_csv's documentation), kept for every column but ids
MISSING_MARKERS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)


def read_table(path: str | Path, fmt: FrameFormat | None = None) -> pd.DataFrame:
    """Read a CSV (plain or compressed) or Parquet file into a DataFrame, with one-line errors.

    With ``fmt`` (a long table's column names) the id column of a CSV is read as text, exactly as
    written: ``007`` stays ``007``, ``1`` and ``1.0`` stay two ids, ``NA`` is an id. A file whose
    content is compressed or Parquet is read as such whatever its name says.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"data file {path} does not exist; expected a CSV or Parquet file")
    if not path.is_file():
        raise DataFileError(f"{path} is not a file; expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataFileError(f"data file {path} is empty; expected a header line and rows of data")
    content = _sniff(path)
    named = "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else COMPRESSIONS.get(path.suffix.lower())
    if content != named and content is not None:
        logger.info("%s holds %s data although its name does not say so; read it as such", path, content)
    parquet = content == "parquet" or (content is None and named == "parquet")
    try:
        if parquet:
            if not parquet_available():
                raise ImportError
            frame = pd.read_parquet(path)
        else:
            frame = _read_csv(path, content or "infer", fmt)
    except ImportError:
        raise DataFileError(
            f"reading {path} needs pyarrow: pip install 'timellm[parquet]' (or save the data as CSV)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {path} is empty; expected a header line and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, EOFError) as err:
        kind = "Parquet" if parquet else "CSV"
        message = " ".join(str(err).split())
        hint = ""
        if isinstance(err, UnicodeDecodeError):
            hint = "; expected UTF-8 text (save the file as UTF-8 CSV, or gzip-compress it as .csv.gz)"
        raise DataFileError(f"{path} is not a readable {kind} file: {message}{hint}") from None
    _refuse_repeated_columns(path, frame.columns if parquet else _csv_header(path, content or "infer"))
    if frame.empty:
        raise DataFileError(
            f"data file {path} has no data rows (columns: {quote_columns(frame.columns)}); expected rows of data"
        )
    return frame


def _csv_header(path: Path, compression: str) -> list[str]:
    """The column names of a CSV file as written (pandas renames a repeated name ``OT.1``)."""
    header = pd.read_csv(
        path, compression=compression, header=None, nrows=1, dtype=str, keep_default_na=False
    )
    return [str(name) for name in header.iloc[0]] if len(header) else []


def _refuse_repeated_columns(path: Path, columns) -> None:
    """Refuse a table that names two columns alike: which of them is the series would be a guess."""
    names = pd.Index(columns)
    repeated = list(dict.fromkeys(names[names.duplicated()]))
    if repeated:
        raise DataFileError(
            f"{path} names the column{'s' if len(repeated) > 1 else ''} "
            f"{', '.join(repr(str(name)) for name in repeated)} more than once; every column needs a "
            "name of its own: rename the repeats"
        )


def _sniff(path: Path) -> str | None:
    """What a file's first bytes say it holds: a compression, 'parquet', or None (plain text)."""
    with path.open("rb") as file:
        head = file.read(8)
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _read_csv(path: Path, compression: str, fmt: FrameFormat | None) -> pd.DataFrame:
    """pandas' CSV reader; a long table's id column as text, empty or not (never 'missing')."""
    id_col = None if fmt is None or fmt.wide else fmt.id_col
    if id_col is None:
        return pd.read_csv(path, compression=compression)
    columns = pd.read_csv(path, compression=compression, nrows=0).columns
    if id_col not in columns:
        return pd.read_csv(path, compression=compression)
    return pd.read_csv(
        path,
        compression=compression,
        dtype={id_col: str},
        keep_default_na=False,
        na_values={c: list(MISSING_MARKERS) for c in columns if c != id_col},
    )


def parquet_available() -> bool:
    """Whether pandas can read and write Parquet here (it needs pyarrow or fastparquet)."""
    return any(importlib.util.find_spec(name) is not None for name in ("pyarrow", "fastparquet"))


def check_not_input(
    path: str | Path, inputs: Sequence[str | Path], what: str = "output", writes: Sequence[str] = ()
) -> None:
    """Refuse an output that is one of the command's inputs, which writing would destroy.

    ``writes``: for an output folder, the names of the files written into it; an input among
    them is refused too. Paths are compared after resolving links and ``..``.
    """
    path = Path(path)
    targets = [path, *(path / name for name in writes)]
    for given in inputs:
        source = Path(given)
        for target in targets:
            same = target.resolve() == source.resolve()
            if not same and target.exists() and source.exists():
                same = os.path.samefile(target, source)
            if same:
                raise DataFileError(
                    f"cannot write the {what} {path}: it would overwrite the input {source}; "
                    "choose another name for the output"
                )


def check_output_path(path: str | Path, what: str = "output", folder: bool = False) -> Path:
    """Refuse, before any work is done, a path that cannot be written: its folder or itself.

    A missing folder is fine when it can be made (``write_table`` and ``save_pretrained`` make
    it); the nearest existing folder above must then be writable. ``folder``: the path is a
    folder to write files into (an adapter folder), not a file.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise DataFileError(f"cannot write the {what} {path}: it is {kind}")
    if path.exists() and not os.access(path, os.W_OK):
        raise DataFileError(f"cannot write the {what} {path}: it exists and is not writable")
    if folder and path.is_dir():
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataFileError(f"cannot write the {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataFileError(
            f"cannot write the {what} {path}: the folder {parent} is not writable; choose another place"
        )
    return path


def check_table_path(path: str | Path, what: str = "output file") -> Path:
    """Refuse an output table path whose format is unknown or unavailable, or that cannot be written."""
    path = Path(path)
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in (".csv", *PARQUET_SUFFIXES):
        raise DataFileError(
            f"cannot write the {what} {path}: unknown format {path.suffix or '(no suffix)'!r}; "
            "expected a name ending in .csv (or .csv.gz, .csv.bz2, .csv.zip, .csv.xz) or .parquet"
        )
    if kind in PARQUET_SUFFIXES:
        if len(path.suffixes) > 1 and path.suffixes[-1].lower() in COMPRESSIONS:
            raise DataFileError(
                f"cannot write the {what} {path}: Parquet compresses itself; drop the {path.suffixes[-1]}"
            )
        if not parquet_available():
            raise DataFileError(
                f"writing the {what} {path} needs pyarrow: pip install 'timellm[parquet]' (or name it .csv)"
            )
    return check_output_path(path, what)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet (``.parquet``/``.pq``) or CSV (``.csv``, optionally compressed)."""
    path = check_table_path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
