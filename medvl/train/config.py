"""Typed configuration of the training runner (the one source of its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """How the runner optimises, validates, checkpoints and logs."""

    output_dir: str = "runs/quickstart"
    """Run directory: checkpoints/, logs, tokenizer and evaluation outputs go here."""
    seed: int = 0
    """Seeds model init, data order and dropout; the same seed reproduces the run."""
    epochs: int = 10
    """Passes over the training split (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimizer steps to train for; 0 = derive from epochs."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = data.batch_size x grad_accum x world size)."""
    global_batch_size: int = 0
    """Studies per optimizer step over all processes; when set, grad_accum is derived from it (global / (batch_size x
    world size), which must divide), so one recipe trains the same on 1 CPU or N GPUs. 0 = batch_size x grad_accum x
    world size."""
    strategy: str = "auto"
    """Multi-process strategy: auto (DDP under torchrun), ddp, fsdp (fully sharded), none. One process ignores it."""
    dist_backend: str = "auto"
    """Process-group backend under torchrun: auto (nccl on GPUs, gloo on CPUs), gloo, nccl."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, more compute)."""
    init_from: str = ""
    """Start from these weights (not a resume: step, optimizer and data position start fresh): a checkpoint
    directory, a run directory, or a .safetensors file of (some of) the model's weights, e.g. from
    `medvl convert minigpt4` or a previous stage. Keys the model lacks are an error; missing keys keep their init."""
    lr: float = 5e-4
    """Peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay (never applied to norms, biases and embeddings)."""
    weight_decay_end: float = -1.0
    """Weight decay at the last step, reached by a per-step cosine from weight_decay (VideoMAE); -1 = constant."""
    layer_decay: float = 1.0
    """Layer-wise lr decay (BEiT/VideoMAE fine-tuning): layer i of L gets lr x layer_decay ** (L + 1 - i), the
    embedding the smallest, the head the peak; 1.0 = off. Needs a model with layer ids (the mae family)."""
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    """Parameter-name prefix -> factor on the lr of the parameters under it, at every step (the longest matching
    prefix wins; the rest keep 1). E.g. {image_embed: 5.0}: the unified family's ResNet stem, trained from scratch
    behind the Transformer, learns 5x faster. Empty = one lr for all."""
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"
    """LR schedule after warmup: cosine, linear or constant."""
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    """Final LR as a fraction of the peak."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    label_smoothing: float = 0.0
    precision: str = "fp32"
    """fp32, bf16 (autocast; on CPU as well as GPU), or auto: bf16 where the device computes it natively (a GPU with
    bf16 support; a CPU with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions and matmuls about twice as fast as
    fp32), else fp32."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay (0 = off); EMA weights are evaluated."""
    eval_every: int = 0
    """Validate every N optimizer steps (0 = at the end of every epoch)."""
    eval_max_studies: int = 200
    """Generate reports for at most this many validation studies per validation (0 = all)."""
    select_metric: str = ""
    """Validation metric that picks the best checkpoint (e.g. gt_micro_f1, ce_14_micro_f1, bleu_4, auroc_macro,
    loss); empty = the task's default (report tasks: ce_14_micro_f1; classification: auroc_macro)."""
    select_mode: str = ""
    """max or min: whether a larger select_metric is better; empty = the task's default for its metric."""
    save_every: int = 0
    """Also write a resumable step checkpoint every N optimizer steps (0 = only at validations)."""
    keep_checkpoints: int = 2
    """Step checkpoints kept on disk (best/ and last/ are always kept)."""
    loggers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    """Where metrics go: jsonl, tensorboard, wandb (offline unless WANDB_MODE=online)."""
    log_every: int = 10
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    num_threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"train.precision must be fp32, bf16 or auto, got {self.precision!r}")
        if self.select_mode not in ("max", "min", ""):
            raise ValueError(f"train.select_mode must be max or min, got {self.select_mode!r}")
        if self.global_batch_size < 0:
            raise ValueError(f"train.global_batch_size must be >= 0, got {self.global_batch_size}")
        if self.grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if self.epochs < 1 and self.max_steps < 1:
            raise ValueError("set train.epochs or train.max_steps to at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"train.layer_decay must be in (0, 1] (1.0 = off), got {self.layer_decay}")
        for prefix, factor in self.lr_multipliers.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise ValueError(
                    f"train.lr_multipliers[{prefix!r}] must be a number > 0 (a factor on train.lr), got {factor!r}"
                )
        self.lr_multipliers = {str(k): float(v) for k, v in self.lr_multipliers.items()}
        if self.weight_decay_end < 0 and self.weight_decay_end != -1.0:
            raise ValueError(
                f"train.weight_decay_end must be >= 0, or -1 for a constant weight decay, got {self.weight_decay_end}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
