"""Scaled dot-product attention that picks the faster kernel for the small models medvl trains on a CPU.

`attend(q, k, v, mask, causal)` is `F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)`,
except for bf16/fp16 tensors on a CPU, where it computes softmax(q k^T / sqrt(d) + mask) v as two batched matmuls
around an fp32 softmax. Why our own path there: in torch 2.x, SDPA's CPU kernel for bf16 (the flash kernel; the
"math" backend casts to fp32 first) is 2-5x slower than the two matmuls at the quickstart's shapes (batch 16, 4 heads,
64-dim heads, 64-160 keys): forward + backward of one decoder self-attention over 90 tokens took 7.8 ms against
4.2 ms, a cross-attention over 64 patches 7.5 ms against 1.5 ms, and one decoding step's attention 87-167 us against
50-59 us (`benchmarks/train_throughput.py --precision bf16` shows the effect on a whole step). The explicit path
materializes the [..., Tq, Tk] scores, which is what makes it unsuitable for long sequences; on a GPU and in fp32
SDPA (flash / memory-efficient kernels) is used unchanged.

Shapes: q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev] -> [..., Tq, Ev]. `mask` broadcasts to [..., Tq, Tk]: bool
(True = may attend) or an additive float bias. `causal`: query i sees keys 0..i (top-left aligned, as SDPA's
`is_causal`); not combined with a mask. A query with no visible key gets zeros (and zero gradients) from the matmul
path, as from SDPA since torch 2.5 (NaN before).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOW_PRECISION = (torch.bfloat16, torch.float16)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """Attention of q over (k, v); see the module docstring for shapes and the kernel choice.

    Raises:
        ValueError: both a mask and `causal` given.
    """
    if mask is not None and causal:
        raise ValueError("give either an attention mask or causal=True, not both")
    if q.device.type == "cpu" and q.dtype in _LOW_PRECISION:
        return matmul_attention(q, k, v, mask, causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(E) + mask) v with the scores in q's dtype and the softmax in fp32 (as SDPA's kernels
    accumulate); same arguments and result as `attend`."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    blind = None  # [..., Tq, 1] True for a query that sees no key
    if mask is not None:
        allowed = mask if mask.dtype == torch.bool else mask > float("-inf")
        blind = ~allowed.any(dim=-1, keepdim=True)
        blind = blind if blind.any() else None  # the mask is small (broadcast): checking it is cheaper than the fills
        if mask.dtype == torch.bool:
            # Hidden keys as an additive -inf bias (of the mask's broadcast shape, small) added in place: one
            # vectorized pass, and nothing in the backward (a masked fill costs a second fill of the gradient).
            mask = mask if blind is None else mask | blind
            bias = None if bool(mask.all()) else torch.zeros(mask.shape, dtype=scores.dtype, device=q.device)
            scores = scores if bias is None else scores.add_(bias.masked_fill_(~mask, float("-inf")))
        else:
            scores = scores + mask if blind is None else (scores + mask).masked_fill(blind, 0.0)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    if blind is not None:
        # As SDPA does (torch >= 2.5): zeros, not NaN, for a query with no key. Its row was softmaxed over every key
        # above, so zeroing the probabilities gives zero gradients too (a NaN row would poison them).
        probs = probs.masked_fill(blind, 0.0)
    return torch.matmul(probs.to(v.dtype), v)
