"""Progress of an evaluation with an ETA: a tqdm bar on a terminal, plain lines in a log file.

A bar redraws itself with carriage returns, which a redirected stderr keeps as one long run-on line;
so when the stream is not a terminal, progress is written as separate lines, one every `interval`
seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """H:MM:SS, for every progress line (evaluation and training)."""
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts `total` units of work (instances, choices, pairs) as they finish; use as a context manager."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        stream: IO[str] | None = None,
        interval: float = PLAIN_INTERVAL_S,
        clock: Any = time.monotonic,
    ):
        self.total, self.desc, self.done = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.clock = interval, clock
        self.start = self.last = clock()
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            self._line(now)

    def _text(self, now: float) -> str:
        """The plain record: done/total, percent, elapsed and estimated remaining time."""
        elapsed = now - self.start
        percent = 100 * self.done / self.total if self.total else 100.0
        text = f"{self.desc}: {self.done}/{self.total} ({percent:.0f}%), elapsed {format_duration(elapsed)}"
        if 0 < self.done < self.total:
            text += f", ETA {format_duration(elapsed / self.done * (self.total - self.done))}"
        return text

    def _line(self, now: float) -> None:
        self.stream.write(self._text(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(self.clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
