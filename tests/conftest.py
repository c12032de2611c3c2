"""What every test shares: the suite's one `TODAY` and one way to start an in-process sandbox on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import typing as t

from tap_backstory_sandbox import Sandbox, SandboxSettings

TODAY = dt.date(2026, 3, 1)


@contextlib.contextmanager
def sandbox(on_close: t.Callable[[Sandbox], None] | None = None, **overrides: t.Any) -> t.Iterator[Sandbox]:
    """A sandbox on loopback whose day is TODAY, with `overrides` as its settings (per-domain defaults are
    presets the callers pass in). `on_close(sb)` runs just before it stops, even when the test failed."""
    with Sandbox(SandboxSettings(**{"today": TODAY, **overrides})) as sb:
        try:
            yield sb
        finally:
            if on_close is not None:
                on_close(sb)
