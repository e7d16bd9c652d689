"""Averaged SGD (Polyak & Juditsky 1992), as AWD-LSTM uses it (Merity et al. 2017's NT-ASGD): from a start
point on, the trainer keeps the running mean of the weights after every optimiser step and evaluates, keeps
(as the best checkpoint) and tests the mean instead of the last weights; the optimiser itself goes on as before.

``trainer.average``: ``none``; ``from_epoch`` (the mean starts at the beginning of epoch
``trainer.average_from``); ``nonmono`` (Merity et al.'s non-monotone trigger: it starts after the first epoch
whose valid metric is worse than the best of the epochs before the last ``trainer.average_nonmono``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

MODES = ("none", "from_epoch", "nonmono")


class WeightAverage:
    def __init__(self, params: list[torch.Tensor], mode: str, start_epoch: int, nonmono: int):
        self.params, self.mode, self.start_epoch, self.nonmono = params, mode, start_epoch, nonmono
        self.means: list[torch.Tensor] | None = None  # None until started
        self.count = 0  # weights averaged so far (the start point's counts as one)
        self.started_at_step: int | None = None

    @property
    def active(self) -> bool:
        return self.means is not None

    def start(self, step: int) -> None:
        self.means = [p.detach().clone() for p in self.params]
        self.count, self.started_at_step = 1, step

    def starts_with_epoch(self, epoch: int) -> bool:
        """``from_epoch``: the mean starts when epoch ``epoch`` is about to begin."""
        return self.mode == "from_epoch" and not self.active and epoch >= self.start_epoch

    def starts_after(self, previous: list[float], current: float, lower_is_better: bool) -> bool:
        """``nonmono``: ``current`` (this epoch's valid metric) is worse than the best of ``previous`` (the earlier
        epochs') except the last ``nonmono`` of them."""
        if self.mode != "nonmono" or self.active or len(previous) <= self.nonmono:
            return False
        older = previous[: -self.nonmono]
        return current > min(older) if lower_is_better else current < max(older)

    @torch.no_grad()
    def update(self) -> None:
        """After an optimiser step: mean += (weights - mean) / count."""
        if self.means is None:
            return
        self.count += 1
        for mean, p in zip(self.means, self.params):
            mean.lerp_(p, 1.0 / self.count)

    @contextmanager
    def applied(self):
        """The parameters hold the mean inside (nothing changes before the mean has started); restored after."""
        if self.means is None:
            yield
            return
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, mean in zip(self.params, self.means):
                p.copy_(mean)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(self.params, kept):
                    p.copy_(weights)

    def state_dict(self) -> dict:
        return {"means": self.means, "count": self.count, "started_at_step": self.started_at_step}

    def load_state_dict(self, state: dict | None) -> None:
        if not state or state["means"] is None:  # not started (or a checkpoint from before averaging existed)
            return
        self.means = [m.to(p.device) for m, p in zip(state["means"], self.params)]
        self.count, self.started_at_step = state["count"], state["started_at_step"]
