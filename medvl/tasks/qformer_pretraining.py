"""Q-Former pretraining (BLIP-2 stage 1, how XrayGPT's Q-Former was made): image-text contrastive, image-text
matching with hard negatives and image-grounded generation on image-report pairs, no LLM involved.

Contract: the xraygpt family's second task (`task.name: qformer_pretraining`); it turns on the model's Q-Former text
side (`model.qformer_text`, see `medvl.models.qformer_text`) and needs `model.bridge=qformer`.
- `task(batch)` -> {"loss": itc + itm + itg (BLIP-2 weighs them equally), "weight": studies, and each loss}.
- Validation: per batch of studies, the three losses and `itc_top1` (image-to-text retrieval accuracy within the
  batch, chance = 1 / batch size); the best checkpoint is chosen on `loss`.
- The run's checkpoint starts report training: `medvl train xraygpt_tiny_synthetic train.init_from=RUN` (the text
  side is left out there, `XrayGPT.init_state`). The stage writes no reports, so `predict` and `serve` refuse it.

Tokenizer, data and batches are those of the report tasks (`ReportTask`); its LLM is built (as the family's model
is) but never run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medvl.data.dataset import Batch
from medvl.models.qformer_text import first_stage_losses
from medvl.tasks.report_generation import ReportTask

LOSSES = ("itc", "itm", "itg")


class QFormerPretrainingTask(ReportTask):
    name = "qformer_pretraining"
    default_select_metric = "loss"
    default_select_mode = "min"
    headline_metrics = ("loss", *LOSSES, "itc_top1")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        raw = getattr(model, "module", model)
        if getattr(raw, "qformer_text", None) is None:
            raise ValueError(
                "task qformer_pretraining needs an xraygpt model with model.bridge=qformer and "
                "model.qformer_text=true (the runner sets it; a model built by hand must too)"
            )

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        return {**super().model_fields(assets), "qformer_text": True}

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raw = getattr(self.model, "module", self.model)
        return first_stage_losses(
            raw, batch.images, batch.view_ids, batch.view_mask, batch.input_ids, batch.attention_mask
        )

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self._losses(batch)
        loss = out["itc"] + out["itm"] + out["itg"]
        return {"loss": loss, "weight": torch.tensor(len(batch)), **{k: out[k].detach() for k in LOSSES}}

    @torch.no_grad()
    def outputs(self, batch: Batch) -> list[Any]:
        """One row per study holding its batch's losses and retrieval accuracy (they are batch-level measures)."""
        out = {k: float(v) for k, v in self._losses(batch).items()}
        out["loss"] = out["itc"] + out["itm"] + out["itg"]
        return [{"id": sid, **out, "batch_size": len(batch)} for sid in batch.ids]

    def validation_outputs(self, batch: Batch) -> list[Any]:
        return self.outputs(batch)

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        if not rows:
            return {}
        out = {k: float(np.mean([r[k] for r in rows])) for k in ("loss", *LOSSES, "itc_top1")}
        out["itc_top1_chance"] = float(np.mean([1.0 / r["batch_size"] for r in rows]))
        return out

    def scores_text(self) -> bool:
        return False  # its evaluation reports the stage-1 losses, not NLG scores

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Any]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = outputs[list(outputs)[-1]]
        return {"n_studies": len(rows), **self.validation_metrics(rows)}, rows

    def write_evaluation(
        self, out: Any, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        from medvl.jsonl import write_evaluation_files

        write_evaluation_files(out, result, rows)

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        return "  ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float))

    def predict(self, batch: Batch) -> list[dict[str, Any]]:
        raise NotImplementedError(
            "a qformer_pretraining checkpoint writes no reports: train a report model from it "
            "(medvl train xraygpt_tiny_synthetic train.init_from=RUN) and serve that"
        )

    def generate(self, batch: Batch, gen: Any) -> list[str]:
        self.predict(batch)
        return []


__all__ = ["QFormerPretrainingTask"]
