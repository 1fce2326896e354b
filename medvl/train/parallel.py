"""How the model is spread over processes: nothing (one process), DDP, or FSDP (fully sharded).

Contract: `ParallelModel(model, strategy, info, ...)` wraps a built model once, and the runner only talks to it:
- `forward_module`: what training forwards through (the DDP wrapper, the FSDP-sharded model, or the model);
- `accumulating(is_last)`: a context that skips the gradient all-reduce on all but the last micro-batch of a step;
- `model_state()` / `optimizer_state(opt)`: full (unsharded) state dicts for a checkpoint. They are collectives under
  FSDP, so every rank calls them; only rank 0 writes. Optimizer state is keyed by parameter name (torch's
  distributed-checkpoint format), so a checkpoint written under one strategy or world size loads under any other;
- `load_model_state` / `load_optimizer_state`: the reverse, on every rank;
- `unsharded()`: a context in which the plain model can run `generate` (FSDP gathers the parameters for it).

Strategies: "auto" (DDP on more than one process, else none), "none", "ddp", "fsdp". FSDP (torch's fully_shard)
shards every block of each stacked layer list (each `nn.ModuleList` child) and then the root; with
`precision=bf16` it computes in bf16 and reduces gradients in fp32; `activation_checkpointing` recomputes each block's
activations in the backward pass (less memory, about a third more compute). DeepSpeed is not integrated: FSDP
covers ZeRO-3-style sharding with torch alone, and asking for "deepspeed" says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from medvl.train.distributed import DistInfo, DistributedSetupError

STRATEGIES = ("auto", "none", "ddp", "fsdp")


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    if strategy == "deepspeed":
        raise DistributedSetupError(
            "train.strategy=deepspeed is not supported: medvl shards with PyTorch's own FSDP "
            "(train.strategy=fsdp covers ZeRO-3-style sharding of parameters, gradients and "
            "optimizer state)"
        )
    if strategy not in STRATEGIES:
        raise DistributedSetupError(f"train.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        return "ddp" if info.enabled else "none"
    if not info.enabled:
        return "none"  # DDP or FSDP over one process is the plain model: the recipe runs unchanged without torchrun
    return strategy


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model: every child of every nn.ModuleList (transformer layers, conv stages)."""
    return [child for module in model.modules() if isinstance(module, nn.ModuleList) for child in module]


def _state_options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


class ParallelModel:
    """See the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        strategy: str,
        info: DistInfo,
        device: torch.device,
        precision: str = "fp32",
        activation_checkpointing: bool = False,
    ) -> None:
        self.model, self.info = model, info
        self.strategy = resolve_strategy(strategy, info)
        if activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            blocks = set(map(id, _blocks(model)))
            apply_activation_checkpointing(model, check_fn=lambda m: id(m) in blocks)
        self.forward_module: nn.Module = model
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.forward_module = DistributedDataParallel(model, device_ids=ids)
        elif self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(device.type, (info.world_size,))
            policy = (
                MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                if precision == "bf16"
                else MixedPrecisionPolicy()
            )
            # fully_shard flattens parameters and refuses non-contiguous ones: the conv encoder keeps its weights
            # channels-last (ConvEncoder), so they go back to the default layout here; its inputs stay channels-last.
            for param in model.parameters():
                if not param.is_contiguous():
                    param.data = param.data.contiguous()
            if precision == "bf16":
                # BatchNorm keeps fp32 parameters, as under autocast: its running statistics stay fp32, and CPU
                # batch_norm refuses bf16 weights beside them ("expected scalar type BFloat16 but found Float").
                for module in model.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                        fully_shard(module, mesh=mesh, mp_policy=MixedPrecisionPolicy())
            for block in _blocks(model):
                fully_shard(block, mesh=mesh, mp_policy=policy)
            fully_shard(model, mesh=mesh, mp_policy=policy)

    # ------------------------------------------------------------------------------------------ training steps
    def accumulating(self, is_last: bool) -> Any:
        """Skip the gradient all-reduce on all but the last micro-batch of an optimizer step."""
        if is_last:
            return nullcontext()
        if self.strategy == "ddp":
            return self.forward_module.no_sync()
        if self.strategy == "fsdp":
            return _fsdp_no_sync(self.model)
        return nullcontext()

    @contextmanager
    def unsharded(self) -> Iterator[nn.Module]:
        """The plain model with all its parameters gathered on every rank, for evaluation: no forward inside needs a
        collective, so ranks may run different numbers of forwards (uneven shards, generation that stops early)."""
        if self.strategy != "fsdp":
            yield self.model
            return
        from torch.distributed.fsdp import FSDPModule

        sharded = [m for m in self.model.modules() if isinstance(m, FSDPModule)]
        for module in sharded:
            module.set_reshard_after_forward(False, recurse=False)
            module.unshard()
        try:
            yield self.model
        finally:
            for module in sharded:
                module.reshard()
                module.set_reshard_after_forward(True, recurse=False)

    # ------------------------------------------------------------------------------------------------ state
    def model_state(self) -> dict[str, torch.Tensor]:
        """The full state dict (collective under FSDP: call on every rank)."""
        if self.strategy != "fsdp":
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.model, options=_state_options(cpu_offload=True))
        # The gathered copies of a tied parameter are separate tensors: point every name at one again, so the
        # checkpoint stores it once (as a single-process checkpoint does).
        names: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(id(param), []).append(name)
        for group in names.values():
            for alias in group[1:]:
                if alias in state and group[0] in state:
                    state[alias] = state[group[0]]
        return state

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The full optimizer state keyed by parameter name (collective under FSDP)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, optimizer, options=_state_options(cpu_offload=True))

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        partial = hasattr(self.model, "load_checkpoint_state")  # checkpoints that leave out frozen pretrained weights
        if self.strategy != "fsdp":
            load_model_state(self.model, state)
            return
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.model, state, options=_state_options(strict=not partial))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a name-keyed (or, from older checkpoints, an index-keyed) optimizer state."""
        groups = state.get("param_groups") or [{}]
        index_keyed = bool(groups[0].get("params")) and isinstance(groups[0]["params"][0], int)
        # Loading replaces each group's options by the stored ones, the kernel choice included: a checkpoint from
        # before the trainer fused AdamW (`fused: None`) would make the resumed run, and every later one, use the
        # slower loop. Which kernel runs is this process's choice, not the checkpoint's.
        kernels: list[dict[str, Any]] = [
            {k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups
        ]
        if index_keyed and self.strategy != "fsdp":
            optimizer.load_state_dict(state)  # a checkpoint written before name-keyed optimizer state
        else:
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            set_optimizer_state_dict(self.model, optimizer, state, options=_state_options())
        for group, kernel in zip(optimizer.param_groups, kernels, strict=True):
            group.update(kernel)
        # Loaded moments are contiguous, but a channels-last conv weight's are not; the fused AdamW kernel walks a
        # parameter and its moments as one flat buffer, so their memory layouts must match.
        for param, param_state in optimizer.state.items():
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    param_state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
        # The fused kernel reads the step count as an fp32 tensor on the parameter's device; the loop keeps it on
        # the CPU, and a loaded state is placed by the stored (unfused) options.
        for group in optimizer.param_groups:
            for param in group["params"] if group.get("fused") else ():
                step = optimizer.state.get(param, {}).get("step")
                if isinstance(step, torch.Tensor) and step.device != param.device:
                    optimizer.state[param]["step"] = step.to(param.device, torch.float32)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load checkpoint weights into a plain model, through its own `load_checkpoint_state` when it has one."""
    if hasattr(model, "load_checkpoint_state"):
        model.load_checkpoint_state(state)
    else:
        model.load_state_dict(state)


@contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


__all__ = ["STRATEGIES", "ParallelModel", "load_model_state", "resolve_strategy"]
