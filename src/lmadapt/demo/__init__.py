"""The demo: a synthetic instruction suite, a tiny model built on its vocabulary, and stages that train
and score it through the public recipes (`lmadapt demo`, `lmadapt hint configs/hint_demo.yaml`).

Production code (recipes, hint, eval, data) imports nothing from it; the command line, tests and
benchmarks do.
"""

from lmadapt.demo.pipeline import STAGES, Stage, run
from lmadapt.demo.stages import Context, DemoSettings, StageResult
from lmadapt.demo.suite import EVAL_SETS

__all__ = ["EVAL_SETS", "STAGES", "Context", "DemoSettings", "Stage", "StageResult", "run"]
