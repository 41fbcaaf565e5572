"""`lmadapt demo`: the embedded default, end to end on two CPU cores with no downloads.

1. Generate the built-in synthetic instruction suite and write it in the SuperNI layout.
2. Train a word-level tokenizer on it and build a tiny Llama from a config; save both as a local
   Hugging Face model, so every stage loads it the way it loads any real model.
3. Run the stages (`STAGES`): SFT on the concatenated prompt, HINT at the same budget, DPO from the
   SFT model, GRPO from the SFT model (exact-match reward on fresh inputs of the held-out phrasings).
   Each trains through a public recipe and is scored through `lmadapt eval superni` on
   (a) held-out instances of training tasks, (b) held-out phrasings of training families,
   (c) held-out families. Stages whose inputs are ready run side by side in `workers` processes.
4. Write `report.md`, `results.json` and a chart under `runs/demo-<time>/`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from lmadapt.data.tasks import PromptEncoding
from lmadapt.demo.hint_stage import stage_hint
from lmadapt.demo.preference import stage_dpo
from lmadapt.demo.report import results_table, write_report
from lmadapt.demo.rl_stage import stage_grpo
from lmadapt.demo.stages import Context, DemoSettings, StageResult, build_base_model, stage_sft
from lmadapt.demo.suite import build_suite, export_superni
from lmadapt.errors import LmadaptError

log = logging.getLogger("lmadapt")


@dataclass(frozen=True)
class Stage:
    run: Callable[[Context], StageResult]  # a module-level function (worker processes import it)
    needs: tuple[str, ...] = ()  # stages whose results it reads from ctx.results


# In report order; a stage's needs come before it.
STAGES: dict[str, Stage] = {
    "sft": Stage(stage_sft),
    "hint": Stage(stage_hint),
    "dpo": Stage(stage_dpo, needs=("sft",)),
    "grpo": Stage(stage_grpo, needs=("sft",)),
}


def run(out_root: str | Path = "runs", settings: DemoSettings | None = None) -> Path:
    settings = settings or DemoSettings()
    out = Path(out_root) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists():
        raise LmadaptError(f"{out} already exists")
    out.mkdir(parents=True)
    start = time.perf_counter()
    torch.set_num_threads(settings.num_threads)
    suite = build_suite(
        seed=settings.seed, train_instances=settings.train_instances, eval_instances=settings.eval_instances
    )
    suite_dir = export_superni(suite, out / "suite")
    ctx = Context(
        out=out,
        settings=settings,
        suite=suite,
        suite_dir=suite_dir,
        base_model=build_base_model(suite, settings, out / "base-model"),
        encoding=PromptEncoding.parse(settings.encoding),
    )
    results = run_stages(ctx, STAGES)
    report = write_report(ctx, results, time.perf_counter() - start)
    print(results_table(results))
    return report


def run_stages(ctx: Context, stages: dict[str, Stage]) -> list[StageResult]:
    """Run every stage once its needs are done: in this process, in order, with one worker; else each in
    a pool process (spawned: a forked process would inherit torch's thread pools). Results in `stages`
    order; each is also in ctx.results."""
    workers = ctx.settings.workers
    if workers <= 1:
        for name, stage in stages.items():
            if missing := [need for need in stage.needs if need not in ctx.results]:
                raise LmadaptError(f"stage {name} needs {', '.join(missing)}, which has not run before it")
            ctx.results[name] = stage.run(ctx)
        return [ctx.results[name] for name in stages]
    pending = dict(stages)
    running: dict[Future[StageResult], str] = {}
    context = multiprocessing.get_context("spawn")
    init = (ctx.settings.num_threads,)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=init) as pool:
        while pending or running:
            for name, stage in list(pending.items()):
                if all(need in ctx.results for need in stage.needs):
                    log.info("stage %s started", name)
                    running[pool.submit(stage.run, ctx)] = name
                    del pending[name]
            if not running:
                raise LmadaptError(f"stages {', '.join(pending)} need stages that do not exist")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                ctx.results[name] = future.result()
                log.info("stage %s done", name)
    return [ctx.results[name] for name in stages]


def _init_worker(num_threads: int) -> None:
    torch.set_num_threads(num_threads)
    name = multiprocessing.current_process().name.rsplit("-", 1)[-1]
    logging.basicConfig(level=logging.INFO, format=f"[worker {name}] %(message)s")
