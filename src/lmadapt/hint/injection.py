"""Apply generated modules to an unmodified Hugging Face model from the outside, while they are active.

Nothing in the model's code or weights changes. `Injection` binds every slot's attention module to a
prefix lookup (read by the wrapper kernel of `hint.attention`: the generated prefix is gated, the
instruction's keys/values are joined), registers forward hooks that add a parallel adapter to each
feed-forward output and LoRA deltas to the targeted projections, and one pre-hook for instruction
fusion. Encoder-decoder: the encoded instruction goes in front of the encoded input, so the decoder
cross-attends over [instruction; input]. Decoder-only: the instruction's per-layer keys/values are a
joint prefix (see `prefix`) and the instance's positions continue after the instruction's, so attention
sees the geometry of the concatenated sequence. Outside `active(modules)` every hook is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from lmadapt.errors import LmadaptError
from lmadapt.hint.attention import PREFIX_LOOKUP, GatedPrefix, Prefix, SlotPrefixes, use_prefix_attention
from lmadapt.hint.layout import Layout
from lmadapt.hint.modules import FUSION_MASK, FUSION_STATES, GeneratedModules, lora_delta, parallel_adapter


class Injection:
    def __init__(self, model: Any, layout: Layout, lora_targets: list[str]):
        if PREFIX_LOOKUP in model.get_submodule(layout.slots[0].attention).__dict__:
            raise LmadaptError("this model already carries a HINT injection; load a fresh copy for another")
        self.layout = layout
        self.current: GeneratedModules | None = None
        use_prefix_attention(model)
        for slot in layout.slots:
            # A plain callable in the module's __dict__: not a submodule, so state dicts are untouched.
            model.get_submodule(slot.attention).__dict__[PREFIX_LOOKUP] = partial(self.prefix, slot.name)
            if slot.feed_forward is not None:
                ffn = model.get_submodule(slot.feed_forward)
                ffn.register_forward_hook(partial(self._add_adapter, slot.name))
            for target in lora_targets:
                linear = model.get_submodule(slot.projections[target])
                linear.register_forward_hook(partial(self._add_lora, f"{slot.name}.lora_{target}"))
        if layout.family == "t5":
            model.decoder.register_forward_pre_hook(self._fuse_instruction, with_kwargs=True)
        else:
            model.model.register_forward_pre_hook(self._continue_positions, with_kwargs=True)

    @contextmanager
    def active(self, modules: GeneratedModules | None) -> Iterator[None]:
        """Apply `modules` to every forward inside the block (None: the plain underlying model)."""
        previous, self.current = self.current, modules
        try:
            yield
        finally:
            self.current = previous

    def prefix(self, slot: str) -> SlotPrefixes | None:
        """The slot's gated generated prefix and, for decoder-only fusion, the instruction's keys/values."""
        modules = self.current
        if modules is None:
            return None
        gated = joint = None
        if f"{slot}.prefix_keys" in modules:
            gate = modules.get(f"{slot}.prefix_gate")
            if gate is None:
                raise LmadaptError(f"modules for {slot} have a prefix but no prefix_gate: recompile them")
            gated = GatedPrefix(modules[f"{slot}.prefix_keys"], modules[f"{slot}.prefix_values"], gate)
        if f"{slot}.fusion_keys" in modules:
            joint = Prefix(
                modules[f"{slot}.fusion_keys"], modules[f"{slot}.fusion_values"], modules[FUSION_MASK]
            )
        return None if gated is None and joint is None else SlotPrefixes(joint, gated)

    def _add_adapter(self, slot: str, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> Any:
        modules = self.current
        if modules is None or f"{slot}.adapter_down" not in modules:
            return None
        names = ("adapter_down", "adapter_down_bias", "adapter_up", "adapter_up_bias")
        return output + parallel_adapter(args[0], *(modules[f"{slot}.{name}"] for name in names))

    def _add_lora(self, name: str, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> Any:
        modules = self.current
        if modules is None or f"{name}_a" not in modules:
            return None
        return output + lora_delta(args[0], modules[f"{name}_a"], modules[f"{name}_b"])

    def _fuse_instruction(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        modules = self.current
        encoded = kwargs.get("encoder_hidden_states")
        if modules is None or FUSION_STATES not in modules or encoded is None:
            return None
        batch, length = encoded.shape[:2]
        mask = kwargs.get("encoder_attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=encoded.device)
        states = modules[FUSION_STATES].to(encoded.dtype).expand(batch, -1, -1)
        fusion_mask = modules[FUSION_MASK].to(mask.dtype).expand(batch, -1)
        kwargs["encoder_hidden_states"] = torch.cat([states, encoded], dim=1)
        kwargs["encoder_attention_mask"] = torch.cat([fusion_mask, mask], dim=1)
        return args, kwargs

    def _continue_positions(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        modules = self.current
        if modules is None or FUSION_MASK not in modules:
            return None
        positions = kwargs.get("position_ids")
        if positions is None:  # the model's own default: count on from the cached tokens
            embeds = kwargs.get("inputs_embeds")
            tokens = (args[0] if args else kwargs["input_ids"]) if embeds is None else embeds
            cache = kwargs.get("past_key_values")
            start = cache.get_seq_length() if cache is not None else 0
            positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)[None]
        kwargs["position_ids"] = positions + modules[FUSION_MASK].sum(dim=-1, keepdim=True).to(
            positions.device
        )
        return args, kwargs
