#!/usr/bin/env bash
# GPU check of the sharded engines: short SFT and DPO runs under FSDP2 and DeepSpeed ZeRO-3 on every
# GPU of this machine, plus a sharded-checkpoint resume. Prints one PASS/FAIL line per run with its
# tokens/s, and exits 1 if any run failed. Never run on the CPU machine this project is built on.
#
#   benchmarks/gpu_check.sh [NUM_GPUS]      # from the repository root; lmadapt installed
#
# A run passes when it exits 0, its Hugging Face export loads in plain transformers with finite
# weights, its losses are finite and the last is below the first. The resume check trains 20 steps,
# resumes from the step-20 sharded checkpoint to step 30 and compares with a straight 30-step run
# (bf16 on GPUs is not bit-reproducible: it reports the largest weight difference and passes below
# 1e-2). ZeRO-3 runs need `pip install deepspeed`; without it they are reported as FAIL.
set -uo pipefail

PYTHON=${PYTHON:-python}
NGPU=${1:-$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')}
if [ "${NGPU:-0}" -lt 1 ]; then
    echo "gpu_check: no CUDA GPU visible; nothing to check" >&2
    exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lmadapt-gpu-check.XXXXXX")
echo "gpu_check: $NGPU GPU(s), work dir $WORK (logs: $WORK/*.log)"

# A ~25M-parameter Llama, a byte-level tokenizer, synthetic chats and preference pairs, two recipes.
"$PYTHON" - "$WORK" <<'EOF' || { echo "gpu_check: FAIL setup"; exit 1; }
import json, random, sys
from pathlib import Path

import torch
from transformers import ByT5Tokenizer

from lmadapt.config import DPOConfig, SFTConfig, load_config, save_config
from lmadapt.models.tiny import tiny_llama

work = Path(sys.argv[1])
tok = ByT5Tokenizer()
torch.manual_seed(0)
tiny_llama(len(tok), hidden_size=512, num_layers=8, num_heads=8, tokenizer=tok).save_pretrained(work / "model")
tok.save_pretrained(work / "model")
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 40))) for _ in range(4000)]
with open(work / "chat.jsonl", "w") as f:
    for w in words:
        msgs = [{"role": "user", "content": f"reverse {w}"}, {"role": "assistant", "content": w[::-1]}]
        f.write(json.dumps({"messages": msgs}) + "\n")
with open(work / "pairs.jsonl", "w") as f:
    for w in words[:2000]:
        f.write(json.dumps({"prompt": f"reverse {w}", "chosen": w[::-1], "rejected": w + "x"}) + "\n")
common = [
    f"model.path={work / 'model'}", f"data.cache_dir={work / 'cache'}", "data.max_length=256",
    "train.batch_size=8", "train.max_steps=30", "train.log_every=1", "train.progress=false",
    "train.warmup_ratio=0", "train.schedule=constant",
]
save_config(load_config(SFTConfig, None, [*common, f"data.sources.0.path={work / 'chat.jsonl'}",
                                          "train.lr=3e-4"]), work / "sft.yaml")
save_config(load_config(DPOConfig, None, [*common, f"data.sources.0.path={work / 'pairs.jsonl'}",
                                          "train.lr=1e-5"]), work / "dpo.yaml")
EOF

FAILED=0

# verdict NAME RUN_DIR EXIT_CODE: one PASS/FAIL line from the run's export and metrics.
verdict() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import json, math, statistics, sys
from pathlib import Path

name, out, rc = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
def fail(why):
    print(f"FAIL {name}: {why} (log: {out}.log)")
    sys.exit(1)
if rc != 0:
    fail(f"exit code {rc}")
records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
losses = [r["loss"] for r in records if "loss" in r]
speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][3:]  # after warm-up
if not losses or not all(math.isfinite(x) for x in losses):
    fail(f"non-finite or missing losses {losses[:5]}")
if not losses[-1] < losses[0]:
    fail(f"loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}")
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(out)
if not all(p.isfinite().all() for p in model.parameters()):
    fail("exported weights are not finite")
speed = statistics.median(speeds) if speeds else float("nan")
print(f"PASS {name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, {speed:.0f} tokens/s")
EOF
}

# launch ENGINE RECIPE NAME [OVERRIDES...]: one run under configs/accelerate/ENGINE.yaml on all GPUs.
launch() {
    local engine=$1 recipe=$2 name=$3
    shift 3
    accelerate launch --config_file "configs/accelerate/$engine.yaml" --num_processes "$NGPU" \
        -m lmadapt "$recipe" "$WORK/$recipe.yaml" "train.output_dir=$WORK/$name" "$@" >"$WORK/$name.log" 2>&1
}

check() {
    local engine=$1 recipe=$2 name="$1-$2"
    shift 2
    launch "$engine" "$recipe" "$name" "$@"
    verdict "$name" "$WORK/$name" $? || FAILED=1
}

# FSDP2 keeps fp32 master weights (model.dtype=float32) and computes in bf16; ZeRO-3 keeps its own.
check fsdp2 sft model.dtype=float32
check fsdp2 dpo model.dtype=float32
check zero3 sft
check zero3 dpo

# Sharded checkpoint + resume under FSDP2: 20 steps, then resume the step-20 checkpoint to 30.
launch fsdp2 sft resume model.dtype=float32 train.max_steps=20 train.save_every=10
rc=$?
rm -f "$WORK/resume/result.json"
[ $rc -eq 0 ] && launch fsdp2 sft resume model.dtype=float32 train.save_every=10 --resume --force
rc=$?
if verdict fsdp2-sft-resumed "$WORK/resume" $rc; then
    "$PYTHON" - "$WORK/fsdp2-sft" "$WORK/resume" <<'EOF' || FAILED=1
import sys
from transformers import AutoModelForCausalLM

straight, resumed = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in sys.argv[1:3])
diff = max((straight[k].float() - resumed[k].float()).abs().max().item() for k in straight)
ok = diff < 1e-2
print(f"{'PASS' if ok else 'FAIL'} fsdp2-sft-resume-vs-straight: max |weight difference| {diff:.2e}")
sys.exit(0 if ok else 1)
EOF
else
    FAILED=1
fi

echo "gpu_check: $([ $FAILED -eq 0 ] && echo 'all passed' || echo 'FAILURES above'); work dir $WORK"
exit $FAILED
