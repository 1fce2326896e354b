"""The training runner: one loop for every task.

`train(cfg)` reads the data, builds (or reloads) the tokenizer and model, and runs optimizer steps of
`task(batch)["loss"]`, validating, checkpointing and logging as the config says. It never knows which model family
it trains: the family table builds the model and names its task.

Resuming is exact: the data order of an epoch is a pure function of (seed, epoch), a checkpoint is only written
right after an optimizer step (no half-accumulated gradients), and it holds the model, optimizer, scheduler, EMA,
RNG states and the position in the epoch. A run killed at any point and resumed with `resume="auto"` ends with the
same weights as an uninterrupted run of the same seed.
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
from medvl.data.dataset import Batch, ReportDataset, Skipped, check_studies, collate, epoch_batches
from medvl.data.sources import load_studies, require_split
from medvl.data.tokenizer import load_tokenizer, tokenizer_from_json, tokenizer_to_json, train_bpe_tokenizer
from medvl.evaluate.scoring import score_reports
from medvl.models.families import MODEL_FAMILIES
from medvl.tasks import TASKS
from medvl.train.checkpoint import find_latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from medvl.train.ema import ModelEma
from medvl.train.loggers import build_loggers
from medvl.train.optim import build_optimizer
from medvl.train.schedules import build_scheduler


@dataclass
class RunState:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    batch_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed."""
    best_metric: float | None = None
    best_step: int = -1
    skipped: dict[str, str] = field(default_factory=dict)
    """Study id -> why it was skipped (counted once per study)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
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
    """Holds the pieces of one run; `fit()` runs it. Built by `train()` from an `ExperimentConfig`."""

    def __init__(self, cfg: ExperimentConfig, resume: str | None = None) -> None:
        self.cfg = cfg
        tc = cfg.train
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        self.run_dir = Path(tc.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(tc.seed)

        self.resume_from = self._find_resume(resume)
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from else None

        studies = load_studies(cfg.data)
        self.state = RunState()
        train_studies, skipped = check_studies(require_split(studies, "train"), cfg.data.strict)
        val_studies, val_skipped = check_studies(studies.get("val", []), cfg.data.strict)
        self._record_skips([*skipped, *val_skipped])

        self.tokenizer = self._tokenizer(checkpoint, [s.report for s in train_studies])
        family = MODEL_FAMILIES.get(cfg.model_family)
        cfg.model = dataclasses.replace(cfg.model, vocab_size=len(self.tokenizer), pad_id=self.tokenizer.pad_token_id)
        self.model = family.build(cfg.model).to(self.device)
        self.task = TASKS.get(family.task)()(self.model, self.tokenizer, label_smoothing=tc.label_smoothing)

        mc = cfg.model
        common = {"tokenizer": self.tokenizer, "image_size": mc.image_size, "max_views": mc.max_views,
                  "max_tokens": mc.max_len, "strict": cfg.data.strict}
        self.train_set = ReportDataset(train_studies, cache_images=cfg.data.cache_images, **common)
        self.val_set = ReportDataset(val_studies, cache_images=cfg.data.cache_images, **common) if val_studies else None

        steps_per_epoch = len(self.train_set) // cfg.data.batch_size // tc.grad_accum
        if steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(self.train_set)} usable studies, fewer than one optimizer "
                             f"step of data.batch_size x train.grad_accum = {cfg.data.batch_size * tc.grad_accum}")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = tc.max_steps or tc.epochs * steps_per_epoch
        self.optimizer = build_optimizer(self.model, lr=tc.lr, weight_decay=tc.weight_decay, betas=tc.betas)
        warmup = min(tc.warmup_steps, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, tc.schedule, warmup, self.total_steps, tc.min_lr_ratio)
        self.ema = ModelEma(self.model, decay=tc.ema_decay) if tc.ema_decay > 0 else None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.logger = None

    # ----------------------------------------------------------------------------------------------- setup helpers
    def _find_resume(self, resume: str | None) -> Path | None:
        if not resume:
            return None
        if resume == "auto":
            found = find_latest_checkpoint(self.run_dir)
            if found is None:
                print(f"resume=auto: no checkpoint in {self.run_dir / 'checkpoints'}, starting from scratch")
            return found
        path = Path(resume)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint to resume from does not exist: {path} (use --resume auto to pick the "
                                    f"newest one in {self.run_dir / 'checkpoints'})")
        return path

    def _tokenizer(self, checkpoint: Any, train_reports: list[str]):  # noqa: ANN202
        if checkpoint is not None:
            return tokenizer_from_json(checkpoint.metadata["tokenizer"])
        tc = self.cfg.tokenizer
        if tc.path:
            tok = load_tokenizer(tc.path)
        else:
            tok = train_bpe_tokenizer(train_reports, vocab_size=tc.vocab_size, min_frequency=tc.min_frequency)
        tok.save_pretrained(str(self.run_dir / "tokenizer"))
        return tok

    def _restore(self, ckpt: Any) -> None:
        self.model.load_state_dict(ckpt.model_state)
        ts = ckpt.train_state
        if ts is None:
            raise ValueError(f"{self.resume_from} holds weights only (no optimizer/data state) and cannot be resumed; "
                             "resume from a step_* or last checkpoint")
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        if self.ema is not None and "ema" in ckpt.extra:
            self.ema.load_state_dict(ckpt.extra["ema"])
        self.state = RunState(**ts["run"])
        set_rng_state(ts["rng"])
        print(f"resumed from {self.resume_from} at step {self.state.step} (epoch {self.state.epoch}, "
              f"batch {self.state.batch_in_epoch})")

    def _record_skips(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            if s.id not in self.state.skipped:
                self.state.skipped[s.id] = s.reason
                print(f"skipping study {s.id}: {s.reason}", file=sys.stderr)

    # ---------------------------------------------------------------------------------------------------- checkpoints
    def _metadata(self, kind: str, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {"kind": kind, "step": self.state.step, "epoch": self.state.epoch, "config": self.cfg.to_dict(),
                "tokenizer": tokenizer_to_json(self.tokenizer), "metrics": metrics or {},
                "versions": library_versions(), "has_ema": self.ema is not None}

    def save(self, name: str, kind: str, metrics: dict[str, float] | None = None, with_train_state: bool = True) -> Path:
        train_state = None
        if with_train_state:
            train_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                           "rng": rng_state(), "run": dataclasses.asdict(self.state)}
        extra = {"ema": self.ema.state_dict()} if self.ema is not None else None
        path = save_checkpoint(self.run_dir / "checkpoints" / name, model_state=self.model.state_dict(),
                               metadata=self._metadata(kind, metrics), train_state=train_state, extra_tensors=extra)
        return path

    # ----------------------------------------------------------------------------------------------------- validation
    def _autocast(self) -> Any:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss over the whole split, plus generation metrics on the first `eval_max_studies` studies
        (greedy decoding, for speed; `medvl evaluate` uses the configured beam search)."""
        if self.val_set is None:
            return {}
        self.model.eval()
        swap = self.ema.apply_to(self.model) if self.ema is not None else nullcontext()
        bs = self.cfg.data.batch_size
        with swap, self._autocast():
            batches = epoch_batches(len(self.val_set), bs, 0, 0, shuffle=False, drop_last=False)
            loader = make_loader(self.val_set, batches, self.cfg.data.num_workers, self.cfg.model.max_views,
                                 self.tokenizer.pad_token_id)
            total, tokens, refs, hyps, labels = 0.0, 0, [], [], []
            limit = self.cfg.train.eval_max_studies or len(self.val_set)
            gen = dataclasses.replace(self.cfg.generation, num_beams=1)
            for batch in loader:
                self._record_skips(batch.skipped)
                if len(batch) == 0:
                    continue
                batch.to(self.device)
                out = self.task(batch)
                total += float(out["loss"]) * int(out["n_tokens"])
                tokens += int(out["n_tokens"])
                if len(refs) < limit:
                    hyps += self.task.generate(batch, gen)
                    refs += batch.reports
                    labels.append(batch.labels)
        self.model.train()
        metrics = {"loss": total / max(tokens, 1)}
        if refs:
            truth = torch.cat(labels).numpy() if all(x is not None for x in labels) else None
            headline, _ = score_reports(refs[:limit], hyps[:limit], None if truth is None else truth[:limit])
            metrics.update(headline)
        return metrics

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
            print(f"\nstep {self.state.step}: val {shown}{' (best)' if improved else ''}", flush=True)
            if improved:
                self.save("best", "best", metrics, with_train_state=False)
        self.save(f"step_{self.state.step:07d}", "step", metrics)
        prune_checkpoints(self.run_dir, keep=tc.keep_checkpoints)
        return metrics

    # -------------------------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        self.logger = build_loggers(tc.loggers, self.run_dir)
        (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        n_params = sum(p.numel() for p in self.model.parameters())
        print(f"training {cfg.model_family}/{cfg.model_size} ({n_params / 1e6:.2f}M parameters) on {self.device} for "
              f"{self.total_steps} steps ({self.steps_per_epoch} per epoch, {len(self.train_set)} studies); "
              f"run dir {self.run_dir}", flush=True)
        self.model.train()
        start, last_metrics, t0 = self.state.step, {}, time.time()
        progress = None
        if tc.progress:
            from tqdm import tqdm

            progress = tqdm(total=self.total_steps, initial=self.state.step, desc="train", dynamic_ncols=True,
                            mininterval=1.0)
        micro_per_epoch = self.steps_per_epoch * tc.grad_accum
        samples = 0
        while self.state.step < self.total_steps:
            batches = epoch_batches(len(self.train_set), cfg.data.batch_size, self.state.epoch, tc.seed,
                                    shuffle=True, drop_last=True)[:micro_per_epoch]
            if self.state.batch_in_epoch >= len(batches):  # saved exactly at an epoch's end
                self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
                continue
            loader = make_loader(self.train_set, batches[self.state.batch_in_epoch:], cfg.data.num_workers,
                                 cfg.model.max_views, self.tokenizer.pad_token_id)
            accumulated, loss_value = 0, float("nan")
            for batch in loader:
                self.state.batch_in_epoch += 1
                self._record_skips(batch.skipped)
                if len(batch) > 0:
                    batch.to(self.device)
                    with self._autocast():
                        out = self.task(batch)
                    (out["loss"] / tc.grad_accum).backward()
                    loss_value = float(out["loss"].detach())
                    samples += len(batch)
                accumulated += 1
                if accumulated < tc.grad_accum:
                    continue
                accumulated = 0
                grad_norm = self._optimizer_step()
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                step = self.state.step
                if step % tc.log_every == 0:
                    self.logger.log({"train/loss": loss_value, "train/lr": self.scheduler.get_last_lr()[0],
                                     "train/grad_norm": grad_norm}, step)
                if self.state.batch_in_epoch >= len(batches):  # the epoch's last step: roll over before saving
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                    if tc.eval_every == 0:
                        last_metrics = self._validate_and_save()
                        continue
                if (tc.eval_every and step % tc.eval_every == 0) or step == self.total_steps:
                    last_metrics = self._validate_and_save()
                elif tc.save_every and step % tc.save_every == 0:
                    self.save(f"step_{step:07d}", "step", None)
                    prune_checkpoints(self.run_dir, keep=tc.keep_checkpoints)
                if step >= self.total_steps:
                    break
            if self.state.step >= self.total_steps:
                break
        if progress is not None:
            progress.close()
        elapsed = time.time() - t0
        last = self.save("last", "last", last_metrics)
        summary = {"steps": self.state.step, "steps_this_run": self.state.step - start, "seconds": round(elapsed, 1),
                   "samples_per_second": round(samples / elapsed, 2) if elapsed > 0 else None,
                   "best_metric": {tc.select_metric: self.state.best_metric, "step": self.state.best_step},
                   "final_val_metrics": last_metrics, "skipped_studies": len(self.state.skipped),
                   "skipped": self.state.skipped, "truncated_reports": self.train_set.truncated,
                   "last_checkpoint": str(last),
                   "best_checkpoint": str(self.run_dir / "checkpoints" / "best") if self.state.best_step >= 0 else None}
        (self.run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        self.logger.close()
        if self.state.skipped:
            print(f"{len(self.state.skipped)} studies were skipped (see train_summary.json)", file=sys.stderr)
        return summary

    def _optimizer_step(self) -> float:
        tc = self.cfg.train
        grad_norm = 0.0
        if tc.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.state.step)
        return grad_norm


def train(cfg: ExperimentConfig, resume: str | None = None) -> dict[str, Any]:
    """Train `cfg`; `resume` is None, "auto" (newest checkpoint in the run directory) or a checkpoint path."""
    return Trainer(cfg, resume=resume).fit()


__all__ = ["Trainer", "train", "RunState", "Batch"]
