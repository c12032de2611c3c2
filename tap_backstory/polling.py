"""The one schedule for waiting on a server-side job: a Backstory export job, a ContactBased export building.

The first wait is `job_poll_interval_seconds`; each later one grows with the job's age (a quarter of it) but
by at most x1.5 a step, capped at max(60 s, the configured interval): a setting above 60 s is honoured as is.
The job gives up after `job_timeout_seconds`.
"""

from __future__ import annotations

from tap_backstory.windows import Clock

MAX_POLL_INTERVAL = 60.0
POLL_AGE_FRACTION = 0.25
"""A job is seen finished at most ~25 % after it finished (a plain x1.5 step per poll overshoots by up to 50 %)."""


def next_interval(interval: float, age: float, cap: float) -> float:
    """The wait after `interval`, for a job `age` seconds old."""
    return min(max(interval, POLL_AGE_FRACTION * age), interval * 1.5, cap)


class PollSchedule:
    """Waits between status checks of one job, from when it was created (or adopted) to its time-out."""

    def __init__(self, first_interval: float, timeout: float, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.first_interval = first_interval
        self.cap = max(MAX_POLL_INTERVAL, first_interval)
        self.timeout = timeout
        self.restart()

    def restart(self) -> None:
        """A new job: its age counts from now and the waits start short again."""
        self.started = self.clock.monotonic()
        self.interval = self.first_interval

    @property
    def age(self) -> float:
        return self.clock.monotonic() - self.started

    @property
    def timed_out(self) -> bool:
        return self.age > self.timeout

    def wait(self) -> None:
        """Sleep the current interval, then grow the next one."""
        self.clock.sleep(self.interval)
        self.interval = next_interval(self.interval, self.age, self.cap)
