"""Best epoch and early stopping on validation loss: the one definition both wings use (the
trainer to stop a run, the report to say where a run would have stopped). Plain Python.

Epochs are counted from 1, as Lightning and Keras count them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class EarlyStopping:
    """Early stopping on validation loss.

    `step(loss)` returns True once `patience` epochs in a row have not lowered the best loss
    by more than `min_delta`.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.wait = 0

    def step(self, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best = loss
            self.wait = 0
        else:
            self.wait += 1
        return self.wait >= self.patience


def stop_epoch(val_losses: Sequence[float], patience: int, min_delta: float = 0.0) -> int | None:
    """The (1-based) epoch at which early stopping would stop; None if it never would."""
    stopper = EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(val_losses, start=1):
        if stopper.step(loss):
            return epoch
    return None


def early_stopping_epoch(val_losses: Sequence[float], patience: int, min_delta: float = 0.0) -> int:
    """The (1-based) epoch at which early stopping would stop; the last epoch if it never would
    (where a run that early stopping never stops ends)."""
    stop = stop_epoch(val_losses, patience, min_delta)
    return len(val_losses) if stop is None else stop


def best_epoch(val_losses: Sequence[float]) -> int | None:
    """The (1-based) epoch with the lowest finite validation loss; None if there is none."""
    finite = [
        (loss, epoch) for epoch, loss in enumerate(val_losses, start=1) if math.isfinite(loss)
    ]
    return min(finite)[1] if finite else None
