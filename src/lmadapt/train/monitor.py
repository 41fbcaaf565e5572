"""Feedback while training runs: progress bar, metrics JSONL, TensorBoard, loss-curve PNG."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lmadapt.eval.progress import format_duration

log = logging.getLogger("lmadapt")


class Monitor:
    """Writes one JSON object per logged step to `metrics.jsonl` (and TensorBoard when installed), and
    shows progress: a live bar on a terminal (with `progress`), else one plain line per logged step,
    so a log file gets readable records instead of carriage-return redraws.

    On resume, records past the resumed step (written after the checkpoint, before the crash) are
    dropped so the file describes exactly one training trajectory.
    """

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int,
        progress: bool,
        enabled: bool = True,
        unit: str = "tokens",
    ):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.total_steps, self.unit = total_steps, unit
        self._start = (time.perf_counter(), start_step)
        self._last_time = time.perf_counter()
        self._last_tokens = 0
        self._bar = None
        self._tb = None
        if not enabled:
            return
        _truncate_after(self.path, start_step)
        if progress and sys.stderr.isatty():
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, mininterval=0.5
            )
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:  # tensorboard is an optional extra
            self._tb = None

    def step(self, step: int, trained_tokens: int, metrics: dict[str, float], log_now: bool) -> None:
        """Record optimizer step `step` (1-based); `trained_tokens` is cumulative."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(1)
        if not log_now:
            return
        dt = max(now - self._last_time, 1e-9)
        record = {"step": step, **metrics, "tokens_per_s": (trained_tokens - self._last_tokens) / dt}
        self._last_time, self._last_tokens = now, trained_tokens
        self.write(record)
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{metrics.get('loss', math.nan):.4f}", tok_s=f"{record['tokens_per_s']:.0f}"
            )
        else:
            self.line(f"step {step}/{self.total_steps} {format_metrics(record)} eta {self._eta(step, now)}")

    def line(self, text: str) -> None:
        """A log line that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            log.info("%s", text)

    def _eta(self, step: int, now: float) -> str:
        started, first_step = self._start
        done = step - first_step
        if done <= 0:
            return "?"
        return format_duration((now - started) / done * (self.total_steps - step))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])

    def reset_rate(self, trained_tokens: int) -> None:
        """Exclude time spent outside training (evaluation, checkpoints) from tokens/s."""
        self._last_time, self._last_tokens = time.perf_counter(), trained_tokens

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def format_metrics(metrics: dict[str, Any]) -> str:
    """`key=value` pairs for a log line: learning rates in scientific notation, other floats to 4 digits."""

    def fmt(key: str, value: Any) -> str:
        if isinstance(value, float):
            if key == "lr" or key.endswith("/lr"):
                return f"{value:.2e}"
            if key.endswith("per_s") or key.endswith("tokens"):
                return f"{value:.0f}"
            return f"{value:.4f}"
        return str(value)

    return " ".join(f"{k}={fmt(k, v)}" for k, v in metrics.items() if k != "step")


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [
        line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Training (and eval, when logged) loss against optimizer step. None when nothing was logged."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / trained token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def plot_curves(metrics_path: Path, png_path: Path, keys: Sequence[str], title: str = "") -> Path | None:
    """One panel per metric in `keys` (e.g. loss and mean reward of an RL run) against optimizer step;
    metrics never logged are left out. None when none of them was logged."""
    records = read_metrics(metrics_path)
    series = {key: [(r["step"], r[key]) for r in records if key in r] for key in keys}
    series = {key: points for key, points in series.items() if points}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.5 * len(series)), sharex=True, squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], series.items(), strict=True):
        ax.plot(*zip(*points, strict=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
