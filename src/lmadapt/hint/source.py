"""`HintSource`: a HINT run as a SuperNI prediction source (`lmadapt eval superni --model RUN`).

It reads each task's instruction once (compiled modules) and each instance input with the run's own
training template and format, in the run's training encoding unless the user asks for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmadapt.data.superni import EvalInstance
from lmadapt.data.tasks import PromptEncoding, Task
from lmadapt.eval.progress import Progress
from lmadapt.eval.sources import (
    DEFAULT_BATCH_SIZE,
    SUPERNI_MAX_NEW_TOKENS,
    SuperNIPredictions,
    check_positive,
)
from lmadapt.hint.predict import predict
from lmadapt.hint.run import read_run_settings


@dataclass
class HintSource:
    """A HINT run directory; `encoding` None means the run's training encoding."""

    path: str
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = SUPERNI_MAX_NEW_TOKENS

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size)
        check_positive("max_new_tokens", self.max_new_tokens)

    def default_encoding(self) -> str:
        return read_run_settings(self.path).encoding

    def predict_superni(
        self, tasks: Sequence[Task], instances: Sequence[EvalInstance], encoding: PromptEncoding
    ) -> SuperNIPredictions:
        """Each task's instruction (rendered by `encoding`) goes to the hypernetwork once (cached modules);
        the model reads only the instance input, as the run was trained."""
        with Progress(len(instances), "superni (HINT)") as progress:
            hinted = predict(
                self.path,
                instances,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                progress=progress,
            )
        return SuperNIPredictions(list(hinted.predictions), list(instances), None, hinted.flops)

    def settings(self) -> dict[str, Any]:
        return {"model": self.path, "max_new_tokens": self.max_new_tokens}
