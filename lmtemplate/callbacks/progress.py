"""Lightning's progress bar, redrawn a few times a second instead of after every batch."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` redrawn at most every ``interval`` seconds, and at the end of a pass or of training.

    Lightning's bar redraws after every batch (twice: the count, then the metrics), formatting its line and
    writing it to the terminal; on a small model that cost was part of the template's overhead over a plain loop
    (``benchmarks/overhead.py``). Counts and metrics shown are the same, only drawn less often.
    """

    def __init__(self, interval: float = 0.5):
        super().__init__()
        self.interval, self.drawn = interval, float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        now, trainer = time.monotonic(), self.trainer
        if current == total or now - self.drawn >= self.interval or trainer.global_step == trainer.max_steps:
            self.drawn = now
            return self.is_enabled
        return False
