"""AdamW with weight decay only where it belongs.

Decay is applied to weight matrices and conv kernels; never to biases, norm parameters, embeddings (token, position,
view) or any other parameter with fewer than two dimensions, which decay would only pull towards zero.
"""

from __future__ import annotations

import torch
from torch import nn

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue  # frozen, or tied and already placed (the first owner decides)
            seen.add(id(param))
            embedding_like = "embed" in name or name.endswith("_emb")
            if isinstance(module, _NO_DECAY_MODULES) or param.ndim < 2 or embedding_like:
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.98)) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas))
