"""The training runner: one loop for every task.

`train(cfg)` reads the data, lets the task fit its assets (a tokenizer, class names) or reloads them, builds the
model, and runs optimizer steps of `task(batch)["loss"]`, validating (`medvl.train.validation`), checkpointing
(`medvl.train.checkpointer`) and logging as the config says. It never knows which model family or task it trains:
the family table builds the model and names its task, and the task (`medvl.tasks.base.Task`) owns data, loss and
metrics.

Resuming is exact: the data order of an epoch is a pure function of (seed, epoch), a checkpoint is only written
right after an optimizer step (no half-accumulated gradients), and it holds the model, optimizer, scheduler, EMA,
RNG states and the position in the epoch (in global batches). A run killed at any point and resumed with
`resume="auto"` ends with the same weights as an uninterrupted run of the same seed.

The same code runs on one process or under torchrun (`medvl.train.distributed`, `medvl.train.parallel`): each
optimizer step consumes one global batch, split across ranks and accumulation steps, so the world size changes how
the work is spread, not what is computed; checkpoints hold full (unsharded) state and resume on any world size.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvl.config.experiment import ExperimentConfig
from medvl.data.dataset import Skipped, StudyError, check_studies
from medvl.data.sources import check_provides, load_studies, require_split
from medvl.models.families import MODEL_FAMILIES
from medvl.tasks import task_class
from medvl.train.checkpoint import load_checkpoint, read_tensors
from medvl.train.checkpointer import BestTracker, Checkpointer
from medvl.train.distributed import (
    DistInfo,
    DistributedSetupError,
    GlobalBatches,
    all_reduce_sum,
    barrier,
    gather_objects,
    init_distributed,
    plan_batches,
    shutdown,
)
from medvl.train.ema import ModelEma
from medvl.train.loggers import build_loggers
from medvl.train.optim import build_optimizer
from medvl.train.parallel import ParallelModel, resolve_strategy
from medvl.train.run_folder import prepare_run_folder
from medvl.train.runtime import (
    library_versions,
    resolve_device,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
)
from medvl.train.schedules import build_scheduler
from medvl.train.validation import Validator, make_loader


@dataclass
class RunState:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    step_in_epoch: int = 0
    """Optimizer steps (global batches) of the current epoch already done; independent of the world size."""
    best_metric: float | None = None
    best_step: int = -1
    skipped: dict[str, str] = field(default_factory=dict)
    """Study id -> why it was skipped (counted once per study)."""


class NullLogger:
    """What ranks other than 0 log to."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """Holds the pieces of one run; `fit()` runs it. Built by `train()` from an `ExperimentConfig`.

    Under torchrun each process builds one; rank 0 alone writes (data set generation, task assets such as a
    tokenizer, logs, checkpoints, summaries), the others wait at barriers where they need its files.
    """

    def __init__(self, cfg: ExperimentConfig, resume: str | None = None) -> None:
        self.cfg = cfg
        tc = cfg.train
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device_type = resolve_device(tc.device).type
        # Every setting that could fail later is checked here, before data, assets or model work.
        family = MODEL_FAMILIES.get(cfg.model_family)
        task_cls = task_class(cfg.task_name or family.task)
        check_provides(cfg.data.source, task_cls.needs, task_cls.name)
        self.dist: DistInfo = init_distributed(tc.dist_backend, device_type)
        self.plan = plan_batches(cfg.data.batch_size, tc.grad_accum, tc.global_batch_size, self.dist.world_size)
        self.strategy = resolve_strategy(tc.strategy, self.dist)
        if self.strategy == "fsdp" and tc.ema_decay > 0:
            raise DistributedSetupError(
                "train.ema_decay is not supported with train.strategy=fsdp (the EMA would "
                "need the full weights on every rank); use ddp or set train.ema_decay=0"
            )
        self.device = resolve_device(tc.device, self.dist.local_rank if self.dist.enabled else None)
        self.precision = resolve_precision(tc.precision, self.device)
        self.main = self.dist.is_main
        self.run_dir = Path(tc.output_dir)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(tc.seed)  # the same on every rank: identical initial weights
        self.checkpointer = Checkpointer(self.run_dir, self.dist, tc.keep_checkpoints)

        def derived(meta: dict[str, Any]) -> dict[str, Any]:
            # The fields a task derives from its assets (a classifier's num_outputs) are compared as the checkpoint's
            # assets give them, which is how a resumed run gets them below.
            return task_cls.model_fields(task_cls.assets_from_metadata(meta))

        # The run-folder policy (`medvl.train.run_folder`): one run per folder, damaged checkpoints skipped and kept.
        self.resume_from = self._main_first(
            lambda: prepare_run_folder(self.run_dir, resume, cfg.to_dict(), self.main, derived=derived)
        )
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from else None

        # Rank 0 first: the synthetic source may generate the data set, which the others then read.
        studies = self._main_first(lambda: load_studies(cfg.data))
        self.state = RunState()
        usable = task_cls.usable
        text_only = task_cls.takes_text_only
        train_studies, skipped = check_studies(require_split(studies, "train"), cfg.data.strict, usable, text_only)
        val_studies, val_skipped = check_studies(studies.get("val", []), cfg.data.strict, usable, text_only)
        self._record_skips([*skipped, *val_skipped])
        if not train_studies:
            first = skipped[0] if skipped else None
            raise StudyError(
                f"no usable training study: all {len(skipped)} of split 'train' were skipped"
                + (f" (first: {first.id}: {first.reason})" if first else "")
            )
        if not val_studies and self.main:
            print(
                "no usable validation study: the last checkpoint is the best one, and metrics chosen on validation "
                "(e.g. classification thresholds) keep their defaults; give the data set a val split",
                file=sys.stderr,
            )

        if checkpoint is not None:
            assets = task_cls.assets_from_metadata(checkpoint.metadata)
        else:  # rank 0 fits and saves them; the other ranks read what it saved
            assets = task_cls.build_assets(cfg, train_studies, self.run_dir) if self.main else None
            barrier(self.dist)
            if not self.main:
                assets = task_cls.build_assets(cfg, train_studies, None)
        cfg.model = dataclasses.replace(cfg.model, **task_cls.model_fields(assets))
        self.model = family.build(cfg.model).to(self.device)
        if tc.init_from and checkpoint is None:
            self._init_weights(tc.init_from)
        self.parallel = ParallelModel(
            self.model, self.strategy, self.dist, self.device, self.precision, tc.activation_checkpointing
        )
        # Two views of one model: training forwards through the DDP/FSDP wrapper, validation and generation use the
        # plain model.
        self.task = task_cls(self.model, assets, cfg)
        self.train_task = task_cls(self.parallel.forward_module, assets, cfg)
        self.train_set = self.task.dataset(train_studies, training=True)
        self._check_loadable(self.train_set)
        val_set = self.task.dataset(val_studies) if val_studies else None
        self.validator = Validator(
            self.task,
            val_set,
            self.dist,
            self.device,
            cfg.data.batch_size,
            tc.eval_max_studies,
            cfg.data.num_workers,
            self._record_skips,
        )

        steps_per_epoch = len(self.train_set) // self.plan.global_batch
        if steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(self.train_set)} usable studies, fewer than one optimizer "
                f"step's global batch of {self.plan.global_batch} (data.batch_size {cfg.data.batch_size} "
                f"x grad_accum {self.plan.grad_accum} x {self.dist.world_size} process(es))"
            )
        self.steps_per_epoch = steps_per_epoch
        self.train_lengths = None
        if cfg.data.group_by_length:
            self.train_lengths = getattr(self.train_set, "lengths", None)
            if self.train_lengths is None:
                raise ValueError(
                    f"data.group_by_length needs a training set that knows its target lengths; the "
                    f"{type(self.task).__name__} task's has none (set data.group_by_length=false)"
                )
        self.total_steps = tc.max_steps or tc.epochs * steps_per_epoch
        self.optimizer = build_optimizer(
            self.model,
            lr=tc.lr,
            weight_decay=tc.weight_decay,
            betas=tc.betas,
            layer_decay=tc.layer_decay,
            lr_multipliers=tc.lr_multipliers,
        )
        warmup = min(tc.warmup_steps, self.total_steps)
        self.scheduler = build_scheduler(
            self.optimizer,
            tc.schedule,
            warmup,
            self.total_steps,
            tc.min_lr_ratio,
            tc.weight_decay_end if tc.weight_decay_end >= 0 else None,
        )
        self.ema = ModelEma(self.model, decay=tc.ema_decay) if tc.ema_decay > 0 else None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.best = BestTracker(tc.select_metric, tc.select_mode, self.state)  # after _restore: the resumed counters
        self.logger: Any = None
        self.progress: Any = None
        self.last_grad_norm = 0.0

    # -------------------------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to `total_steps`, validating, checkpointing and logging as the config says; returns the summary."""
        tc = self.cfg.train
        self._begin()
        start, samples, last_metrics, t0 = self.state.step, 0, {}, time.time()
        while self.state.step < self.total_steps:
            epoch = GlobalBatches(
                len(self.train_set), self.plan, self.state.epoch, tc.seed, self.dist.rank, self.train_lengths
            )
            if self.state.step_in_epoch >= epoch.steps:  # saved exactly at an epoch's end
                self.state.epoch, self.state.step_in_epoch = self.state.epoch + 1, 0
                continue
            for micro_batches in self._optimizer_steps(epoch):
                loss, n = self._train_step(micro_batches)
                samples += n
                step = self.state.step
                self._log_step(loss)
                epoch_done = self.state.step_in_epoch >= epoch.steps
                if epoch_done:  # the epoch's last step: roll over before saving
                    self.state.epoch, self.state.step_in_epoch = self.state.epoch + 1, 0
                if (
                    (epoch_done and tc.eval_every == 0)
                    or (tc.eval_every and step % tc.eval_every == 0)
                    or step == self.total_steps
                ):
                    last_metrics = self._validate_and_save()
                elif tc.save_every and step % tc.save_every == 0:
                    self.save(f"step_{step:07d}", "step", None)
                    self.checkpointer.prune()
                if step >= self.total_steps:
                    break
        return self._finish(start, samples, last_metrics, time.time() - t0)

    def _optimizer_steps(self, epoch: GlobalBatches) -> Iterator[list[Any]]:
        """The rest of the epoch (up to total_steps) as the micro-batches of each optimizer step."""
        first = self.state.step_in_epoch
        steps = range(first, min(epoch.steps, first + self.total_steps - self.state.step))
        micro = [mb for s in steps for mb in epoch.micro_batches(s)]
        group: list[Any] = []
        for batch in make_loader(self.train_set, micro, self.cfg.data.num_workers, self.task.collate):
            self._record_skips(batch.skipped)
            group.append(batch)
            if len(group) == self.plan.grad_accum:
                yield group
                group = []

    def _train_step(self, micro_batches: list[Any]) -> tuple[float, int]:
        """Forward/backward each micro-batch (gradients synchronized on the last), then one optimizer step;
        returns (the mean loss over the micro-batches of this rank, samples)."""
        loss_sum, samples = 0.0, 0
        for k, batch in enumerate(micro_batches):
            if len(batch) == 0:
                if self.dist.enabled:  # the other ranks would wait forever for this rank's gradients
                    raise StudyError(
                        f"rank {self.dist.rank}: every study of a micro-batch failed to load "
                        f"({', '.join(s.id for s in batch.skipped)}); fix or remove them"
                    )
                continue
            batch.to(self.device)
            with self.parallel.accumulating(k == len(micro_batches) - 1):
                with self._autocast():
                    out = self.train_task(batch)
                (out["loss"] / self.plan.grad_accum).backward()
            loss_sum += float(out["loss"].detach())
            samples += len(batch)
        self.last_grad_norm = self._optimizer_step()
        self.state.step_in_epoch += 1
        return loss_sum / self.plan.grad_accum, samples

    # ----------------------------------------------------------------------------------------------- setup helpers
    def _main_first(self, fn: Any) -> Any:
        """Run `fn` on rank 0, then on the other ranks (when rank 0 may create files they read)."""
        if self.main:
            result = fn()
            barrier(self.dist)
            return result
        try:
            barrier(self.dist)
        except RuntimeError:  # gloo/NCCL: rank 0 left the group, which only an error of its own makes it do
            raise DistributedSetupError(
                f"rank {self.dist.rank}: rank 0 stopped while preparing the run; its error above says why"
            ) from None
        return fn()

    def _print(self, *args: Any, **kwargs: Any) -> None:
        if self.main:
            print(*args, **kwargs)

    def _init_weights(self, source: str) -> None:
        """Load (some of) the model's weights from a checkpoint, run directory or .safetensors file."""
        path = Path(source)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise FileNotFoundError(f"train.init_from: {path} does not exist")
            state = read_tensors(path, "train.init_from")
        else:
            from medvl.infer.predictor import resolve_checkpoint

            state = load_checkpoint(resolve_checkpoint(path), load_train_state=False).model_state
        dropped: list[str] = []
        if hasattr(self.model, "init_state"):  # e.g. a fine-tuning model drops the decoder of an MAE checkpoint
            state, dropped = self.model.init_state(state)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(
                f"train.init_from: {len(unexpected)} weights in {path} do not belong to this model "
                f"(e.g. {unexpected[:3]}); is it a checkpoint of another model family or size?"
            )
        self._print(
            f"initialized {len(state)} tensors from {path} ({len(missing)} keep their initialization"
            + (f", {len(dropped)} of the file not used by this task, e.g. {dropped[:2]})" if dropped else ")")
        )

    def _restore(self, ckpt: Any) -> None:
        self.parallel.load_model_state(ckpt.model_state)
        ts = ckpt.train_state
        if ts is None:
            raise ValueError(
                f"{self.resume_from} holds weights only (no optimizer/data state) and cannot be resumed; "
                "resume from a step_* or last checkpoint"
            )
        self.parallel.load_optimizer_state(self.optimizer, ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        if self.ema is not None and "ema" in ckpt.extra:
            self.ema.load_state_dict(ckpt.extra["ema"])
        run = dict(ts["run"])
        if "batch_in_epoch" in run:  # checkpoints before multi-process training counted micro-batches
            saved_accum = ckpt.metadata["config"]["train"].get("grad_accum", 1)
            run["step_in_epoch"] = run.pop("batch_in_epoch") // saved_accum
        self.state = RunState(**run)
        rng = ts["rng"]
        per_rank = rng.get("ranks") if isinstance(rng, dict) else None
        if per_rank is not None and len(per_rank) == self.dist.world_size:
            set_rng_state(per_rank[self.dist.rank])
        else:  # another world size: rank 0's state, and a distinct, reproducible stream on the others
            set_rng_state(per_rank[0] if per_rank is not None else rng)
            if self.dist.rank > 0:
                torch.manual_seed(hash((self.cfg.train.seed, self.state.step, self.dist.rank)) % (2**63))
        self._print(
            f"resumed from {self.resume_from} at step {self.state.step} (epoch {self.state.epoch}, "
            f"step {self.state.step_in_epoch} of the epoch) on {self.dist.world_size} process(es)"
        )

    def _check_loadable(self, dataset: Any, probe: int = 8) -> None:
        """Refuse to train when the first `probe` training items all fail to load (a systematic problem such as
        the wrong model.in_chans or a moved image folder), before any step."""
        items = [dataset[i] for i in range(min(probe, len(dataset)))]
        failed = [x for x in items if isinstance(x, Skipped)]
        if items and len(failed) == len(items):
            raise StudyError(
                f"the first {len(items)} training studies cannot be loaded ({failed[0].id}: "
                f"{failed[0].reason}); fix the data or the model settings before training"
            )

    SKIPS_SHOWN = 10
    """Skipped studies named one by one on the console; the rest are counted (all are in train_summary.json)."""

    def _record_skips(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            if s.id in self.state.skipped:
                continue
            self.state.skipped[s.id] = s.reason
            if not self.main:
                continue
            shown = len(self.state.skipped)
            if shown <= self.SKIPS_SHOWN:
                print(f"skipping study {s.id}: {s.reason}", file=sys.stderr)
            if shown == self.SKIPS_SHOWN:
                print(
                    "further skipped studies are counted, not listed (all are in train_summary.json)", file=sys.stderr
                )

    # ---------------------------------------------------------------------------------------------------- checkpoints
    # ---------------------------------------------------------------------------------------------------- checkpoints
    def _metadata(self, kind: str, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {
            "kind": kind,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "config": self.cfg.to_dict(),
            **self.task.metadata(),
            "metrics": metrics or {},
            "versions": library_versions(),
            "has_ema": self.ema is not None,
            "world_size": self.dist.world_size,
            "global_batch": self.plan.global_batch,
            "strategy": self.strategy,
        }

    def save(
        self, name: str, kind: str, metrics: dict[str, float] | None = None, with_train_state: bool = True
    ) -> Path:
        """Write a checkpoint (every rank calls this: gathering sharded state is collective; rank 0 writes)."""
        model_state = self.parallel.model_state()
        if hasattr(self.model, "checkpoint_state"):  # e.g. leave out frozen weights loaded from a pretrained path
            model_state = self.model.checkpoint_state(model_state)
        train_state = None
        if with_train_state:
            train_state = {
                "optimizer": self.parallel.optimizer_state(self.optimizer),
                "scheduler": self.scheduler.state_dict(),
                "rng": {"ranks": gather_objects(rng_state(), self.dist)},
                "run": dataclasses.asdict(self.state),
            }
        extra = {"ema": self.ema.state_dict()} if self.ema is not None and self.main else None
        return self.checkpointer.save(name, model_state, self._metadata(kind, metrics), train_state, extra)

    # ----------------------------------------------------------------------------------------------------- validation
    def _autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current weights (EMA weights when the run keeps them); see `Validator`."""
        swap = self.ema.apply_to(self.model) if self.ema is not None else nullcontext()
        context = ExitStack()
        for ctx in (self.parallel.unsharded(), swap, self._autocast()):
            context.enter_context(ctx)
        return self.validator(self.model, context, set(self.state.skipped))

    def _validate_and_save(self) -> dict[str, float]:
        metrics = self.validate()
        if metrics:
            improved = self.best.update(metrics)
            self.logger.log({f"val/{k}": v for k, v in metrics.items()}, self.state.step)
            shown = " ".join(f"{k}={metrics[k]:.4f}" for k in self.task.headline_metrics if k in metrics)
            self._print(f"\nstep {self.state.step}: val {shown}{' (best)' if improved else ''}", flush=True)
            if improved:
                self.save("best", "best", metrics, with_train_state=False)
        self.save(f"step_{self.state.step:07d}", "step", metrics)
        self.checkpointer.prune()
        return metrics

    # ------------------------------------------------------------------------------------------------ logging, summary
    def _begin(self) -> None:
        cfg, plan = self.cfg, self.plan
        # A resumed run's logs restart at its step: what was logged after the checkpoint is dropped.
        self.logger = build_loggers(cfg.train.loggers, self.run_dir, self.state.step) if self.main else NullLogger()
        if self.main:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        n_params = sum(p.numel() for p in self.model.parameters())
        where = (
            f"{self.dist.world_size} processes ({self.strategy}, {self.dist.backend})"
            if self.dist.enabled
            else str(self.device)
        )
        self._print(
            f"training {cfg.model_family}/{cfg.model_size} ({n_params / 1e6:.2f}M parameters) on {where} for "
            f"{self.total_steps} steps ({self.steps_per_epoch} per epoch, {len(self.train_set)} studies, "
            f"global batch {plan.global_batch} = {plan.micro_batch} x {plan.grad_accum} accumulation x "
            f"{self.dist.world_size}, {self.precision}); run dir {self.run_dir}",
            flush=True,
        )
        self.model.train()
        if cfg.train.progress and self.main:
            from tqdm import tqdm

            self.progress = tqdm(
                total=self.total_steps, initial=self.state.step, desc="train", dynamic_ncols=True, mininterval=1.0
            )

    def _log_step(self, loss: float) -> None:
        step, lr = self.state.step, self.scheduler.get_last_lr()[0]
        if step % self.cfg.train.log_every == 0:  # the mean over the global batch, the same on every rank
            loss = all_reduce_sum([loss], self.dist)[0] / self.dist.world_size
            self.logger.log({"train/loss": loss, "train/lr": lr, "train/grad_norm": self.last_grad_norm}, step)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")

    def _finish(self, start: int, samples: int, last_metrics: dict[str, float], elapsed: float) -> dict[str, Any]:
        tc, plan = self.cfg.train, self.plan
        if self.progress is not None:
            self.progress.close()
        samples = int(all_reduce_sum([samples], self.dist)[0])
        for skipped in gather_objects(dict(self.state.skipped), self.dist):  # each rank saw its own shard's skips
            self.state.skipped.update(skipped)
        last = self.save("last", "last", last_metrics)
        summary = {
            "steps": self.state.step,
            "steps_this_run": self.state.step - start,
            "seconds": round(elapsed, 1),
            "samples_per_second": round(samples / elapsed, 2) if elapsed > 0 else None,
            "world_size": self.dist.world_size,
            "strategy": self.strategy,
            "precision": self.precision,
            "global_batch": plan.global_batch,
            "grad_accum": plan.grad_accum,
            "best_metric": {tc.select_metric: self.state.best_metric, "step": self.state.best_step},
            "final_val_metrics": last_metrics,
            "skipped_studies": len(self.state.skipped),
            "skipped": self.state.skipped,
            "truncated_reports": getattr(self.train_set, "truncated", 0),
            "last_checkpoint": str(last),
            "best_checkpoint": str(self.run_dir / "checkpoints" / "best") if self.state.best_step >= 0 else None,
        }
        if self.main:
            (self.run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        self.logger.close()
        if self.state.skipped and self.main:
            print(f"{len(self.state.skipped)} studies were skipped (see train_summary.json)", file=sys.stderr)
        return summary

    def _optimizer_step(self) -> float:
        tc = self.cfg.train
        grad_norm = 0.0
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.state.step)
        return grad_norm


def train(cfg: ExperimentConfig, resume: str | None = None, keep_process_group: bool = False) -> dict[str, Any]:
    """Train `cfg` to `train.max_steps` (or `train.epochs`) and write the run into `train.output_dir`.

    Under torchrun every process calls this and gets the same summary; the process group is closed at the end.

    Args:
        cfg: the experiment (`medvl.config.experiment.load_experiment(recipe, overrides)`).
        resume: None (a fresh run; a folder that already holds a run is refused), "auto" (the newest checkpoint whose
            files all load, or a fresh start when there is none), "never" (start over, moving an earlier run into
            RUN/previous_run_N/), "overwrite" (start over, deleting it) or a checkpoint directory; see
            `medvl.train.run_folder`.
        keep_process_group: under torchrun, leave the process group open after a run that ended well, for more
            collective work in this process (the quickstart evaluates next; `evaluate` closes it). A second default
            group in one process hung the quickstart once in CI: rank 0 had passed init_process_group and waited in
            a gather while rank 1 still waited in init_process_group (likely the reused store keys of the first
            group; not proven).

    Returns:
        The summary also written to RUN/train_summary.json: `steps`, `steps_this_run`, `seconds` (wall clock of this
        run), `samples_per_second` (studies over all processes), `world_size`, `strategy`, `global_batch`,
        `grad_accum`, `best_metric` ({select_metric: value, "step": step}), `final_val_metrics`, the skipped studies
        (`skipped_studies` count and `skipped`: id -> reason), `truncated_reports`, `last_checkpoint`,
        `best_checkpoint` (None when no validation ran).

    Raises:
        ConfigError: a config value out of range, or task options the task does not have.
        DataSourceError: the data set is absent, in the wrong layout, or lacks what the task needs.
        DistributedSetupError: a global batch that per-device batch x world size does not divide, torchrun's
            environment incomplete, or a backend that does not fit the device.
        RunFolderError: the run folder already holds a run (and `resume` is None), or the config differs from the
            checkpoint's in a setting that must not change on resume.
        CheckpointError: `resume` names a damaged checkpoint.
    """
    finished = False
    try:
        summary = Trainer(cfg, resume=resume).fit()
        finished = True
        return summary
    finally:
        shutdown(sync=finished, keep_open=finished and keep_process_group)


__all__ = ["RunState", "Trainer", "make_loader", "train"]
