"""OFA's position handling: absolute positions as attention biases, plus relative-position buckets.

OFA (Wang et al. 2022, sec. 3.1; BiomedGPT inherits it) keeps position information out of the token embeddings. Learned
absolute position tables (one for text, one 2D grid for image patches) are projected by their own query/key maps and
their dot products added to every layer's attention logits; each layer also adds a learned bias per relative offset:
1D buckets between text tokens and 2D offsets between image patches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def token_relative_buckets(query_pos: Tensor, key_pos: Tensor, bucket_size: int, max_distance: int) -> Tensor:
    """Bucket index in [0, 2 * bucket_size - 2] of every (query, key) text-position pair -> Long [Tq, Tk].

    Offsets key - query with |offset| < bucket_size // 2 get their own bucket; longer ones share log-spaced buckets up
    to `max_distance` (the T5 / OFA scheme), signed so left and right context differ.
    """
    rel = key_pos[None, :] - query_pos[:, None]
    mid = bucket_size // 2
    dist = rel.abs()
    span = max(max_distance - 1, mid + 1)
    log_steps = torch.log(dist.clamp(min=mid).float() / mid) / math.log(span / mid) * (bucket_size - 1 - mid)
    far = (mid + log_steps.floor().long()).clamp(max=bucket_size - 1)
    bucket = torch.where(dist < mid, dist, far) * rel.sign()
    return bucket + bucket_size - 1


def image_relative_buckets(grid: int, bucket_size: int, device: torch.device | None = None) -> Tensor:
    """Index in [0, (2 * bucket_size - 1) ** 2) of the 2D offset between every pair of patches of a grid x grid
    image (row-major patch order) -> Long [grid**2, grid**2]."""
    rows, cols = torch.meshgrid(torch.arange(grid, device=device), torch.arange(grid, device=device), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    span = 2 * bucket_size - 1
    d_row = rows[None, :] - rows[:, None] + bucket_size - 1
    d_col = cols[None, :] - cols[:, None] + bucket_size - 1
    return d_row * span + d_col


def image_position_ids(grid: int, bucket_size: int, device: torch.device | None = None) -> Tensor:
    """Row-major ids of a grid x grid image's patches in the bucket_size x bucket_size position table
    -> Long [grid**2]."""
    rows = torch.arange(grid, device=device)[:, None] * bucket_size
    return (rows + torch.arange(grid, device=device)[None, :]).flatten()


class AbsolutePositionBias(nn.Module):
    """q(pos_i) . k(pos_j) per head: absolute positions decoupled from the token content (OFA's pos_q/pos_k_linear).

    forward(query_pos [Tq, D], key_pos [Tk, D]) -> bias [H, Tq, Tk], queries scaled like the content queries.
    """

    def __init__(self, d_model: int, n_heads: int, attn_scale_factor: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.scaling = (d_model / n_heads * attn_scale_factor) ** -0.5

    def forward(self, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        q = self.q(query_pos).unflatten(-1, (self.n_heads, -1)).transpose(0, 1) * self.scaling
        k = self.k(key_pos).unflatten(-1, (self.n_heads, -1)).transpose(0, 1)
        return q @ k.transpose(-1, -2)


def relative_table(n_buckets: int, n_heads: int) -> nn.Embedding:
    """A per-layer relative-bias table [n_buckets, n_heads], zero at init (every offset starts neutral, as in OFA)."""
    table = nn.Embedding(n_buckets, n_heads)
    nn.init.zeros_(table.weight)
    return table
