"""Attention inputs that keep packed examples isolated, for every attention backend.

A packed batch carries no attention_mask, only position_ids that restart at 0 for each example
(see `lmadapt.data.collate.collate_packed`). From them:

- eager and sdpa get an explicit 4-D block-diagonal causal mask, which transformers passes to the
  attention function unchanged. Its own packed-sequence detection from position_ids is not relied
  on: it only runs without a KV cache and without a 2-D mask, so a default `use_cache=True` call
  silently attends across examples.
- FlashAttention (flash_attention_2/3) gets the varlen kwargs cu_seq_lens_q/k and max_length_q/k
  over the flattened (R*T) tokens, which its varlen kernel uses as sequence boundaries.
"""

from __future__ import annotations

from typing import Any

import torch

from lmadapt.errors import LmadaptError


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(R, T) -> (R, T) index of the example each token belongs to (a new one wherever a position is 0)."""
    return (position_ids == 0).cumsum(dim=1)


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """(R, T) -> (R, 1, T, T) bool: query t may attend key s iff s <= t and both are in the same example."""
    seg = segment_ids(position_ids)
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def varlen_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """FlashAttention varlen kwargs for (R, T) position_ids flattened to R*T tokens.

    cu_seq_lens_q/k: int32 (n_segments + 1,) cumulative segment starts, ending at R*T; max_length_q/k:
    the longest segment, as a Python int (the kernels require an int).
    """
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().view(-1)
    total = torch.tensor([flat.numel()], device=flat.device)
    cu = torch.cat([starts, total]).to(torch.int32)
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def packed_attention_inputs(config: Any, position_ids: torch.Tensor, dtype: torch.dtype) -> dict[str, Any]:
    """Model-call kwargs (beside input_ids) that isolate the examples of a packed batch.

    `config` is the model's config (its `_attn_implementation` picks the form); `dtype` is the
    dtype of an eager additive mask (the model's parameter dtype).
    """
    impl = config._attn_implementation or "eager"
    window = getattr(config, "sliding_window", None)
    if window is not None and int(position_ids.max()) + 1 > window:
        # The block mask is causal within each example; a sliding window would narrow it further.
        raise LmadaptError(
            f"packing: an example is longer than the model's sliding window ({window}); "
            "lower data.max_length or set data.packing=false"
        )
    inputs: dict[str, Any] = {"position_ids": position_ids}
    if "flash" in impl:
        return {**inputs, **varlen_kwargs(position_ids)}
    if impl == "sdpa":
        return {**inputs, "attention_mask": block_causal_mask(position_ids)}
    if impl == "eager":
        allowed = block_causal_mask(position_ids)
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return {**inputs, "attention_mask": additive.masked_fill(~allowed, torch.finfo(dtype).min)}
    raise LmadaptError(
        f"packing supports the eager, sdpa and flash_attention_2/3 attention implementations; "
        f"this model uses '{impl}' (set data.packing=false)"
    )
