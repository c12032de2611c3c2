"""How a run that cannot finish ends: a termination signal (SIGTERM, SIGINT), or a target that stopped reading.

Both end the process at once, with a non-zero exit code and one line on stderr saying why and what a rerun
does. The SDK's own handler logs "Gracefully shutting down...", writes the tap's *current* state (which may
describe a window half sent) and exits 0, so a scheduler records an interrupted run as a success.

Why `os._exit` rather than unwinding: unwinding runs the finally blocks of the streams, which wait for the
fragment downloads of the window in progress (worker threads) and may checkpoint a state the records sent do
not back. The last STATE the tap wrote is consistent by construction (one is written after every window, page
and job, docs/state.md), so the safest stop is to write nothing more and leave. Records already encoded after
that STATE are flushed (complete lines; a rerun sends them again, at least once), bounded by
`FLUSH_GRACE_SECONDS` in case the target no longer reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import typing as t

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""128 + the signal number: the shell's convention for "killed by this signal"."""
TARGET_GONE_EXIT_CODE = 1
FLUSH_GRACE_SECONDS = 5.0
"""Longest wait for stdout's buffered lines to reach a target that is still reading, before leaving anyway."""

RERUN = (
    "a rerun from the last STATE written resumes at its first unfinished window or page, reusing the export "
    "jobs and exports it names; records sent after that STATE are sent again"
)
NO_STATE_RERUN = "no STATE was written yet, so a rerun starts from the same input state (or start_date)"
TARGET_GONE = (
    "the target stopped reading (its end of the pipe closed) before the run finished, see the target's log for "
    "why; a rerun from the last STATE the target saved resumes at its first unfinished window or page"
)


class MessageOutput(t.Protocol):
    """What the stop needs from the message writer (`writer.BufferedMsgSpecWriter`)."""

    writing: bool  # a message is being written: a stop waits for it to be whole
    states_written: int
    after_message: t.Callable[[], None] | None  # what the writer calls once the message is out

    def drain_for_exit(self, timeout: float) -> None: ...  # record lines handed over or pending, then a flush


def signal_cause(signum: int, states_written: int) -> str:
    name = signal.Signals(signum).name
    rerun = RERUN if states_written else NO_STATE_RERUN
    return f"stopped by {name} (exit {EXIT_CODES.get(signum, 128 + signum)}) before the run finished; {rerun}"


class Stop:
    """The one stop of a process (a second signal while stopping changes nothing)."""

    def __init__(self) -> None:
        self.started = False

    def on_signal(self, signum: int, output: MessageOutput | None) -> None:
        """The termination signal handler (main thread, between two Python operations)."""
        if self.started:
            return
        self.started = True
        code = EXIT_CODES.get(signum, 128 + signum)
        cause = signal_cause(signum, output.states_written if output is not None else 0)

        def finish() -> None:
            if output is not None:
                output.drain_for_exit(FLUSH_GRACE_SECONDS)
            else:
                flush_stdout(FLUSH_GRACE_SECONDS)
            exit_now(code, cause)

        if output is not None and output.writing:
            # The signal interrupted a message being written: let it be written whole first (a target must not
            # see half a line), but do not wait for it longer than a flush would be waited for.
            output.after_message = finish
            watchdog = threading.Timer(FLUSH_GRACE_SECONDS, finish)
            watchdog.daemon = True
            watchdog.start()
            return
        finish()

    def on_target_gone(self) -> t.NoReturn:
        """stdout's pipe broke: nothing more can reach the target (its last saved STATE is what counts)."""
        self.started = True
        exit_now(TARGET_GONE_EXIT_CODE, TARGET_GONE)

    def on_output_failed(self, error: BaseException) -> t.NoReturn:
        """stdout failed otherwise (closed, disk full): the records cannot reach the target."""
        self.started = True
        exit_now(TARGET_GONE_EXIT_CODE, f"writing to stdout failed ({type(error).__name__}: {error}); {RERUN}")


STOP = Stop()


def flush_stdout(timeout: float = FLUSH_GRACE_SECONDS) -> None:
    """Flush stdout's buffered lines, giving up after `timeout` seconds (a target that reads no more)."""

    def flush() -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # closed pipe or file, re-entered buffer
            sys.stdout.flush()

    flusher = threading.Thread(target=flush, name="stop-flush", daemon=True)
    flusher.start()
    flusher.join(timeout)


def exit_now(code: int, cause: str) -> t.NoReturn:
    """Say why in one line and end the process now: no finally block, no worker thread, no later STATE."""
    try:
        print(f"tap-backstory: error: {cause}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)
