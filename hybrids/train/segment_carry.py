"""Segment mode: each layer's state carried from one segment of a document to the next, per stage
(truncated back-propagation through time, Transformer-XL style)."""

from __future__ import annotations

from typing import Any

import torch

from hybrids.model.state_carry import carries_memory, check_carry, reset_slots


class SegmentCarry:
    """The carried states of each stage (``train``, ``val``, ``test``): one per layer, emptied at
    the start and the end of every pass (evaluation memories can be large), never checkpointed (a
    resumed run starts with empty ones)."""

    def __init__(self) -> None:
        self.states: dict[str, list[Any]] = {}  # stage -> one state per layer

    def reset(self, stage: str) -> None:
        self.states.pop(stage, None)

    def features(self, model, inputs: torch.Tensor, first: torch.Tensor, stage: str, carry_all: bool) -> torch.Tensor:
        """The hidden states of one segment per slot (B, L, d_model), continuing each carrying
        layer's state from the stage's previous batch; slots with ``first`` start afresh. Layers
        with a memory always carry; the others only with ``carry_all``."""
        blocks = model.blocks
        carry = [carry_all or carries_memory(block.mixer) for block in blocks]
        states = self.states.get(stage)
        if states is None:  # the stage's first segment: refuse what cannot be carried, up front
            for block, carries in zip(blocks, carry):
                if carries:
                    check_carry(block.mixer, inputs.shape[1])
            states = [None] * len(blocks)
        states = [None if state is None else reset_slots(block.mixer, state, first) for block, state in zip(blocks, states)]
        hidden, self.states[stage] = model.segment_features(inputs, states, carry)
        return hidden
