"""Named fault points for the fault-injection suite (tests/faults): a real run made to fail on cue.

`LMADAPT_FAULTS` arms points, comma-separated, as `POINT@N=ACTION` or `POINT@N-M=ACTION`: the Nth (to
Mth) time the code passes POINT it performs ACTION. Points are passed in the real code path:

    <store kind>/staged          an entry's files written, before their checksums and manifest (store.py)
    <store kind>/before-rename   manifest written and fsynced, before the entry is renamed into place
    <store kind>/after-rename    the entry in place, before the parent directory is fsynced
    checkpoint/between-files     a checkpoint's weights written, its optimizer state not yet
    step                         an optimizer step, numbered from 1 by the step itself (train/loop.py)

(store kinds: checkpoint, token-cache, reference-logps, hint-modules, hint-pretrained). ACTION is
`kill` (SIGKILL this process), `term` / `term-twice` (SIGTERM to this process once / twice: a
preemption, and an impatient one), `enospc` (raise OSError(ENOSPC), a full disk), `sleep-S` (hold still S
seconds: a slow disk, so that another process contends), or one the caller acts on (`nan-loss`,
`inf-grad` at `step`). Unset, `fault` is one dictionary test: it costs nothing.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from collections import Counter

ENV = "LMADAPT_FAULTS"
_SPEC = re.compile(r"^(?P<point>[\w./-]+)@(?P<first>\d+)(?:-(?P<last>\d+))?=(?P<action>[\w-]+)$")


def parse(spec: str) -> dict[str, dict[int, str]]:
    """{point: {occurrence: action}} of an LMADAPT_FAULTS value."""
    plan: dict[str, dict[int, str]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = _SPEC.match(item)
        if match is None:
            raise ValueError(f"{ENV}: {item!r} is not POINT@N=ACTION or POINT@N-M=ACTION")
        first = int(match["first"])
        for n in range(first, int(match["last"] or first) + 1):
            plan.setdefault(match["point"], {})[n] = match["action"]
    return plan


_PLAN = parse(os.environ.get(ENV, ""))
_PASSED: Counter[str] = Counter()


def fault(point: str, occurrence: int | None = None) -> str | None:
    """Perform what is armed for this pass of `point` (the `occurrence`th, default: counted here).

    Returns an action left to the caller, else None.
    """
    if not _PLAN or point not in _PLAN:
        return None
    if occurrence is None:
        _PASSED[point] += 1
        occurrence = _PASSED[point]
    action = _PLAN[point].get(occurrence)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action in ("term", "term-twice"):
        for _ in range(2 if action == "term-twice" else 1):
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before os.kill returns
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at {point})")
    if action is not None and action.startswith("sleep-"):
        time.sleep(float(action.removeprefix("sleep-")))
    return action
