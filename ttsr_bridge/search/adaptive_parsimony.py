"""SR.jl's ``RunningSearchStatistics`` (``src/AdaptiveParsimony.jl``): how often each
complexity was seen, windowed, and normalised to the frequencies used by the frequency
penalty (tournament) and the frequency ratio (acceptance)."""

from __future__ import annotations

import numpy as np

__all__ = ["RunningSearchStatistics"]


class RunningSearchStatistics:
    """``frequencies[c]`` for complexity ``c`` in ``1..maxsize`` (index 0 unused, kept at 0).

    Starts at all ones; :meth:`update_frequencies` adds 1 per member seen, :meth:`move_window`
    shrinks the counts (never below 1) until they sum to ``window_size``, and
    :meth:`normalize_frequencies` refreshes ``normalized_frequencies`` (sum 1)."""

    __slots__ = ("frequencies", "maxsize", "normalized_frequencies", "window_size")

    def __init__(self, maxsize: int, window_size: int = 100_000):
        self.window_size = int(window_size)
        self.maxsize = int(maxsize)
        self.frequencies = np.ones(self.maxsize + 1)
        self.frequencies[0] = 0.0
        self.normalized_frequencies = self.frequencies / self.frequencies.sum()

    def copy(self) -> RunningSearchStatistics:
        out = RunningSearchStatistics.__new__(RunningSearchStatistics)
        out.window_size = self.window_size
        out.maxsize = self.maxsize
        out.frequencies = self.frequencies.copy()
        out.normalized_frequencies = self.normalized_frequencies.copy()
        return out

    def update_frequencies(self, size: int) -> None:
        if 0 < size <= self.maxsize:
            self.frequencies[size] += 1.0

    def update_many(self, sizes: np.ndarray) -> None:
        """:meth:`update_frequencies` for every size in ``sizes`` (out-of-range ignored)."""
        s = np.asarray(sizes, dtype=np.int64)
        s = s[(s > 0) & (s <= self.maxsize)]
        np.add.at(self.frequencies, s, 1.0)

    def move_window(self) -> None:
        """Subtract evenly from every count above 1 until the total is ``window_size``."""
        f = self.frequencies[1:]
        excess = f.sum() - self.window_size
        loops = 0
        while excess > 0:
            idx = np.flatnonzero(f > 1.0)
            if len(idx) == 0:
                break
            amount = min(excess / len(idx), f[idx].min() - 1.0)
            f[idx] -= amount
            total = amount * len(idx)
            excess -= total
            loops += 1
            if loops > 1000 or total < 1e-6:
                break

    def normalize_frequencies(self) -> None:
        self.normalized_frequencies = self.frequencies / self.frequencies.sum()

    def frequency_of(self, size: int, default: float) -> float:
        """Normalised frequency of ``size``; ``default`` outside ``1..maxsize`` (SR.jl uses 0
        in the tournament and 1e-6 in the acceptance ratio)."""
        if 0 < size <= self.maxsize:
            return float(self.normalized_frequencies[size])
        return default
