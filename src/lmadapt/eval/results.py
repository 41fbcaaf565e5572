"""The tail every evaluation ends with: predictions.jsonl, metrics.json and report.md in one directory.

`ResultsDir` is created before any work, so a directory that already holds results is refused at once
(unless overwrite) instead of after an hour of generation; the old files are replaced only when the new
ones are written, so a run that fails loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmadapt.errors import LmadaptError
from lmadapt.eval.report import coverage_warning, write_jsonl, write_metrics

log = logging.getLogger("lmadapt")

RESULT_FILES = ("predictions.jsonl", "metrics.json", "report.md")
ReportWriter = Callable[[Path, Mapping[str, Any]], Path]


class ResultsDir:
    """The output directory of one evaluation; `extra` names further files it writes (charts)."""

    def __init__(self, out: str | Path, overwrite: bool, extra: Sequence[str] = ()):
        self.path = Path(out)
        self.names = (*RESULT_FILES, *extra)
        existing = [name for name in self.names if (self.path / name).exists()]
        if existing and not overwrite:
            raise LmadaptError(
                f"{self.path} already holds results ({', '.join(existing)}); pass --overwrite to replace "
                "them or choose another --out"
            )

    def write(
        self, records: Iterable[Mapping[str, Any]], metrics: Mapping[str, Any], report: ReportWriter
    ) -> Path:
        """Replace this evaluation's files with predictions.jsonl (`records`), metrics.json and report.md
        (written by `report` from the metrics, with any chart); returns report.md's path. Other files in
        the directory are left alone, but a chart an earlier run drew does not outlive it."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            (self.path / name).unlink(missing_ok=True)
        write_jsonl(self.path / "predictions.jsonl", records)
        write_metrics(self.path / "metrics.json", metrics)
        return report(self.path, metrics)


def warn_coverage(counts: Mapping[str, int]) -> None:
    message = coverage_warning(counts)
    if message:
        log.warning("WARNING: %s", message)
