"""The training runner: one loop for every task.

`train(cfg)` reads the data, builds (or reloads) the tokenizer and model, and runs optimizer steps of
`task(batch)["loss"]`, validating, checkpointing and logging as the config says. It never knows which model family
it trains: the family table builds the model and names its task.

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
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medvl.config.experiment import ExperimentConfig
from medvl.data.dataset import Batch, ReportDataset, Skipped, StudyError, collate, check_studies
from medvl.data.sources import load_studies, require_split
from medvl.data.tokenizer import (load_tokenizer, special_tokens, tokenizer_from_json, tokenizer_to_json,
                                  train_bpe_tokenizer)
from medvl.evaluate.scoring import score_reports
from medvl.models.families import MODEL_FAMILIES
from medvl.tasks import TASKS
from medvl.train.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from medvl.train.distributed import (
    DistInfo,
    DistributedSetupError,
    GlobalBatches,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    merge_shards,
    plan_batches,
    shard_indices,
    shutdown,
)
from medvl.train.ema import ModelEma
from medvl.train.loggers import build_loggers
from medvl.train.optim import build_optimizer
from medvl.train.parallel import ParallelModel, resolve_strategy
from medvl.train.run_folder import prepare_run_folder
from medvl.train.schedules import build_scheduler


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


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device for `train.device`; under torchrun with CUDA, process `local_rank` gets GPU `local_rank`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and local_rank is not None and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but no CUDA device is available; use train.device=cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def library_versions() -> dict[str, str]:
    import transformers

    import medvl

    return {"medvl": medvl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}


def make_loader(dataset: ReportDataset, batches: list[list[int]], num_workers: int, max_views: int, pad_id: int,
                ) -> DataLoader:
    # A private generator: otherwise every new DataLoader iterator draws a seed from the global RNG, and a resumed
    # run (which builds one more iterator than an uninterrupted run) would see different dropout masks.
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, generator=torch.Generator(),
                      collate_fn=lambda items: collate(items, max_views=max_views, pad_id=pad_id))


class Trainer:
    """Holds the pieces of one run; `fit()` runs it. Built by `train()` from an `ExperimentConfig`.

    Under torchrun each process builds one; rank 0 alone writes (data set generation, tokenizer, logs, checkpoints,
    summaries), the others wait at barriers where they need its files.
    """

    def __init__(self, cfg: ExperimentConfig, resume: str | None = None) -> None:
        self.cfg = cfg
        tc = cfg.train
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device_type = resolve_device(tc.device).type
        # Every setting that could fail later is checked here, before data, tokenizer or model work.
        self.dist: DistInfo = init_distributed(tc.dist_backend, device_type)
        self.plan = plan_batches(cfg.data.batch_size, tc.grad_accum, tc.global_batch_size, self.dist.world_size)
        self.strategy = resolve_strategy(tc.strategy, self.dist)
        if self.strategy == "fsdp" and tc.ema_decay > 0:
            raise DistributedSetupError("train.ema_decay is not supported with train.strategy=fsdp (the EMA would "
                                        "need the full weights on every rank); use ddp or set train.ema_decay=0")
        self.device = resolve_device(tc.device, self.dist.local_rank if self.dist.enabled else None)
        self.main = self.dist.is_main
        self.run_dir = Path(tc.output_dir)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(tc.seed)  # the same on every rank: identical initial weights

        self.resume_from = self._find_resume(resume)
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from else None

        # Rank 0 first: the synthetic source may generate the data set, which the others then read.
        studies = self._main_first(lambda: load_studies(cfg.data))
        self.state = RunState()
        train_studies, skipped = check_studies(require_split(studies, "train"), cfg.data.strict)
        val_studies, val_skipped = check_studies(studies.get("val", []), cfg.data.strict)
        self._record_skips([*skipped, *val_skipped])

        self.tokenizer = self._tokenizer(checkpoint, [s.report for s in train_studies])
        family = MODEL_FAMILIES.get(cfg.model_family)
        cfg.model = dataclasses.replace(cfg.model, vocab_size=len(self.tokenizer), pad_id=self.tokenizer.pad_token_id)
        self.model = family.build(cfg.model).to(self.device)
        if tc.init_from and checkpoint is None:
            self._init_weights(tc.init_from)
        self.parallel = ParallelModel(self.model, self.strategy, self.dist, self.device, tc.precision,
                                      tc.activation_checkpointing)
        task_cls = TASKS.get(family.task)()
        # Two views of one model: training forwards through the DDP/FSDP wrapper, evaluation and generation use the
        # plain model.
        self.task = task_cls(self.model, self.tokenizer, label_smoothing=tc.label_smoothing)
        self.train_task = task_cls(self.parallel.forward_module, self.tokenizer, label_smoothing=tc.label_smoothing)

        mc = cfg.model
        common = {"tokenizer": self.tokenizer, "image_size": mc.image_size, "max_views": mc.max_views,
                  "max_tokens": mc.max_len, "strict": cfg.data.strict}
        self.train_set = ReportDataset(train_studies, cache_images=cfg.data.cache_images, **common)
        self.val_set = ReportDataset(val_studies, cache_images=cfg.data.cache_images, **common) if val_studies else None

        steps_per_epoch = len(self.train_set) // self.plan.global_batch
        if steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(self.train_set)} usable studies, fewer than one optimizer "
                             f"step's global batch of {self.plan.global_batch} (data.batch_size {cfg.data.batch_size} "
                             f"x grad_accum {self.plan.grad_accum} x {self.dist.world_size} process(es))")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = tc.max_steps or tc.epochs * steps_per_epoch
        self.optimizer = build_optimizer(self.model, lr=tc.lr, weight_decay=tc.weight_decay, betas=tc.betas)
        warmup = min(tc.warmup_steps, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, tc.schedule, warmup, self.total_steps, tc.min_lr_ratio)
        self.ema = ModelEma(self.model, decay=tc.ema_decay) if tc.ema_decay > 0 else None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.logger: Any = None

    # ----------------------------------------------------------------------------------------------- setup helpers
    def _main_first(self, fn: Any) -> Any:
        """Run `fn` on rank 0, then on the other ranks (when rank 0 may create files they read)."""
        if self.main:
            result = fn()
            barrier(self.dist)
            return result
        barrier(self.dist)
        return fn()

    def _print(self, *args: Any, **kwargs: Any) -> None:
        if self.main:
            print(*args, **kwargs)

    def _find_resume(self, resume: str | None) -> Path | None:
        """The checkpoint to resume from (None: step 0) under the run-folder policy of `medvl.train.run_folder`."""
        return self._main_first(lambda: prepare_run_folder(self.run_dir, resume, self.cfg.to_dict(), self.main))

    def _tokenizer(self, checkpoint: Any, train_reports: list[str]):  # noqa: ANN202
        if checkpoint is not None:
            return tokenizer_from_json(checkpoint.metadata["tokenizer"], checkpoint.metadata.get("tokenizer_specials"))
        tc = self.cfg.tokenizer
        if tc.path:
            return load_tokenizer(tc.path)
        # Rank 0 trains and saves it; the other ranks load the saved files, so every rank has the same vocabulary.
        if self.main:
            tok = train_bpe_tokenizer(train_reports, vocab_size=tc.vocab_size, min_frequency=tc.min_frequency)
            tok.save_pretrained(str(self.run_dir / "tokenizer"))
        barrier(self.dist)
        return tok if self.main else load_tokenizer(str(self.run_dir / "tokenizer"))

    def _init_weights(self, source: str) -> None:
        """Load (some of) the model's weights from a checkpoint, run directory or .safetensors file."""
        path = Path(source)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise FileNotFoundError(f"train.init_from: {path} does not exist")
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            from medvl.infer.predictor import resolve_checkpoint

            state = load_checkpoint(resolve_checkpoint(path), load_train_state=False).model_state
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"train.init_from: {len(unexpected)} weights in {path} do not belong to this model "
                             f"(e.g. {unexpected[:3]}); is it a checkpoint of another model family or size?")
        self._print(f"initialized {len(state)} tensors from {path} ({len(missing)} keep their initialization)")

    def _restore(self, ckpt: Any) -> None:
        self.parallel.load_model_state(ckpt.model_state)
        ts = ckpt.train_state
        if ts is None:
            raise ValueError(f"{self.resume_from} holds weights only (no optimizer/data state) and cannot be resumed; "
                             "resume from a step_* or last checkpoint")
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
                torch.manual_seed(hash((self.cfg.train.seed, self.state.step, self.dist.rank)) % (2 ** 63))
        self._print(f"resumed from {self.resume_from} at step {self.state.step} (epoch {self.state.epoch}, "
                    f"step {self.state.step_in_epoch} of the epoch) on {self.dist.world_size} process(es)")

    def _record_skips(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            if s.id not in self.state.skipped:
                self.state.skipped[s.id] = s.reason
                if self.main:
                    print(f"skipping study {s.id}: {s.reason}", file=sys.stderr)

    # ---------------------------------------------------------------------------------------------------- checkpoints
    def _metadata(self, kind: str, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {"kind": kind, "step": self.state.step, "epoch": self.state.epoch, "config": self.cfg.to_dict(),
                "tokenizer": tokenizer_to_json(self.tokenizer), "tokenizer_specials": special_tokens(self.tokenizer),
                "metrics": metrics or {},
                "versions": library_versions(), "has_ema": self.ema is not None,
                "world_size": self.dist.world_size, "global_batch": self.plan.global_batch,
                "strategy": self.strategy}

    def save(self, name: str, kind: str, metrics: dict[str, float] | None = None, with_train_state: bool = True
             ) -> Path:
        """Write a checkpoint (every rank calls this: gathering sharded state is collective; rank 0 writes)."""
        model_state = self.parallel.model_state()
        if hasattr(self.model, "checkpoint_state"):  # e.g. leave out frozen weights loaded from a pretrained path
            model_state = self.model.checkpoint_state(model_state)
        train_state = None
        if with_train_state:
            train_state = {"optimizer": self.parallel.optimizer_state(self.optimizer),
                           "scheduler": self.scheduler.state_dict(),
                           "rng": {"ranks": gather_objects(rng_state(), self.dist)},
                           "run": dataclasses.asdict(self.state)}
        path = self.run_dir / "checkpoints" / name
        if self.main:
            extra = {"ema": self.ema.state_dict()} if self.ema is not None else None
            path = save_checkpoint(path, model_state=model_state, metadata=self._metadata(kind, metrics),
                                   train_state=train_state, extra_tensors=extra)
        barrier(self.dist)  # nobody moves on (or reads it) before it is complete
        return path

    # ----------------------------------------------------------------------------------------------------- validation
    def _autocast(self) -> Any:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss over the whole split, plus generation metrics on the first `eval_max_studies` studies
        (greedy decoding, for speed; `medvl evaluate` uses the configured beam search). Under torchrun each rank takes
        every world-size-th study, rank 0 merges the shards (each study exactly once, checked) and scores them, and
        every rank gets the same metrics, so all agree on the best checkpoint."""
        if self.val_set is None:
            return {}
        self.model.eval()
        swap = self.ema.apply_to(self.model) if self.ema is not None else nullcontext()
        bs = self.cfg.data.batch_size
        limit = self.cfg.train.eval_max_studies or len(self.val_set)
        gen = dataclasses.replace(self.cfg.generation, num_beams=1)
        mine = shard_indices(len(self.val_set), self.dist.rank, self.dist.world_size)
        total, tokens, generated, skipped_ids = 0.0, 0, [], set()
        with self.parallel.unsharded(), swap, self._autocast():
            batches = [mine[i: i + bs] for i in range(0, len(mine), bs)]
            loader = make_loader(self.val_set, batches, self.cfg.data.num_workers, self.cfg.model.max_views,
                                 self.tokenizer.pad_token_id)
            for indices, batch in zip(batches, loader, strict=True):
                self._record_skips(batch.skipped)
                skipped_ids.update(s.id for s in batch.skipped)
                if len(batch) == 0:
                    continue
                batch.to(self.device)
                out = self.task(batch)
                total += float(out["loss"]) * int(out["n_tokens"])
                tokens += int(out["n_tokens"])
                kept = [i for i in indices if i < limit and self.val_set.studies[i].id in batch.ids]
                if kept:
                    hyps = self.task.generate(batch, gen)
                    labels = batch.labels.numpy() if batch.labels is not None else None
                    position = {sid: k for k, sid in enumerate(batch.ids)}
                    for i in kept:
                        k = position[self.val_set.studies[i].id]
                        generated.append((i, (batch.reports[k], hyps[k], None if labels is None else labels[k])))
        self.model.train()
        total, tokens = all_reduce_sum([total, tokens], self.dist)
        metrics = {"loss": total / max(tokens, 1)}
        parts = gather_objects((generated, skipped_ids), self.dist)
        if self.main:
            # Every study below the limit that loaded must come back exactly once (merge_shards checks it).
            skipped = set().union(*(ids for _, ids in parts)) | set(self.state.skipped)
            studies = self.val_set.studies
            expected = [i for i in range(min(limit, len(studies))) if studies[i].id not in skipped]
            position = {i: k for k, i in enumerate(expected)}
            rows = merge_shards([[(position[i], row) for i, row in part] for part, _ in parts], len(expected))
            if rows:
                refs, hyps = [r[0] for r in rows], [r[1] for r in rows]
                truth = np.stack([r[2] for r in rows]) if all(r[2] is not None for r in rows) else None
                headline, _ = score_reports(refs, hyps, truth)
                metrics.update(headline)
        return broadcast_object(metrics, self.dist)

    def _is_better(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None or math.isnan(best):
            return True
        return value > best if self.cfg.train.select_mode == "max" else value < best

    def _validate_and_save(self) -> dict[str, float]:
        metrics = self.validate()
        tc = self.cfg.train
        if metrics:
            if tc.select_metric not in metrics:
                raise KeyError(f"train.select_metric {tc.select_metric!r} is not a validation metric; "
                               f"choose one of: {', '.join(sorted(metrics))}")
            value = metrics[tc.select_metric]
            improved = self._is_better(value)
            if improved:
                self.state.best_metric, self.state.best_step = value, self.state.step
            self.logger.log({f"val/{k}": v for k, v in metrics.items()}, self.state.step)
            shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "bleu_4", "gt_micro_f1", "ce_14_micro_f1")
                             if k in metrics)
            self._print(f"\nstep {self.state.step}: val {shown}{' (best)' if improved else ''}", flush=True)
            if improved:
                self.save("best", "best", metrics, with_train_state=False)
        self.save(f"step_{self.state.step:07d}", "step", metrics)
        if self.main:
            prune_checkpoints(self.run_dir, keep=tc.keep_checkpoints)
        return metrics

    # -------------------------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        cfg, tc, plan = self.cfg, self.cfg.train, self.plan
        # A resumed run's logs restart at its step: what was logged after the checkpoint is dropped.
        self.logger = build_loggers(tc.loggers, self.run_dir, self.state.step) if self.main else NullLogger()
        if self.main:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        n_params = sum(p.numel() for p in self.model.parameters())
        where = f"{self.dist.world_size} processes ({self.strategy}, {self.dist.backend})" if self.dist.enabled \
            else str(self.device)
        self._print(f"training {cfg.model_family}/{cfg.model_size} ({n_params / 1e6:.2f}M parameters) on {where} for "
                    f"{self.total_steps} steps ({self.steps_per_epoch} per epoch, {len(self.train_set)} studies, "
                    f"global batch {plan.global_batch} = {plan.micro_batch} x {plan.grad_accum} accumulation x "
                    f"{self.dist.world_size}); run dir {self.run_dir}", flush=True)
        self.model.train()
        start, last_metrics, t0 = self.state.step, {}, time.time()
        progress = None
        if tc.progress and self.main:
            from tqdm import tqdm

            progress = tqdm(total=self.total_steps, initial=self.state.step, desc="train", dynamic_ncols=True,
                            mininterval=1.0)
        samples = 0
        while self.state.step < self.total_steps:
            epoch = GlobalBatches(len(self.train_set), plan, self.state.epoch, tc.seed, self.dist.rank)
            if self.state.step_in_epoch >= epoch.steps:  # saved exactly at an epoch's end
                self.state.epoch, self.state.step_in_epoch = self.state.epoch + 1, 0
                continue
            steps = range(self.state.step_in_epoch, min(epoch.steps,
                                                        self.state.step_in_epoch + self.total_steps - self.state.step))
            micro = [mb for s in steps for mb in epoch.micro_batches(s)]
            loader = make_loader(self.train_set, micro, cfg.data.num_workers, cfg.model.max_views,
                                 self.tokenizer.pad_token_id)
            accumulated, loss_sum = 0, 0.0
            for batch in loader:
                self._record_skips(batch.skipped)
                accumulated += 1
                last = accumulated == plan.grad_accum
                if len(batch) == 0:
                    if self.dist.enabled:  # the other ranks would wait forever for this rank's gradients
                        raise StudyError(f"rank {self.dist.rank}: every study of a micro-batch failed to load "
                                         f"({', '.join(s.id for s in batch.skipped)}); fix or remove them")
                else:
                    batch.to(self.device)
                    with self.parallel.accumulating(last):
                        with self._autocast():
                            out = self.train_task(batch)
                        (out["loss"] / plan.grad_accum).backward()
                    loss_sum += float(out["loss"].detach())
                    samples += len(batch)
                if not last:
                    continue
                accumulated = 0
                grad_norm = self._optimizer_step()
                step = self.state.step
                self.state.step_in_epoch += 1
                loss_value = loss_sum / plan.grad_accum
                loss_sum = 0.0
                if step % tc.log_every == 0:  # the mean over the global batch, the same on every rank
                    loss_value = all_reduce_sum([loss_value], self.dist)[0] / self.dist.world_size
                    self.logger.log({"train/loss": loss_value, "train/lr": self.scheduler.get_last_lr()[0],
                                     "train/grad_norm": grad_norm}, step)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if self.state.step_in_epoch >= epoch.steps:  # the epoch's last step: roll over before saving
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                    if tc.eval_every == 0:
                        last_metrics = self._validate_and_save()
                        continue
                if (tc.eval_every and step % tc.eval_every == 0) or step == self.total_steps:
                    last_metrics = self._validate_and_save()
                elif tc.save_every and step % tc.save_every == 0:
                    self.save(f"step_{step:07d}", "step", None)
                    if self.main:
                        prune_checkpoints(self.run_dir, keep=tc.keep_checkpoints)
                if step >= self.total_steps:
                    break
            if self.state.step >= self.total_steps:
                break
        if progress is not None:
            progress.close()
        elapsed = time.time() - t0
        samples = int(all_reduce_sum([samples], self.dist)[0])
        for skipped in gather_objects(dict(self.state.skipped), self.dist):  # each rank saw its own shard's skips
            self.state.skipped.update(skipped)
        last = self.save("last", "last", last_metrics)
        summary = {"steps": self.state.step, "steps_this_run": self.state.step - start, "seconds": round(elapsed, 1),
                   "samples_per_second": round(samples / elapsed, 2) if elapsed > 0 else None,
                   "world_size": self.dist.world_size, "strategy": self.strategy,
                   "global_batch": plan.global_batch, "grad_accum": plan.grad_accum,
                   "best_metric": {tc.select_metric: self.state.best_metric, "step": self.state.best_step},
                   "final_val_metrics": last_metrics, "skipped_studies": len(self.state.skipped),
                   "skipped": self.state.skipped, "truncated_reports": self.train_set.truncated,
                   "last_checkpoint": str(last),
                   "best_checkpoint": str(self.run_dir / "checkpoints" / "best") if self.state.best_step >= 0 else None}
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


def train(cfg: ExperimentConfig, resume: str | None = None) -> dict[str, Any]:
    """Train `cfg`; `resume` is None, "auto" (newest checkpoint in the run directory) or a checkpoint path.

    Under torchrun every process calls this and gets the same summary; the process group is closed at the end.
    """
    trainer = None
    try:
        trainer = Trainer(cfg, resume=resume)
        return trainer.fit()
    finally:
        shutdown()


__all__ = ["Trainer", "train", "RunState", "Batch"]
