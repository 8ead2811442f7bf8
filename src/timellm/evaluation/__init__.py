"""Scoring forecasts: metrics, the reference forecasts (naive, DLinear, PatchTST) and test-split scoring."""
