from __future__ import annotations

import io

from lmadapt.eval.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_plain_lines_at_intervals_with_an_eta() -> None:
    stream, clock = io.StringIO(), Clock()
    with Progress(10, "superni", stream=stream, interval=30.0, clock=clock) as progress:
        for _ in range(10):
            clock.now += 10.0  # 10 s per unit: a line every third unit
            progress.update()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == [
        "superni: 3/10 (30%), elapsed 0:00:30, ETA 0:01:10",
        "superni: 6/10 (60%), elapsed 0:01:00, ETA 0:00:40",
        "superni: 9/10 (90%), elapsed 0:01:30, ETA 0:00:10",
        "superni: 10/10 (100%), elapsed 0:01:40",
    ]


def test_long_runs_show_hours_and_a_quick_run_writes_only_its_final_line() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(4, "mc", stream=stream, interval=30.0, clock=clock)
    clock.now += 3700.0
    progress.update()
    assert stream.getvalue() == "mc: 1/4 (25%), elapsed 1:01:40, ETA 3:05:00\n"

    stream = io.StringIO()
    with Progress(3, "gsm8k", stream=stream, clock=Clock()) as progress:
        progress.update(3)
    assert stream.getvalue() == "gsm8k: 3/3 (100%), elapsed 0:00:00\n"


def test_a_terminal_gets_a_tqdm_bar() -> None:
    stream = Terminal()
    with Progress(4, "rewards", stream=stream) as progress:
        progress.update(4)
    assert "\r" in stream.getvalue() and "rewards: 100%" in stream.getvalue() and "4/4" in stream.getvalue()
