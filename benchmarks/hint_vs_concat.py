"""HINT vs the concatenation baseline at the same underlying model and training budget, over seeds.

    python benchmarks/hint_vs_concat.py [--seeds 3] [--steps 1200] [--lr 1e-3] [--workers 2] [--out DIR]
    python benchmarks/hint_vs_concat.py --eval-shots 0 2 5 --out DIR   # few-shot table, the same models
    python benchmarks/hint_vs_concat.py --shots 0 2 5 --out DIR        # few-shot table, trained per k
    python benchmarks/hint_vs_concat.py --hint hint.encoder=DIR --tag minilm --out DIR
    python benchmarks/hint_vs_concat.py --pretrain-steps 300 --tag pretrain --out DIR

Both arms are the `lmadapt demo` stages (`stage_sft`, `stage_hint` of `lmadapt.demo`): the same tiny Llama
built from the built-in suite's vocabulary, the same steps, batch size (32), learning rate and cosine
schedule. The concatenation model reads the instruction (definition + k demonstrations, "def+kpos") in
front of every input; HINT's hypernetwork reads it once per task and the underlying model only
"Input: <x>. Output:". Every seed draws its own suite, base model and data order. Each trained model is
scored through `lmadapt eval superni` on the three sets: held-out instances of the training tasks (do the
arms learn the training families?), held-out phrasings of training families, held-out families. Inference
FLOPs per instance are analytic (matmuls, each arm's real prompt and output lengths; HINT includes one
hypernetwork pass per task); seconds per instance are the whole evaluation call's.

`--shots K ...` trains and scores both arms with K demonstrations (the --encoding otherwise) for each K (first
seed only); `--eval-shots K ...` scores the multi-seed models with K demonstrations in their prompts /
instructions, whatever they were trained with (no training). Concatenation's FLOPs grow with every
demonstration; HINT reads them once per task. `--pretrain-steps N` pretrains HINT's hypernetwork first (A/B/C
cuts of plain text written from the training tasks, `pretraining_documents`). `--hint key=value` changes the
HINT arm only (an ablation; name it with `--tag`). Finished (arm, encoding, seed, variant) cells are kept as
OUT/cells/*.json and reused by a later call with the same --out and settings, so an ablation retrains only its
own arm.
Held-out phrasings and families are scored on 100 instances per task (as SuperNI), the training tasks
on 5 (`--train-set-instances`).

Prints tables, then one JSON object on the last line: `flops_ratio` (concatenation's FLOPs per instance
over HINT's) and `rougeL_gap` (concatenation minus HINT ROUGE-L) on held-out families, means over seeds,
with per-set means and spreads (sample standard deviation, min, max) under `sets`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lmadapt.data.tasks import PromptEncoding
from lmadapt.demo.hint_stage import stage_hint
from lmadapt.demo.stages import (
    Context,
    DemoSettings,
    StageResult,
    build_base_model,
    evaluate_run,
    stage_sft,
)
from lmadapt.demo.suite import EVAL_SETS, build_suite, export_superni

BATCH_OF_TRAINING = 32
TRAIN_INSTANCES = 400  # per training task (the demo's)
MAX_DEMONSTRATIONS = 5  # every suite carries 5 positive examples per task; def+kpos reads the first k
SET_NAMES = {
    "heldout_instances": "training tasks",
    "heldout_phrasings": "phrasings",
    "heldout_families": "families",
}
GAP_SET = "heldout_families"
PRETRAIN_FILE = "pretrain.txt"


@dataclass(frozen=True)
class Cell:
    """One trained and scored model: an arm at a prompt encoding and seed (HINT: plus a variant)."""

    arm: str  # "concat" or "hint"
    encoding: str
    seed: int
    tag: str = ""  # HINT variant name ("" = the default HINT arm)
    overrides: tuple[str, ...] = ()  # HINT config overrides of the variant

    @property
    def name(self) -> str:
        variant = f"-{self.tag}" if self.tag else ""
        return f"{self.arm}{variant}-{self.encoding}-seed{self.seed}"


def settings_for(args: argparse.Namespace, seed: int, encoding: str) -> DemoSettings:
    return DemoSettings(
        seed=seed,
        encoding=encoding,
        train_instances=TRAIN_INSTANCES,
        eval_instances=args.eval_instances,
        max_steps=args.steps,
        lr=args.lr,
        batch_size=BATCH_OF_TRAINING,
        warmup_steps=min(100, args.steps // 10),
        num_threads=args.threads,
        workers=args.workers,
    )


def seed_inputs(out: Path, args: argparse.Namespace, seed: int) -> tuple[Any, Path, Path]:
    """The suite (held-out instances of training tasks cut to `--train-set-instances` per task), its SuperNI
    export and the base model of one seed, written once under OUT/seed<s>/ and shared by every cell."""
    suite = build_suite(
        seed=seed,
        train_instances=TRAIN_INSTANCES,
        eval_instances=args.eval_instances,
        num_demonstrations=MAX_DEMONSTRATIONS,
    )
    trimmed = [replace(t, instances=t.instances[: args.train_set_instances]) for t in suite.heldout_instances]
    suite = replace(suite, heldout_instances=trimmed)
    root = out / f"seed{seed}"
    suite_dir, base = root / "suite", root / "base-model"
    if not (base / "config.json").is_file():
        export_superni(suite, suite_dir)
        build_base_model(suite, settings_for(args, seed, "def"), base)
    return suite, suite_dir, base


def cell_context(cell: Cell, out: Path, args: argparse.Namespace, encoding: str | None = None) -> Context:
    """The demo context of a cell; `encoding` (default the cell's) is how prompts are rendered."""
    suite, suite_dir, base = seed_inputs(out, args, cell.seed)
    return Context(
        out=out / f"seed{cell.seed}" / cell.encoding / (cell.arm + (f"-{cell.tag}" if cell.tag else "")),
        settings=settings_for(args, cell.seed, cell.encoding),
        suite=suite,
        suite_dir=suite_dir,
        base_model=base,
        encoding=PromptEncoding.parse(encoding or cell.encoding),
    )


def scored(scores: dict[str, Any], per_set: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "scores": scores,
        "flops_per_instance": {s: m["inference FLOPs per instance"] for s, m in per_set.items()},
        "eval_seconds_per_instance": {s: m["eval seconds per instance"] for s, m in per_set.items()},
    }


def run_cell(cell: Cell, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one cell (in a worker process or this one); its record is also OUT/cells/NAME.json."""
    ctx = cell_context(cell, out, args)
    result: StageResult = stage_sft(ctx) if cell.arm == "concat" else stage_hint(ctx, cell.overrides)
    record = {
        "cell": asdict(cell),
        **scored(result.scores, result.per_set),
        "train_seconds": result.train_seconds,
        "run_dir": str(result.run_dir),
    }
    if cell.arm == "hint":
        record["prefix_gates"] = prefix_gate_summary(result.run_dir)
    path = out / "cells" / f"{cell.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return record


def with_shots(encoding: str, shots: int) -> str:
    """`encoding` with `shots` demonstrations instead of its own (its other parts, e.g. compact, kept)."""
    return str(replace(PromptEncoding.parse(encoding), num_pos=shots))


def evaluate_at(
    cell: Cell, record: dict[str, Any], shots: int, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """A trained cell's model scored with `shots` demonstrations in every prompt (concatenation) or
    instruction (HINT), whatever it was trained with; kept as OUT/cells/NAME-at-Kpos.json."""
    path = out / "cells" / f"{cell.name}-at-{shots}pos.json"
    if path.is_file():
        return json.loads(path.read_text())
    ctx = cell_context(cell, out, args, with_shots(cell.encoding, shots))
    evaluation = evaluate_run(Path(record["run_dir"]), ctx, ctx.out / f"eval-at-{shots}pos")
    result = {"cell": asdict(cell), "shots": shots, **scored(evaluation.scores, evaluation.per_set)}
    path.write_text(json.dumps(result, indent=2))
    return result


def pretraining_documents(suite: Any, path: Path, per_task: int = 20, examples: int = 8) -> Path:
    """Plain text for hypernetwork pretraining, from the training tasks only (no held-out phrasing or
    family): `per_task` documents per task, each its definition followed by `examples` of its training
    instances as "Input: x. Output: y." (the paper used C4; this suite's word-level vocabulary knows only
    its own words). One document per line."""
    if path.is_file():
        return path
    lines = []
    for task in suite.train:
        for d in range(per_task):
            chosen = task.instances[d * examples : (d + 1) * examples]
            shown = " ".join(f"Input: {x.input}. Output: {x.outputs[0]}." for x in chosen)
            lines.append(f"{task.definition}. {shown}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def prefix_gate_summary(run_dir: Path | None) -> dict[str, float] | None:
    """How far the trained prefix gates opened: mean and max |tanh(g)| over slots and heads."""
    from safetensors.torch import load_file

    from lmadapt.hint.run import HYPERNETWORK_FILE

    gates = load_file(str(Path(str(run_dir)) / HYPERNETWORK_FILE)).get("generator.prefix_gates")
    if gates is None:
        return None
    opened = gates.tanh().abs()
    return {"mean_abs_tanh": float(opened.mean()), "max_abs_tanh": float(opened.max())}


def run_cells(cells: list[Cell], out: Path, args: argparse.Namespace) -> dict[Cell, dict[str, Any]]:
    """Every cell's record: reused from OUT/cells/ when there, else trained (`--workers` processes)."""
    records: dict[Cell, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        path = out / "cells" / f"{cell.name}.json"
        if path.is_file():
            records[cell] = json.loads(path.read_text())
        else:
            todo.append(cell)
    for cell in todo:  # seed inputs first, in this process, so workers never write them at once
        seed_inputs(out, args, cell.seed)
    if args.workers <= 1:
        for cell in todo:
            logging.info("cell %s", cell.name)
            records[cell] = run_cell(cell, out, args)
        return records
    context = multiprocessing.get_context("spawn")
    init = (args.threads,)
    with ProcessPoolExecutor(
        args.workers, mp_context=context, initializer=_init_worker, initargs=init
    ) as pool:
        futures = {cell: pool.submit(run_cell, cell, out, args) for cell in todo}
        for cell, future in futures.items():
            records[cell] = future.result()
    return records


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="[worker] %(message)s")


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def compare(concat: list[dict[str, Any]], hint: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-set spreads of each arm's scores and of the per-seed gaps (records paired by seed)."""
    sets: dict[str, Any] = {}
    paired = list(zip(concat, hint, strict=True))
    for set_name in EVAL_SETS:
        row: dict[str, Any] = {}
        for arm, records in (("concat", concat), ("hint", hint)):
            row[arm] = {
                metric: spread([r["scores"][set_name][metric] for r in records])
                for metric in ("rougeL", "exact_match")
            }
            row[arm]["flops_per_instance"] = spread([r["flops_per_instance"][set_name] for r in records])
        for metric in ("rougeL", "exact_match"):
            gaps = [c["scores"][set_name][metric] - h["scores"][set_name][metric] for c, h in paired]
            row[f"{metric}_gap"] = spread(gaps)
        row["flops_ratio"] = spread(
            [c["flops_per_instance"][set_name] / h["flops_per_instance"][set_name] for c, h in paired]
        )
        row["wall_ratio"] = spread(
            [
                c["eval_seconds_per_instance"][set_name] / h["eval_seconds_per_instance"][set_name]
                for c, h in paired
            ]
        )
        sets[set_name] = row
    return sets


def fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def print_seed_table(sets: dict[str, Any], hint_name: str) -> None:
    print(
        f"| set | concat ROUGE-L | {hint_name} ROUGE-L | gap (concat - HINT) | concat EM | {hint_name} EM "
        "| FLOPs ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for set_name, row in sets.items():
        print(
            f"| {SET_NAMES[set_name]} | {fmt(row['concat']['rougeL'])} | {fmt(row['hint']['rougeL'])} "
            f"| {fmt(row['rougeL_gap'])} | {fmt(row['concat']['exact_match'])} "
            f"| {fmt(row['hint']['exact_match'])} | {row['flops_ratio']['mean']:.2f} |"
        )


def print_shots_table(rows: list[dict[str, Any]]) -> None:
    """FLOPs per instance on held-out families; ROUGE-L on held-out phrasings / families."""
    print(
        "| demonstrations | concat MFLOPs/instance | HINT MFLOPs/instance | ratio "
        "| concat ROUGE-L phr / fam | HINT ROUGE-L phr / fam |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        c, h = r["concat"], r["hint"]
        print(
            f"| {r['shots']} | {c['flops'] / 1e6:.2f} | {h['flops'] / 1e6:.2f} "
            f"| {c['flops'] / h['flops']:.2f} "
            f"| {c['heldout_phrasings']:.1f} / {c['heldout_families']:.1f} "
            f"| {h['heldout_phrasings']:.1f} / {h['heldout_families']:.1f} |"
        )


def shots_row(shots: int, concat: list[dict[str, Any]], hint: list[dict[str, Any]]) -> dict[str, Any]:
    """Inference FLOPs per instance (held-out families) and ROUGE-L of both arms at k demonstrations,
    means over the given records (seeds)."""

    def arm(records: list[dict[str, Any]]) -> dict[str, float]:
        scores = {s: statistics.fmean(r["scores"][s]["rougeL"] for r in records) for s in EVAL_SETS}
        return {"flops": statistics.fmean(r["flops_per_instance"][GAP_SET] for r in records), **scores}

    return {"shots": shots, "seeds": len(concat), "concat": arm(concat), "hint": arm(hint)}


def check_settings(out: Path, args: argparse.Namespace) -> None:
    """Cells are reused only under the settings that made them."""
    fixed = {
        "steps": args.steps,
        "lr": args.lr,
        "eval_instances": args.eval_instances,
        "train_set_instances": args.train_set_instances,
        "batch_size": BATCH_OF_TRAINING,
        "train_instances": TRAIN_INSTANCES,
        "demonstrations_in_suite": MAX_DEMONSTRATIONS,
    }
    path = out / "settings.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != fixed:
            raise SystemExit(f"{out} holds cells made with {saved}, not {fixed}: use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fixed, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of the multi-seed comparison")
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps of each arm")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both arms")
    parser.add_argument("--eval-instances", type=int, default=100, help="per held-out phrasing/family task")
    parser.add_argument("--train-set-instances", type=int, default=5, help="per training task (set a)")
    parser.add_argument("--encoding", default="def+2pos", help="prompt encoding of the multi-seed comparison")
    parser.add_argument("--shots", type=int, nargs="*", default=[], help="few-shot table: demonstrations")
    parser.add_argument(
        "--eval-shots", type=int, nargs="*", default=[], help="score the multi-seed models with k demos"
    )
    parser.add_argument("--hint", nargs="*", default=[], metavar="KEY=VALUE", help="HINT config overrides")
    parser.add_argument(
        "--pretrain-steps", type=int, default=0, help="HINT variant: hypernetwork pretraining steps first"
    )
    parser.add_argument("--tag", default="", help="name of the HINT variant set by --hint")
    parser.add_argument("--out", default=f"runs/bench-hint-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--workers", type=int, default=2, help="cells trained side by side (processes)")
    args = parser.parse_args()
    if (args.hint or args.pretrain_steps) and not args.tag:
        parser.error("--hint and --pretrain-steps need --tag (the variant's name in cell files and tables)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    check_settings(out, args)

    def hint_cell(encoding: str, seed: int) -> Cell:
        overrides = list(args.hint)
        if args.pretrain_steps:
            documents = pretraining_documents(
                seed_inputs(out, args, seed)[0], out / f"seed{seed}" / PRETRAIN_FILE
            )
            overrides += [
                f"pretrain.sources=[{documents}]",
                f"pretrain.max_steps={args.pretrain_steps}",
                f"pretrain.lr={args.lr}",
            ]
        return Cell("hint", encoding, seed, args.tag, tuple(overrides))

    seeds = list(range(args.seeds))
    pairs = [(Cell("concat", args.encoding, s), hint_cell(args.encoding, s)) for s in seeds]
    shot_pairs = [
        (Cell("concat", enc, seeds[0]), hint_cell(enc, seeds[0]))
        for enc in (with_shots(args.encoding, k) for k in args.shots)
    ]
    cells = list(dict.fromkeys(c for pair in pairs + shot_pairs for c in pair))
    records = run_cells(cells, out, args)

    concat = [records[c] for c, _ in pairs]
    hint = [records[h] for _, h in pairs]
    sets = compare(concat, hint)
    hint_name = f"HINT ({args.tag})" if args.tag else "HINT"
    print(f"\n{len(seeds)} seeds, {args.steps} steps, {args.encoding}; mean ± sample std over seeds")
    print_seed_table(sets, hint_name)
    result: dict[str, Any] = {
        "encoding": args.encoding,
        "steps": args.steps,
        "seeds": seeds,
        "hint_variant": {"tag": args.tag, "overrides": args.hint, "pretrain_steps": args.pretrain_steps},
        "flops_ratio": sets[GAP_SET]["flops_ratio"]["mean"],
        "rougeL_gap": sets[GAP_SET]["rougeL_gap"]["mean"],
        "exact_match_gap": sets[GAP_SET]["exact_match_gap"]["mean"],
        "wall_ratio": sets[GAP_SET]["wall_ratio"]["mean"],
        "sets": sets,
        "train_seconds": {
            "concat": spread([r["train_seconds"] for r in concat]),
            "hint": spread([r["train_seconds"] for r in hint]),
        },
        "prefix_gates": [r.get("prefix_gates") for r in hint],
    }
    if shot_pairs:
        rows = [
            shots_row(k, [records[c]], [records[h]]) for k, (c, h) in zip(args.shots, shot_pairs, strict=True)
        ]
        print(f"\nFew-shot, trained and scored with k demonstrations (seed {seeds[0]}):")
        print_shots_table(rows)
        result["few_shot"] = rows
    if args.eval_shots:
        rows = []
        for k in args.eval_shots:
            concat_at = [evaluate_at(c, records[c], k, out, args) for c, _ in pairs]
            hint_at = [evaluate_at(h, records[h], k, out, args) for _, h in pairs]
            rows.append(shots_row(k, concat_at, hint_at))
        print(f"\nFew-shot, the {args.encoding} models scored with k demonstrations ({len(seeds)} seeds):")
        print_shots_table(rows)
        result["few_shot_at_eval"] = rows
    result["total_minutes"] = (time.perf_counter() - start) / 60
    (out / f"benchmark{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
