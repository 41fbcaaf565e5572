"""Helpers shared by the benchmarks: run one measured side in its own subprocess, time trainer steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from transformers import TrainerCallback


def run_child(script: str, args: Sequence[str], threads: int) -> dict:
    """Run `python script *args` with `threads` intra-op threads; its last stdout line is a JSON object."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class StepTimes(TrainerCallback):
    """A transformers Trainer callback recording when each optimizer step ends (perf_counter seconds)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, *_, **__):
        self.ends.append(time.perf_counter())
