"""Data: the benchmarks with their standard splits, and sliding windows."""

from timellm.data.benchmarks import BENCHMARKS, DataError, Splits, load_splits, read_benchmark
from timellm.data.windows import WindowDataset

__all__ = ["BENCHMARKS", "DataError", "Splits", "WindowDataset", "load_splits", "read_benchmark"]
