"""
A budget for log lines that a flood of peers could cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

_log = Logger()


class LogBudget:
    """
    At most C{burst} lines in each period of C{period} seconds for one kind
    of event; those beyond are counted, and the count is logged with the
    first line of a later period.
    """

    __slots__ = ("_burst", "_clock", "_dropped", "_period", "_spent", "_started", "_what")

    def __init__(
        self, clock: IReactorTime, what: str, *, burst: int = 10, period: float = 10.0
    ) -> None:
        self._clock = clock
        self._what = what
        self._burst = burst
        self._period = period
        self._started = -period
        self._spent = 0
        self._dropped = 0

    def allow(self) -> bool:
        """Whether a line may be logged now; if not, it is counted."""
        now = self._clock.seconds()
        if now - self._started >= self._period:
            if self._dropped:
                _log.info(
                    "{n} more {what} were not logged (at most {burst} each {period:g} s)",
                    n=self._dropped,
                    what=self._what,
                    burst=self._burst,
                    period=self._period,
                )
            self._started, self._spent, self._dropped = now, 0, 0
        if self._spent < self._burst:
            self._spent += 1
            return True
        self._dropped += 1
        return False
