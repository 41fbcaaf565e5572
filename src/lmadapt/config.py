"""Typed dataclass configs, read from a YAML recipe plus `key.sub=value` command-line overrides.

A recipe's config is a tree of dataclasses. `load_config` merges the YAML file and the overrides
into a plain dict, then builds the dataclass tree, checking every key and type on the way so that
a typo fails loudly (with the closest valid key) instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from lmadapt.errors import ConfigError

T = TypeVar("T")


@dataclass
class LoraConfig:
    """PEFT LoRA settings; `enabled: false` means full finetuning."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # "all-linear" is PEFT's shorthand for every linear layer except the output head.
    target_modules: list[str] | str = "all-linear"


@dataclass
class ModelConfig:
    """Which model to adapt. `path` is a local directory in Hugging Face layout."""

    path: str = ""
    tokenizer: str = ""  # defaults to `path`
    kind: Literal["auto", "causal", "seq2seq"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False  # run Python files shipped with the model (only when asked)
    # Load pickled weights (pytorch_model.bin, adapter_model.bin) when a directory has no safetensors:
    # unpickling can run code from the file, so only for files you trust.
    allow_pickle: bool = False
    # "auto": transformers' default for the model (SDPA where supported); flash_attention_2 needs a GPU
    # and the flash-attn package.
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class SourceConfig:
    """One data file of a mixture: all of it once (neither count nor fraction), `count` records, or
    `fraction` x its size (open-instruct amounts; above the file's size it is upsampled)."""

    path: str = ""
    format: Literal["auto", "messages", "prompt_completion", "alpaca", "sharegpt"] = "auto"
    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.fraction is not None:
            raise ConfigError(f"data source {self.path}: give count or fraction, not both")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)):
            raise ConfigError(f"data source {self.path}: count must be an integer, got {self.count!r}")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"data source {self.path}: count must be positive, got {self.count}")
        if self.fraction is not None and not self.fraction > 0:
            raise ConfigError(f"data source {self.path}: fraction must be positive, got {self.fraction}")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    eval_sources: list[SourceConfig] = field(default_factory=list)
    template: str = "tulu"  # "tulu", "chatml", or "tokenizer" (the tokenizer's own chat_template)
    max_length: int = 1024  # causal: whole sequence; seq2seq: source length
    max_target_length: int = 256  # seq2seq only
    truncation: Literal["truncate", "drop"] = "truncate"
    cache_dir: str = ".cache/lmadapt"
    seed: int = 0
    # How examples form micro-batches (train.batch_size each):
    #   grouped (default): examples of similar length, in a seeded random order: little padding; the
    #     fastest exact batching measured (benchmarks/sft_vs_trl.py). SFT, DPO and reward models.
    #   random: a seeded shuffle, right-padded to the longest of the micro-batch.
    #   packed (SFT, causal models): examples concatenated into rows of at most pack_length tokens
    #     (0 = max_length), positions restarting and attention and labels isolated per example, so every
    #     example's loss and gradient are those of the unpadded run; train.batch_size then counts rows.
    batching: Literal["grouped", "random", "packed"] = "grouped"
    pack_length: int = 0


@dataclass
class TrainConfig:
    output_dir: str = ""
    overwrite: bool = False
    resume: bool = False
    force_resume: bool = False  # resume even though the config differs from the saved one
    seed: int = 0
    epochs: float = 1.0
    max_steps: int = -1  # optimizer steps; overrides epochs when > 0
    batch_size: int = 8  # per device, per micro-step
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0  # linear/cosine decay ends at this fraction of lr
    max_grad_norm: float = 1.0
    save_every: int = 0  # steps (and the last step); 0 = no periodic checkpoints, only the final model
    # After SIGTERM/Ctrl-C: seconds to finish the step and checkpoint before stopping at once.
    stop_grace_s: float = 120.0
    keep_last: int = 2
    # A step whose loss or gradient is NaN/inf is skipped (no update); this many in a row stop the run.
    max_bad_steps: int = 10
    eval_every: int = 0  # steps; 0 = only at the end (when there is eval data)
    # A suite YAML (`lmadapt eval suite`; its models/out are replaced by the model in training) run at
    # every evaluation (SFT, DPO): results in output_dir/eval_suite/step-N/, headlines logged as suite/NAME.
    eval_suite: str = ""
    log_every: int = 10
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    num_threads: int = 0  # torch intra-op threads on CPU; 0 = one per core
    compile: bool = False  # torch.compile (inductor) of the model; pays off on GPUs, slow to start on CPU
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1/3 more compute
    progress: bool = True


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file (optional) and `key.sub=value` overrides (values parsed as YAML)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(yaml_error_line(path, e)) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    for item in overrides or []:
        apply_override(raw, item)
    return from_dict(cls, raw)


def yaml_error_line(path: Path, e: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: file:line:column: what is wrong (while parsing what)."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; a numeric part indexes a list (`data.sources.0.path=x`)."""
    key, sep, value_text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    try:
        value = yaml.safe_load(value_text) if value_text else ""
    except yaml.YAMLError:
        value = value_text
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise ConfigError(
                    f"override '{key}': '{part}' is not a valid index (list has {len(node)} items)"
                )
            idx = int(part)
            if idx == len(node):
                node.append([] if not last and parts[i + 1].isdigit() else {})
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict | list):
                child = node[part] = [] if parts[i + 1].isdigit() else {}
            node = child


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from nested plain data, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{dotted}'{_suggestion(str(key), fields, where)}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _suggestion(key: str, valid: set[str], where: str) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    prefix = f"{where}." if where else ""
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys here: {', '.join(sorted(valid))}"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:  # free-form settings checked by their consumer (an evaluation's own arguments)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"'{where}': {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"'{where}': {value!r} is not one of {choices}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        return {
            _coerce(args[0], k, f"{where} key {k!r}"): _coerce(args[1], v, f"{where}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"'{where}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{where}.{i}") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (str, int, bool, float) and (type(value) is tp):
        return value
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"'{where}' must be {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config tree (tuples become lists so YAML stays plain)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config beside a run's outputs; loading it back gives the same config."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Preference tuning


@dataclass
class PreferenceLossConfig:
    """The `dpo:` section: which preference loss and where the reference log-probs come from."""

    loss: Literal["dpo", "dpo_norm", "ipo", "simpo"] = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0  # > 0: conservative DPO (assumed rate of flipped labels)
    gamma: float = 0.5  # SimPO target reward margin
    # cached: one pass before training, stored on disk and reused; online: a reference forward per step.
    reference: Literal["cached", "online"] = "cached"
    reference_model: str = ""  # local directory; default model.path (the base model when LoRA is on)
    reference_batch_size: int = 0  # pairs per batch of the cached pass; 0 = train.batch_size


@dataclass
class DPOTrainConfig(TrainConfig):
    """Tulu 2 DPO defaults (a subclass, so a `train:` section that omits them still gets them)."""

    lr: float = 5e-7
    warmup_ratio: float = 0.1


@dataclass
class DPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)
    dpo: PreferenceLossConfig = field(default_factory=PreferenceLossConfig)


@dataclass
class RewardTrainConfig(TrainConfig):
    lr: float = 1e-5


@dataclass
class RewardConfig:
    """A scalar-head reward model trained on preference pairs with the Bradley-Terry loss."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)


# ---------------------------------------------------------------------------------------------
# HINT: hypernetwork instruction tuning


@dataclass
class HypernetworkConfig:
    """The `hint:` section: which modules the hypernetwork generates, and how it reads the instruction."""

    # shared: the underlying model's own encoder (a decoder-only model: the model itself), run on the
    # instruction with every generated module switched off; separate: a trained copy of it; or a local
    # Hugging Face encoder directory (e.g. a sentence-embedding BERT) that reads the instruction with its
    # own tokenizer.
    encoder: str = "shared"
    # A pretrained encoder directory only: keep its weights fixed (its states are then computed once per
    # distinct instruction and reused), or train it with the rest.
    freeze_encoder: bool = True
    modules: list[Literal["adapter", "prefix", "lora"]] = field(default_factory=lambda: ["adapter", "prefix"])
    adapter_size: int = 64  # parallel adapter bottleneck beside every feed-forward block
    prefix_length: int = 30  # prefix keys/values per attention slot
    lora_rank: int = 8
    lora_targets: list[Literal["q", "k", "v", "o"]] = field(default_factory=lambda: ["q", "v"])
    generator_heads: int = 0  # heads of the generator's cross-attention; 0 = the underlying model's
    # Instruction fusion. Encoder-decoder: the decoder cross-attends over [encoded instruction; encoded
    # input]. Decoder-only: the instruction's per-layer keys/values (from the pass that feeds the
    # generator) are an extra prefix of every layer's attention.
    fusion: bool = True
    freeze_underlying: bool = False  # train the hypernetwork only (HyperTuning-style)
    max_instruction_length: int = 1024  # tokens the hypernetwork reads (definition + demonstrations)


@dataclass
class HintDataConfig:
    """Task-structured data in the SuperNI layout: a natural-instructions clone or the built-in suite."""

    # Clone root (tasks/, splits/); the `lmadapt hint` command also takes "builtin" (lmadapt.demo.builtin).
    superni: str = ""
    split: str = "default"  # a split under <superni>/splits/ or a task-list file; its train tasks are used
    encoding: str = "def+2pos"  # what the hypernetwork reads; the underlying model sees only the instance
    max_instances_per_task: int = 100
    eval_instances_per_task: int = 0  # > 0: eval loss on that many instances of each test task
    template: Literal["none", "tulu", "chatml", "tokenizer"] = "none"  # chat template around the instance
    # What the underlying model reads of an instance: "raw" its input alone (HINT); "compact" the input
    # framed like the demonstrations ("Input: ... Output:"); "tk" the Tk-Instruct instance block.
    instance_format: Literal["raw", "compact", "tk"] = "raw"
    max_input_length: int = 1024
    max_target_length: int = 256
    seed: int = 0


@dataclass
class HintPretrainConfig:
    """Optional hypernetwork pretraining on plain text before finetuning (off while max_steps is 0).

    Every document is cut at two random points into A, B, C: A goes to the hypernetwork, B to the
    underlying model as its input, and C is the target.
    """

    sources: list[str] = field(default_factory=list)  # .txt (a document per line) or .jsonl ({"text": ...})
    max_steps: int = 0
    lr: float = 1e-4
    max_documents: int = 0  # 0 = all


@dataclass
class HintTrainConfig(TrainConfig):
    """HINT trains with a constant learning rate (AdamW here in place of the paper's Adafactor at 1e-3)."""

    lr: float = 1e-4
    schedule: Literal["linear", "cosine", "constant"] = "constant"
    # Peak learning rate of the prefix gates (0 = lr). Adam moves a scalar about lr per step, and a
    # closed gate passes its prefixes almost no gradient, so at the shared lr the gates may stay near 0.
    gate_lr: float = 0.0


@dataclass
class HintConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    hint: HypernetworkConfig = field(default_factory=HypernetworkConfig)
    data: HintDataConfig = field(default_factory=HintDataConfig)
    pretrain: HintPretrainConfig = field(default_factory=HintPretrainConfig)
    train: HintTrainConfig = field(default_factory=HintTrainConfig)


# ---------------------------------------------------------------------------------------------
# Online reinforcement learning (GRPO; PPO builds on the same sections)


@dataclass
class PromptDataConfig:
    """Prompts with ground truth for online RL: JSONL files and/or SuperNI-layout tasks."""

    # JSONL/JSON/Parquet records: {"messages": [...]} or {"prompt": str}, plus "ground_truth"
    # (a string, a number, or a list of accepted answers).
    sources: list[str] = field(default_factory=list)
    superni: str = ""  # a SuperNI-layout root (tasks/, splits/); its train tasks' instances become prompts
    superni_split: str = "default"
    superni_encoding: str = "def+2pos"
    max_instances_per_task: int = 100
    template: str = "tulu"
    max_prompt_length: int = 512  # longer prompts are dropped (counted in the log)
    cache_dir: str = ".cache/lmadapt"


@dataclass
class RolloutConfig:
    """How each RL step samples: `prompts_per_step` prompts x `num_generations` completions."""

    prompts_per_step: int = 8
    num_generations: int = 8  # G: completions per prompt (a group)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 0  # sequences per generate call; 0 = the whole rollout batch at once


@dataclass
class UpdateConfig:
    """How the rollout batch trains the policy: `num_iterations` passes over it, each pass split into
    `mini_batches` optimizer steps; every optimizer step accumulates micro-batches of train.batch_size
    sequences, exactly (the gradient equals that of the whole mini-batch at once)."""

    num_iterations: int = 1
    mini_batches: int = 1


@dataclass
class VerifiableRewardConfig:
    """The reward of a completion against its prompt's ground truth (lmadapt.rl.rewards)."""

    kind: Literal["exact_match", "gsm8k", "rouge_l", "verifier"] = "exact_match"
    verifier: str = ""  # kind=verifier: "module:function" of your own code, f(completion, ground_truth)


@dataclass
class GRPOLossConfig:
    """The `grpo:` section (losses/grpo.py)."""

    loss_type: Literal["grpo", "dapo", "dr_grpo"] = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # DAPO's clip-higher uses 0.28
    beta: float = 0.0  # k3 KL to the reference (the starting model); 0 = no reference pass at all


@dataclass
class RLTrainConfig(TrainConfig):
    """train.max_steps counts RL steps (a rollout batch and its updates); epochs count passes over the
    prompts. train.batch_size is the micro-batch in sequences; train.grad_accum is unused (see
    UpdateConfig)."""

    lr: float = 1e-6
    warmup_ratio: float = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "constant"


@dataclass
class GRPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    reward: VerifiableRewardConfig = field(default_factory=VerifiableRewardConfig)
    grpo: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)


@dataclass
class PPOLossConfig:
    """The `ppo:` section (rl/ppo.py, losses/ppo.py): PPO against a reward model, Tulu 2.5 style."""

    reward_model: str = ""  # an `lmadapt reward` output directory (required); frozen
    value_model: str = ""  # where the value model starts: default reward_model (as in Tulu 2.5)
    kl_coef: float = 0.05  # beta of the per-token -beta * KL reward (k1 estimator)
    gamma: float = 1.0
    lam: float = 0.95  # GAE lambda
    clip: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # the value model's new estimates stay within this of the rollout's
    vf_coef: float = 0.1  # weight of the value loss in the one loss (one optimizer) of policy and value
    whiten_rewards: bool = False  # rescale per-token rewards to unit variance (mean kept) before GAE
    whiten_advantages: bool = True
    # The score of a completion cut at max_new_tokens without EOS, in place of the reward model's (e.g.
    # -10); null = no penalty.
    missing_eos_penalty: float | None = None
    verifiable_coef: float = 1.0  # weight of the `reward:` section's verifiable reward, when there is one


@dataclass
class PPORolloutConfig(RolloutConfig):
    """PPO needs no group of completions per prompt: one each by default."""

    num_generations: int = 1


@dataclass
class PPOConfig:
    """`reward:` is optional here: without it the reward model alone scores completions and prompts need
    no ground truth."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    rollout: PPORolloutConfig = field(default_factory=PPORolloutConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    reward: VerifiableRewardConfig | None = None
    ppo: PPOLossConfig = field(default_factory=PPOLossConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)


# Data selection


@dataclass
class QuerySourceConfig:
    """Examples of a target task; only their inputs are read (unlabelled examples suffice).

    `path` is a JSONL/JSON file of prompts (any SFT format, or {"input": ...}; a record's "task" field
    names its task), a SuperNI task file (`tasks/<name>.json`), or a SuperNI clone directory whose
    `split` lists the target tasks.
    """

    path: str = ""
    task: str = ""  # the task of a prompt file's records without a "task" field (default: the file's stem)
    split: str = "default"  # clone directory only: a split under splits/ or a task-list file
    subset: str = "test"  # clone directory only: which task list of the split
    encoding: str = "def+2pos"  # SuperNI: how an instance becomes a prompt
    max_instances: int = 0  # SuperNI: the first N instances of each task (0 = all)


@dataclass
class SelectionConfig:
    """The `selection:` section: how the pool is embedded, searched and cut to the budget.

    rds: the model's last hidden layer, position-weighted mean over the prompt's tokens (RDS+).
    deft: mean-pooled states of an encoder or sentence-embedding model (DEFT), union of k neighbours.
    random: a seeded uniform sample (the baseline).
    """

    method: Literal["rds", "deft", "random"] = "rds"
    # round_robin: queries take turns, each its next most similar unchosen example; top_mean: highest mean
    # cosine over the task's queries; union: k neighbours per query, ranked by how many queries retrieved
    # them. auto: round_robin for rds, union for deft. Several target tasks always take turns.
    strategy: Literal["auto", "round_robin", "top_mean", "union"] = "auto"
    count: int | None = None  # the budget: a number of examples, or
    fraction: float | None = None  # a fraction of the pool
    k: int = 0  # union: neighbours per query (0 = the budget)
    template: str = "tulu"  # rds: how prompts are rendered for the model (as SFT renders them)
    max_length: int = 512  # tokens of a prompt that are embedded
    batch_size: int = 32
    chunk_size: int = 4096  # examples per cached embedding chunk: a killed run loses at most one
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # flat: exact inner product; ivf/hnsw: approximate
    ivf_lists: int = 0  # IVF k-means cells (0 = sqrt(pool size): k-means stays cheap at millions)
    ivf_probe: int = 32  # IVF cells searched per query
    hnsw_m: int = 32  # HNSW links per node
    hnsw_ef_search: int = 128  # HNSW search breadth
    cache_dir: str = ".cache/lmadapt"
    seed: int = 0
    num_threads: int = 0  # torch and FAISS threads; 0 = their defaults

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ConfigError("selection: give the budget as count or fraction (exactly one)")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"selection.count must be positive, got {self.count}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"selection.fraction must be in (0, 1], got {self.fraction}")
        if self.method == "random" and self.strategy != "auto":
            raise ConfigError(f"selection.strategy {self.strategy!r} does not apply to method random")
        for name in ("k", "ivf_lists", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"selection.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_length", "batch_size", "chunk_size", "ivf_probe", "hnsw_m", "hnsw_ef_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"selection.{name} must be positive, got {getattr(self, name)}")

    @property
    def resolved_strategy(self) -> str:
        """The strategy that runs: "random" for the random method, `auto` resolved for the others."""
        if self.method == "random":
            return "random"
        if self.strategy == "auto":
            return "round_robin" if self.method == "rds" else "union"
        return self.strategy


@dataclass
class SelectConfig:
    """`lmadapt select`: choose the pool examples that serve the target tasks; write them as SFT data."""

    # rds: the base model to be trained; deft: an encoder or sentence-embedding model (a local
    # sentence-transformers directory loads as-is); random: unused.
    model: ModelConfig = field(default_factory=ModelConfig)
    pool: list[SourceConfig] = field(default_factory=list)  # SFT data files, amounts as in a mixture
    queries: list[QuerySourceConfig] = field(default_factory=list)
    selection: SelectionConfig = field(default_factory=lambda: SelectionConfig(count=1000))
    output: str = ""  # JSONL of the chosen conversations; <output stem>.manifest.jsonl beside it
    overwrite: bool = False  # replace an existing output and manifest
