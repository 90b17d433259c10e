"""An error-rate breaker for synthesis runs that call shared engines.

Retries handle a flaky call; the breaker handles a broken endpoint: once at least `min_calls`
results are in and the failed share exceeds `max_failure_rate`, the run stops instead of spending
its whole budget on errors. The share is over all results so far (not a window): a synthesis run is
short, and a failure early in it matters as much as one late.
"""

from __future__ import annotations

from dataclasses import dataclass


class BreakerOpen(RuntimeError):
    """Raised when a run's failure rate passed its limit."""


@dataclass(frozen=True)
class BreakerConfig:
    max_failure_rate: float = 0.2  # stop once failures / results > this (0 stops on the first failure)
    min_calls: int = 10  # results needed before the rate is judged (a first failure is not a rate)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if self.min_calls < 1:
            raise ValueError(f"min_calls must be >= 1, got {self.min_calls}")


@dataclass
class ErrorRateBreaker:
    config: BreakerConfig
    calls: int = 0
    failures: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def open(self) -> bool:
        return self.calls >= self.config.min_calls and self.failure_rate > self.config.max_failure_rate

    def record(self, ok: bool) -> None:
        """Count one result; raises BreakerOpen when it tips the rate over the limit."""
        self.calls += 1
        self.failures += not ok
        if self.open:
            raise BreakerOpen(
                f"{self.failures} of {self.calls} calls failed ({self.failure_rate:.0%} > "
                f"{self.config.max_failure_rate:.0%}): stopping this run"
            )
