"""Stopping cleanly when the cluster (SIGTERM) or the user (Ctrl-C, SIGINT) asks.

The first signal is a request: the engine finishes the optimizer step it is in, writes a checkpoint
and exits with `PREEMPTED_EXIT_CODE`, so `--resume` continues exactly where it stopped. If that does
not happen within the grace period (a step or a checkpoint longer than the scheduler allows), or a
second signal arrives, the run stops at once; the on-disk store never exposes a half-written
checkpoint, so the previous complete one stays the resume point.
"""

from __future__ import annotations

import _thread
import logging
import signal
import threading
from types import FrameType, TracebackType

log = logging.getLogger("lmadapt")

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on request after checkpointing; resume to continue
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into `requested` (checked at step boundaries).

    A second signal, or `grace_s` seconds without the engine acting on the first, raises
    KeyboardInterrupt in the main thread. The handlers are installed even where the parent ignored
    SIGINT (a shell's background job): here the signal only ever asks for a clean stop. Outside the
    main thread (where Python cannot install handlers) it does nothing and signals keep their
    default behaviour.
    """

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.requested = False
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "%s received: stopping after this step with a checkpoint (within %.0f s; again: stop now)",
            signal.Signals(signum).name,
            self.grace_s,
        )
        self._timer = threading.Timer(self.grace_s, _thread.interrupt_main)
        self._timer.daemon = True
        self._timer.start()
