"""A KV cache preallocated for the expected length that writes in place.

transformers' ``DynamicCache`` concatenates on every update: each decoded token copies the whole KV cache
(at 160K tokens that dominated decode time even on the tiny model). :class:`GrowingLayer` keeps one buffer
per layer, grows it by half again when full, and crops by moving its length back, so cropping a
conversation back to a shared prefix (a follow-up, a branch) costs nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values [B, heads, capacity, head_dim]; ``keys``/``values`` view the filled part."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity  # tokens allocated at the first update

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._k = self._v = None
        self._length = 0
        self.keys = key_states[..., :0, :]
        self.values = value_states[..., :0, :]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            size = max(end, self.capacity if self._k is None else self._k.shape[-2] * 3 // 2)
            k = key_states.new_empty((*key_states.shape[:-2], size, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:-2], size, value_states.shape[-1]))
            if self._length:
                k[..., : self._length, :] = self._k[..., : self._length, :]
                v[..., : self._length, :] = self._v[..., : self._length, :]
            self._k, self._v = k, v
        self._k[..., self._length : end, :] = key_states
        self._v[..., self._length : end, :] = value_states
        self._length = end
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """A negative count removes that many tokens from the end (transformers' convention)."""
        if tokens_to_remove >= 0 or not self.is_initialized:
            return
        self._length = max(0, self._length + tokens_to_remove)
        self.keys, self.values = self._k[..., : self._length, :], self._v[..., : self._length, :]

    def reset(self) -> None:
        self._k = self._v = None
        super().reset()


def growing_cache(num_layers: int, capacity: int) -> Cache:
    """A cache of ``num_layers`` :class:`GrowingLayer` s, each allocated for ``capacity`` tokens at first."""
    return Cache(layers=[GrowingLayer(capacity) for _ in range(num_layers)])
