"""Report generation: images -> report text, trained by teacher forcing (the captioner family).

The task contract (`medvl.tasks.base.Task`) for every text-generating report task:
- assets: a byte-level BPE tokenizer trained on the training reports (or loaded from `tokenizer.path`), saved in the
  run folder and in every checkpoint; it sets the model's vocab_size and pad_id;
- data: `ReportDataset` / `collate` (`medvl.data.dataset`): views + BOS report EOS token ids;
- loss: cross-entropy on the shifted targets, padding ignored, `train.label_smoothing`;
- validation: loss per token, plus greedy reports of the first `train.eval_max_studies` studies scored by
  `medvl.evaluate.scoring.score_reports` (BLEU, CheXpert and ground-truth F1); best checkpoint on
  `train.select_metric` (default ce_14_micro_f1);
- evaluation: reports generated with the configured decoding, scored by `medvl.evaluate.reports` next to the
  majority-report baseline (metrics.json, predictions.jsonl, report.html);
- prediction record: {"report", "findings"} (CheXpert observations read from the report);
- saliency: the summed log-probability of the report (`log_likelihood`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.dataset import Batch, ReportDataset, Sample, collate
from medvl.data.study import Study
from medvl.data.tokenizer import (
    decode_report,
    encode_report,
    load_tokenizer,
    special_tokens,
    tokenizer_from_json,
    tokenizer_to_json,
    train_bpe_tokenizer,
)
from medvl.infer.config import GenerationConfig
from medvl.tasks.base import Task


def sampling_options(gen: GenerationConfig) -> dict:
    """The sampling keywords of `generate` (none when not sampling, so models without sampling keep working)."""
    if not gen.do_sample:
        return {}
    return {"do_sample": True, "temperature": gen.temperature, "top_k": gen.top_k, "top_p": gen.top_p, "seed": gen.seed}


class ReportTask(Task):
    """What every report-writing task shares: tokenizer, data, validation, evaluation and prediction records.
    Subclasses define the loss (`__call__`), `generate` and `log_likelihood`."""

    needs = ("report",)
    default_select_metric = "ce_14_micro_f1"
    default_select_mode = "max"
    endpoint = "reports"
    prediction_fields = {
        "report": (str, "the generated report"),
        "findings": (dict[str, str], "CheXpert observations mentioned -> positive/negative/uncertain"),
    }
    headline_metrics = ("loss", "bleu_4", "gt_micro_f1", "ce_14_micro_f1")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        cfg = self.cfg
        self.tokenizer = assets
        self.label_smoothing = cfg.train.label_smoothing
        self.generation: GenerationConfig = cfg.generation

    @classmethod
    def usable(cls, study: Study) -> str:
        return "" if study.report.strip() else "empty report"

    # ------------------------------------------------------------------------------------------------ assets
    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> Any:
        tc = cfg.tokenizer
        if tc.path:
            return load_tokenizer(tc.path)
        if save_dir is None:  # another rank: read what rank 0 trained and saved
            return load_tokenizer(str(Path(cfg.train.output_dir) / "tokenizer"))
        tok = train_bpe_tokenizer([s.report for s in train], vocab_size=tc.vocab_size, min_frequency=tc.min_frequency)
        tok.save_pretrained(str(save_dir / "tokenizer"))
        return tok

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> Any:
        return tokenizer_from_json(metadata["tokenizer"], metadata.get("tokenizer_specials"))

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        return {"vocab_size": len(assets), "pad_id": assets.pad_token_id}

    def metadata(self) -> dict[str, Any]:
        return {"tokenizer": tokenizer_to_json(self.tokenizer), "tokenizer_specials": special_tokens(self.tokenizer)}

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> ReportDataset:
        """Training: a study with several references gives one sample per reference (`data.every_reference`)."""
        mc = self.cfg.model
        return ReportDataset(
            studies,
            self.tokenizer,
            mc.image_size,
            mc.max_views,
            mc.max_len,
            cache_images=self.cfg.data.cache_images,
            strict=self.cfg.data.strict,
            channels=mc.in_chans,
            every_reference=training and self.cfg.data.every_reference,
        )

    def collate(self, items: Sequence[Any]) -> Batch:
        return collate(items, max_views=self.cfg.model.max_views, pad_id=self.tokenizer.pad_token_id)

    # ------------------------------------------------------------------------------------ validate / evaluate
    def generate(self, batch: Batch, gen: GenerationConfig) -> list[str]:
        raise NotImplementedError

    def validation_outputs(self, batch: Batch) -> list[Any]:
        """Greedy reports during training (fast); `medvl evaluate` uses the configured decoding."""
        import dataclasses

        return self._rows(batch, dataclasses.replace(self.generation, num_beams=1))

    def outputs(self, batch: Batch) -> list[Any]:
        return self._rows(batch, self.generation)

    def _rows(self, batch: Batch, gen: GenerationConfig) -> list[dict[str, Any]]:
        hyps = self.generate(batch, gen)
        labels = batch.labels.cpu().numpy() if batch.labels is not None else None
        refs = batch.references or [(r,) for r in batch.reports]
        return [
            {
                "id": sid,
                "reference": batch.reports[k],
                "references": list(refs[k]),
                "generated": hyps[k],
                "labels": None if labels is None else labels[k],
            }
            for k, sid in enumerate(batch.ids)
        ]

    @staticmethod
    def _references(rows: Sequence[dict[str, Any]]) -> list[str | list[str]]:
        """One text per study, or every reference where a study has several (scored against all)."""
        return [r["references"] if len(r.get("references", ())) > 1 else r["reference"] for r in rows]

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        from medvl.evaluate.scoring import score_reports

        if not rows:
            return {}
        truth = np.stack([r["labels"] for r in rows]) if all(r["labels"] is not None for r in rows) else None
        headline, _ = score_reports(self._references(rows), [r["generated"] for r in rows], truth)
        return headline

    def scores_text(self) -> bool:
        return True

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from medvl.evaluate.reports import evaluate_generated

        rows = list(outputs.values())[-1]
        truth = np.stack([r["labels"] for r in rows]) if all(r["labels"] is not None for r in rows) else None
        paths = {s.id: [str(p) for p in s.image_paths] for split in studies.values() for s in split}
        n = len(rows)
        result, predictions = evaluate_generated(
            [r["id"] for r in rows],
            self._references(rows),
            [r["generated"] for r in rows],
            truth,
            [s.report for s in studies.get("train", [])],
            options,
            image_paths=paths,
        )
        return result | {"n_studies": n}, predictions

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        from medvl.evaluate.reports import write_report_outputs

        write_report_outputs(out, result, rows, options, title)

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        from medvl.evaluate.reports import format_tables

        return format_tables(result)

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> Batch:
        bos = self.tokenizer.bos_token_id
        return self.collate([Sample(s.id, s.pixels, s.view_ids, [bos], "", None) for s in studies])

    def predict(self, batch: Batch) -> list[dict[str, Any]]:
        from medvl.infer.batch_predict import report_findings

        return [{"report": r, "findings": report_findings(r)} for r in self.generate(batch, self.generation)]

    def explain_score(self, batch: Batch, record: dict[str, Any]) -> torch.Tensor:
        max_len = getattr(getattr(self.model, "config", None), "max_len", 512)
        ids, _ = encode_report(self.tokenizer, record["report"], max_len)
        batch.input_ids = torch.tensor([ids], device=batch.images.device)
        batch.attention_mask = torch.ones_like(batch.input_ids)
        return self.log_likelihood(batch)

    def log_likelihood(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError


class ReportGenerationTask(ReportTask):
    """Teacher-forced report generation with an encoder-decoder (the captioner family)."""

    name = "report_generation"

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch.input_ids[:, :-1], batch.input_ids[:, 1:]
        target_mask = batch.attention_mask[:, 1:].bool()
        # Logits only where a target is scored: padding is never projected to the vocabulary (the mean over the
        # scored tokens is what cross_entropy with ignore_index over all positions gives).
        logits = self.model(
            batch.images, batch.view_ids, batch.view_mask, inputs, batch.attention_mask[:, :-1], logits_at=target_mask
        )
        loss = F.cross_entropy(logits.float(), targets[target_mask], label_smoothing=self.label_smoothing)
        n_tokens = target_mask.sum()
        return {"loss": loss, "weight": n_tokens, "n_tokens": n_tokens}

    def log_likelihood(self, batch: Batch) -> torch.Tensor:
        """Summed log-probability of the batch's reports under teacher forcing (saliency maps explain it)."""
        inputs, targets = batch.input_ids[:, :-1], batch.input_ids[:, 1:]
        logits = self.model(batch.images, batch.view_ids, batch.view_mask, inputs, batch.attention_mask[:, :-1])
        logp = logits.float().log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        return (logp * batch.attention_mask[:, 1:]).sum()

    @torch.inference_mode()
    def generate(self, batch: Batch, gen: GenerationConfig) -> list[str]:
        ids = self.model.generate(
            batch.images,
            batch.view_ids,
            batch.view_mask,
            bos_id=self.tokenizer.bos_token_id,
            eos_id=self.tokenizer.eos_token_id,
            max_new_tokens=gen.max_new_tokens,
            num_beams=gen.num_beams,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            length_penalty=gen.length_penalty,
            **sampling_options(gen),
        )
        return [decode_report(self.tokenizer, row.tolist()) for row in ids]


__all__ = ["ReportGenerationTask", "ReportTask", "sampling_options"]
