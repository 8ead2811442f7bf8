"""Sliding windows (stride 1) over a (rows, channels) array."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class WindowDataset(Dataset):
    """Every window of ``seq_len`` past and ``pred_len`` future rows, start indices with stride 1.

    With ``channel_independent`` each item is one channel of one window, ``(seq_len, 1)`` and
    ``(pred_len, 1)``, as in the released code's training batches; otherwise all channels,
    ``(seq_len, N)`` and ``(pred_len, N)``. Items are views: no window is copied up front.
    ``max_windows`` keeps an evenly spaced subset of the windows (CPU-budget validation, the demo).
    """

    def __init__(
        self,
        array: np.ndarray,
        seq_len: int,
        pred_len: int,
        channel_independent: bool = True,
        max_windows: int | None = None,
    ):
        if array.ndim != 2:
            raise ValueError(f"expected an array of shape (rows, channels), found {array.shape}")
        self.data = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
        self.seq_len, self.pred_len = seq_len, pred_len
        self.channel_independent = channel_independent
        self.total_windows = max(0, array.shape[0] - seq_len - pred_len + 1)
        self.starts = np.arange(self.total_windows)
        if max_windows is not None and max_windows < self.total_windows:
            # an evenly spaced subset, first and last window included
            self.starts = np.linspace(0, self.total_windows - 1, max_windows).round().astype(int)
        self.num_windows = len(self.starts)
        self.channels = array.shape[1]

    def __len__(self) -> int:
        return self.num_windows * (self.channels if self.channel_independent else 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.channel_independent:
            window, channel = divmod(index, self.channels)
            columns = slice(channel, channel + 1)
        else:
            window, columns = index, slice(None)
        start = int(self.starts[window])
        middle = start + self.seq_len
        return self.data[start:middle, columns], self.data[middle : middle + self.pred_len, columns]
