"""Vector quantizers of the VQ tokenizer.

`VectorQuantizer` (VQ-VAE, van den Oord et al. 2017): each encoder vector z_e is replaced by its nearest codebook
entry e_k (squared Euclidean distance, computed in float32); the decoder's gradient passes to the encoder unchanged
(straight-through estimator: z_q = z_e + sg(e_k - z_e)); the commitment loss beta * ||z_e - sg(e_k)||^2 (mean over
elements) keeps the encoder near its codes. The codebook itself learns one of two ways:
- EMA (`ema_decay` > 0, the default, VQ-VAE appendix A.1 / VQ-VAE-2): e_k = the moving average of the encoder
  vectors assigned to k (counts Laplace-smoothed). Chosen because it needs no learning rate of its own, does not
  depend on the optimizer's weight decay or warmup, and converges faster than the codebook loss at tiny sizes;
  codes whose moving-average count falls below `dead_code_threshold` are restarted at random encoder vectors of
  the batch (as Jukebox and SoundStream do), which keeps the codebook in use. Under torch.distributed the counts and
  sums are summed over ranks and the restart vectors come from rank 0, so every rank keeps the same codebook.
- codebook loss (`ema_decay` = 0, taming-transformers): ||sg(z_e) - e_k||^2 is added to the loss and the codebook
  is a trained parameter.
The codebook is `embedding.weight` in both cases (taming's key `quantize.embedding.weight`).

`GumbelQuantizer`: taming's GumbelVQ (the quantizer of BiomedGPT's `vqgan_gumbel_f8_8192`): a 1x1 conv `proj` scores
the K codes, `embed` holds their vectors; here only its deterministic inference (code = argmax of the scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Quantized:
    """A quantizer's output."""

    z_q: Tensor
    """[B, D, h, w] codebook vectors (straight-through: gradients reach the encoder output)."""
    codes: Tensor
    """long [B, h, w] codebook indices."""
    loss: Tensor
    """Scalar: commitment loss (+ codebook loss without EMA)."""
    commitment: Tensor
    """Scalar: beta * mean ||z_e - sg(z_q)||^2."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantization; see the module docstring.

    Args:
        n_embed: codebook size K.
        embed_dim: codebook vector size D (the channels of the input).
        beta: commitment weight.
        ema_decay: EMA decay of the codebook (0 = codebook loss).
        dead_code_threshold: EMA count below which a code is restarted (0 = never; EMA only).
        eps: Laplace smoothing of the EMA counts.
    """

    cluster_size: Tensor
    """EMA of each code's count per batch (with the EMA codebook)."""
    embed_sum: Tensor
    """EMA of the sum of each code's assigned vectors (with the EMA codebook)."""

    def __init__(
        self,
        n_embed: int,
        embed_dim: int,
        beta: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.ema_decay, self.dead_code_threshold, self.eps = ema_decay, dead_code_threshold, eps
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # taming's init
        if ema_decay > 0:
            self.embedding.weight.requires_grad_(False)  # moved by the EMA, not the optimizer
            self.register_buffer("cluster_size", torch.zeros(n_embed))
            self.register_buffer("embed_sum", self.embedding.weight.detach().clone())

    def nearest(self, flat: Tensor) -> Tensor:
        """long [N]: index of the nearest codebook entry of each row of flat [N, D] (squared Euclidean, float32)."""
        flat = flat.float()
        book = self.embedding.weight.float()
        dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        return dist2.argmin(1)

    def forward(self, z: Tensor) -> Quantized:
        """z [B, D, h, w] -> `Quantized` (EMA codebook update and dead-code restart in training mode)."""
        b, d, h, w = z.shape
        if d != self.embed_dim:
            raise ValueError(f"the quantizer takes {self.embed_dim} channels (model.embed_dim), got {d}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.nearest(flat)
        if self.training and self.ema_decay > 0:
            self._ema_update(flat.detach().float(), codes)
        chosen = self.embedding.weight[codes].to(flat.dtype)
        commitment = self.beta * F.mse_loss(flat, chosen.detach())
        loss = commitment if self.ema_decay > 0 else commitment + F.mse_loss(chosen, flat.detach())
        z_q = flat + (chosen - flat).detach()  # straight-through
        return Quantized(z_q.view(b, h, w, d).permute(0, 3, 1, 2), codes.view(b, h, w), loss, commitment)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.n_embed).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        decay = self.ema_decay
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.n_embed * self.eps) * total
        self.embedding.weight.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor) -> None:
        dead = (self.cluster_size < self.dead_code_threshold).nonzero()[:, 0]
        if len(dead) == 0:
            return
        pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
        fresh = flat[pick].clone()
        if _distributed():  # every rank restarts to rank 0's vectors
            dist.broadcast(fresh, 0)
        self.embedding.weight[dead] = fresh
        self.embed_sum[dead] = fresh * self.dead_code_threshold
        self.cluster_size[dead] = self.dead_code_threshold

    def lookup(self, codes: Tensor) -> Tensor:
        """codes long [B, h, w] -> codebook vectors [B, D, h, w]."""
        return self.embedding.weight[codes].permute(0, 3, 1, 2)


class GumbelQuantizer(nn.Module):
    """taming's GumbelQuantize, deterministic inference only: codes = argmax_k proj(z)_k, vectors = embed.weight[k].

    Args:
        in_channels: channels of the input (taming: z_channels).
        n_embed: K.
        embed_dim: D.
    """

    def __init__(self, in_channels: int, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.proj = nn.Conv2d(in_channels, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: Tensor) -> Quantized:
        if self.training:
            raise RuntimeError(
                "the gumbel quantizer (taming GumbelVQ) only encodes here; train medvl's own VQ-VAE "
                "(model.quantizer=vq) instead"
            )
        codes = self.proj(z).argmax(1)
        zero = z.new_zeros(())
        return Quantized(self.lookup(codes), codes, zero, zero)

    def lookup(self, codes: Tensor) -> Tensor:
        return self.embed.weight[codes].permute(0, 3, 1, 2)


__all__ = ["GumbelQuantizer", "Quantized", "VectorQuantizer"]
