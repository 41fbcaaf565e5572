"""The rollout batch as training data: per-sequence tensors, micro-batches, and per-token log-probs.

An experience batch is a dict of tensors whose first dimension is the sequence (N = prompts x G):
"prompt_ids"/"prompt_mask" [N, P] (left-padded), "completion_ids"/"completion_mask" [N, C]
(right-padded), "group" [N] (which prompt a row answers), and whatever the algorithm adds:
per-sequence values [N] ("advantages") or per-token values [N, C] aligned with the completion
("old_logps", "ref_logps", ...). `micro_batches` slices rows and trims padding columns;
`completion_logps` is the one forward pass every algorithm scores with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmadapt.eval.scoring import logits_to_keep
from lmadapt.rl.rollout import Rollouts

Experience = dict[str, torch.Tensor]


def from_rollouts(rollouts: Rollouts) -> Experience:
    return {
        "prompt_ids": rollouts.prompt_ids,
        "prompt_mask": rollouts.prompt_mask,
        "completion_ids": rollouts.completion_ids,
        "completion_mask": rollouts.completion_mask,
        "sampling_logps": rollouts.sampling_logps,
        "group": torch.arange(len(rollouts)) // rollouts.group_size,
    }


def select_rows(experience: Experience, rows: Sequence[int]) -> Experience:
    """The given sequences, with the prompt columns that are padding in every one of them (on the left)
    and the completion columns past every one's end (on the right) cut away."""
    index = torch.as_tensor(list(rows), dtype=torch.long)
    width = int(experience["completion_ids"].size(1))
    prompt_keep = int(experience["prompt_mask"][index].sum(dim=1).max())
    completion_keep = max(1, int(experience["completion_mask"][index].sum(dim=1).max()))
    out = {}
    for name, value in experience.items():
        value = value[index]
        if name.startswith("prompt_"):
            value = value[:, value.size(1) - prompt_keep :]
        elif value.dim() >= 2 and value.size(1) == width:
            value = value[:, :completion_keep]
        out[name] = value
    return out


def micro_batches(experience: Experience, rows: Sequence[int], size: int) -> list[Experience]:
    """`rows` in order, cut into micro-batches of `size` sequences (each trimmed by `select_rows`)."""
    rows = list(rows)
    return [select_rows(experience, rows[i : i + size]) for i in range(0, len(rows), size)]


def sequence_inputs(batch: Experience) -> dict[str, torch.Tensor]:
    """Prompt + completion as one model input: input_ids, attention_mask and position_ids, [B, P + C].

    Position ids count only real tokens, as `generate` counted them for the left-padded prompts, so a
    row scores the same whatever padding its micro-batch gives it.
    """
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    return {
        "input_ids": torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
        "attention_mask": mask,
        "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0),
    }


def completion_logps(
    model: torch.nn.Module, batch: Experience, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the completion tokens under `model` at `temperature`, as the sampler saw them.

    Returns (logps [B, C] float32, entropy [B, C] float32 detached, or None).

    With a "group" entry ([B], the prompt each row answers), each distinct prompt goes through the model
    once and its keys/values are shared by the rows that answer it: G completions cost one prompt pass,
    not G (gradients flow into the prompt pass through the shared cache). Otherwise every row is one
    sequence, and only the completion positions are projected to the vocabulary.
    """
    shared = "group" in batch
    logits = _shared_prompt_logits(model, batch) if shared else _full_sequence_logits(model, batch)
    logits = logits.float() / temperature
    log_probs = logits.log_softmax(dim=-1)
    logps = log_probs.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return logps, entropy


def _full_sequence_logits(model: torch.nn.Module, batch: Experience) -> torch.Tensor:
    """[B, C, V]: the logits before each completion token, from [prompt; completion] rows."""
    width = batch["completion_ids"].size(1)
    logits = model(**sequence_inputs(batch), use_cache=False, **logits_to_keep(model, width + 1)).logits
    return logits[:, -width - 1 : -1]  # position t predicts token t+1


def _shared_prompt_logits(model: torch.nn.Module, batch: Experience) -> torch.Tensor:
    """[B, C, V] like `_full_sequence_logits`, with one prompt pass per distinct prompt (see above)."""
    groups, row_prompt = torch.unique(batch["group"], return_inverse=True)
    rows = row_prompt.tolist()
    first_row = torch.tensor([rows.index(i) for i in range(len(groups))], device=row_prompt.device)
    prompt_mask = batch["prompt_mask"][first_row]
    prompt = model(
        input_ids=batch["prompt_ids"][first_row],
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(dim=1) - 1).clamp(min=0),
        use_cache=True,
        **logits_to_keep(model, 1),
    )
    cache = prompt.past_key_values
    cache.batch_select_indices(row_prompt)  # each row reads its own prompt's keys and values
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    position_ids = (mask.cumsum(dim=1) - 1)[:, batch["prompt_mask"].size(1) :]
    completion = model(
        input_ids=batch["completion_ids"],
        attention_mask=mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    # The prompt's last logits predict the first completion token; completion position t the next one.
    return torch.cat([prompt.logits[:, -1:][row_prompt], completion.logits[:, :-1]], dim=1)


@torch.no_grad()
def score_experience(
    model: torch.nn.Module,
    batches: Sequence[Experience],
    temperature: float,
    width: int,
    device: torch.device,
) -> torch.Tensor:
    """completion_logps of micro-batches (no gradient), as one [N, width] tensor in their row order (the
    trimmed columns are 0)."""
    return gather(lambda batch: completion_logps(model, batch, temperature)[0], batches, width, device)


@torch.no_grad()
def gather(
    score: Callable[[Experience], torch.Tensor],
    batches: Sequence[Experience],
    width: int,
    device: torch.device,
) -> torch.Tensor:
    """`score` of each micro-batch (moved to `device`; no gradient), concatenated in row order: per-token
    outputs [B, C'] as one [N, width] tensor (trimmed columns 0), per-sequence outputs [B] as [N]."""
    parts = []
    for batch in batches:
        out = score({k: v.to(device) for k, v in batch.items()}).float().cpu()
        parts.append(torch.nn.functional.pad(out, (0, width - out.size(1))) if out.dim() == 2 else out)
    return torch.cat(parts)
