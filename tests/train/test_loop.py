from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import time

import pytest
import torch
from accelerate.utils import DistributedType
from transformers import LlamaModel, PreTrainedModel

from lmadapt.config import TrainConfig
from lmadapt.data.collate import collate_causal
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.errors import Interrupted, LmadaptError, Preempted
from lmadapt.models.tiny import tiny_llama
from lmadapt.train.checkpoint import latest_checkpoint
from lmadapt.train.distributed import setup_accelerator
from lmadapt.train.loop import accumulate_gradients, evaluate, fit
from lmadapt.train.objectives import LanguageModelling

VOCAB = 48


def _examples(n: int, seed: int = 0) -> list[TokenizedExample]:
    """Prompt/answer pairs of very different lengths, so per-batch token counts differ a lot.

    The answer cycles through the prompt, so there is something to learn.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 12))]
        answer = [prompt[i % len(prompt)] for i in range(rng.choice([1, 2, 15, 25]))]
        out.append(TokenizedExample(input_ids=prompt + answer, labels=[-100] * len(prompt) + answer))
    return out


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=4)


def _collate(batch):
    return collate_causal(batch, pad_token_id=0)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_accumulated_gradient_equals_big_batch_and_differs_from_naive_mean():
    examples = _examples(8)
    acc = setup_accelerator(TrainConfig(num_threads=1))
    objective = LanguageModelling("causal")
    model = _model()
    accumulate_gradients(model, objective, [_collate(examples)], acc)
    big = _grads(model)
    model.zero_grad()
    micro = [_collate(examples[i : i + 2]) for i in range(0, 8, 2)]
    _, weight, tokens = accumulate_gradients(model, objective, micro, acc)
    assert weight == tokens == sum(objective.weight(b) for b in micro)
    torch.testing.assert_close(_grads(model), big, atol=1e-6, rtol=1e-5)
    # The common mistake, averaging per-micro-batch means, gives a clearly different gradient here.
    model.zero_grad()
    for b in micro:
        (objective.loss_sum(model, b) / objective.weight(b) / len(micro)).backward()
    assert (_grads(model) - big).abs().max() > 1e-3


def test_one_step_of_8_equals_4_accumulated_steps_of_2(tmp_path):
    examples = _examples(8)
    finals = []
    for bs, ga in ((8, 1), (2, 4)):
        model = _model()
        cfg = TrainConfig(
            output_dir=str(tmp_path / f"bs{bs}"),
            batch_size=bs,
            grad_accum=ga,
            max_steps=1,
            lr=1e-2,
            adam_eps=1.0,  # makes the update ~linear in the gradient, so gradient errors show
            warmup_ratio=0.0,
            schedule="constant",
            progress=False,
            num_threads=1,
        )
        out = tmp_path / f"run-{ga}"
        out.mkdir()
        fit(model, LanguageModelling("causal"), examples, _collate, cfg, out, setup_accelerator(cfg))
        init = torch.cat([p.detach().flatten() for p in _model().parameters()])
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]) - init)
    assert finals[0].abs().max() > 1e-4  # the step moved the weights
    torch.testing.assert_close(finals[0], finals[1], atol=1e-8, rtol=1e-4)


def test_fit_lowers_loss_and_writes_metrics_and_plot(tmp_path):
    examples = _examples(32, seed=1)
    cfg = TrainConfig(
        output_dir=str(tmp_path / "run"),
        batch_size=8,
        epochs=8,
        lr=1e-2,
        warmup_ratio=0.1,
        log_every=1,
        progress=False,
        num_threads=1,
    )
    out = tmp_path / "run"
    out.mkdir()
    model = _model()
    result = fit(
        model,
        LanguageModelling("causal"),
        examples,
        _collate,
        cfg,
        out,
        setup_accelerator(cfg),
        eval_examples=examples[:8],
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert result.total_steps == 32 and len(losses) == 32
    assert losses[-1] < losses[0] - 1.0
    assert "eval_loss" in records[-1]
    assert (out / "loss.png").stat().st_size > 1000
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((out / "tensorboard").glob("events.out.tfevents.*"))


class _SignalledAt(LanguageModelling):
    """Language modelling that sends this process SIGINT `times` times during step `step`'s forward."""

    def __init__(self, step: int, times: int):
        super().__init__("causal")
        self.calls, self.step, self.times = 0, step, times

    def loss_sum(self, model, batch):
        self.calls += 1
        if self.calls == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # let the handler run before the next one (signals do not queue)
        return super().loss_sum(model, batch)


def _fit_until_signalled(tmp_path, times: int, save_every: int):
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        batch_size=4,
        max_steps=50,
        save_every=save_every,
        progress=False,
        num_threads=1,
    )
    fit(
        _model(),
        _SignalledAt(step=7, times=times),
        _examples(16),
        _collate,
        cfg,
        tmp_path,
        setup_accelerator(cfg),
    )


def test_one_signal_finishes_the_step_checkpoints_it_and_stops(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    with pytest.raises(Preempted, match="at step 7 of 50"):
        _fit_until_signalled(tmp_path, times=1, save_every=0)  # no periodic checkpoints at all
    assert latest_checkpoint(tmp_path / "checkpoints").meta["step"] == 7
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_second_signal_stops_at_once_keeping_the_last_complete_checkpoint(tmp_path):
    with pytest.raises(Interrupted, match=r"interrupted at step 6 of 50; newest checkpoint .*step-00000005"):
        _fit_until_signalled(tmp_path, times=2, save_every=5)


def _fit_deltas(tmp_path, name: str, model: torch.nn.Module, steps: int = 2, **options) -> torch.Tensor:
    """Weight change of `model` after `steps` of fit on a fixed small dataset; every update counts."""
    cfg = TrainConfig(
        output_dir=str(tmp_path / name),
        batch_size=4,
        max_steps=steps,
        lr=1e-2,
        adam_eps=1.0,
        warmup_ratio=0.0,
        schedule="constant",
        log_every=1,
        progress=False,
        num_threads=1,
        **options,
    )
    init = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    out = tmp_path / name
    out.mkdir()
    fit(model, LanguageModelling("causal"), _examples(8), _collate, cfg, out, setup_accelerator(cfg))
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - init


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_reaches_the_model_and_changes_no_update(tmp_path, lora):
    from lmadapt.config import LoraConfig
    from lmadapt.models.load import apply_lora

    def model() -> torch.nn.Module:
        m = _model()
        return apply_lora(m, LoraConfig(enabled=True, r=4), "causal", seed=0) if lora else m

    plain = _fit_deltas(tmp_path, "plain", model())
    checkpointed_model = model()
    checkpointed = _fit_deltas(tmp_path, "gc", checkpointed_model, gradient_checkpointing=True)
    hf_models = [m for m in checkpointed_model.modules() if isinstance(m, PreTrainedModel)]
    assert hf_models and all(m.is_activation_checkpointing for m in hf_models)
    assert all(m.gradient_checkpointing for m in checkpointed_model.modules() if isinstance(m, LlamaModel))
    assert plain.abs().max() > 1e-4
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=0)


def test_gradient_checkpointing_needs_a_hugging_face_model(tmp_path):
    with pytest.raises(LmadaptError, match="holds no Hugging Face model"):
        _fit_deltas(tmp_path, "linear", torch.nn.Linear(2, 2), gradient_checkpointing=True)


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    """torch.compile (inductor, dynamic shapes) on CPU: ~1-2 min of compilation on a loaded machine."""
    eager = _fit_deltas(tmp_path, "eager", _model(), steps=3)
    compiled_model = _model()
    compiled = _fit_deltas(tmp_path, "compiled", compiled_model, steps=3, compile=True)
    assert compiled_model._compiled_call_impl is not None
    records = [
        json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()
    ]
    reference = [json.loads(line) for line in (tmp_path / "eager" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses == pytest.approx([r["loss"] for r in reference if "loss" in r], rel=1e-5)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)


class _ShardedRank:
    """Rank `process_index` of `num_processes` under FSDP, with the collectives stubbed out (local sums)."""

    distributed_type = DistributedType.FSDP
    device = torch.device("cpu")

    def __init__(self, num_processes: int, process_index: int):
        self.num_processes, self.process_index = num_processes, process_index

    def autocast(self):
        return contextlib.nullcontext()

    def reduce(self, tensor, reduction):
        return tensor


def test_sharded_evaluation_runs_the_same_number_of_forwards_on_every_rank():
    """Under FSDP/ZeRO-3 each forward is a collective: a rank whose shard is short must still take
    part in every round (with its result discarded), or the other ranks wait forever."""
    examples, model, objective = _examples(5), _model(), LanguageModelling("causal")
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    forwards, losses = [], []
    for rank in (0, 1):
        calls.clear()
        losses.append(evaluate(model, objective, examples, _collate, 2, _ShardedRank(2, rank))["eval_loss"])
        forwards.append(len(calls))
    assert forwards == [2, 2]  # rank 1 holds only examples 2-3, then idles through round 2
    shard = _collate(examples[2:4])
    expected = float(objective.loss_sum(model, shard)) / objective.weight(shard)
    assert losses[1] == pytest.approx(expected, rel=1e-6)
