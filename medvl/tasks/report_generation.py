"""Report generation: (model, batch) -> {"loss", ...}, and batch -> generated report texts.

The runner only calls `task(batch)["loss"]`; this module owns everything specific to teacher-forced report
generation (shifted targets, padding ignored in the loss, label smoothing, decoding back to text).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.dataset import Batch
from medvl.data.tokenizer import decode_report
from medvl.infer.config import GenerationConfig


def sampling_options(gen: GenerationConfig) -> dict:
    """The sampling keywords of `generate` (none when not sampling, so models without sampling keep working)."""
    if not gen.do_sample:
        return {}
    return {"do_sample": True, "temperature": gen.temperature, "top_k": gen.top_k, "top_p": gen.top_p,
            "seed": gen.seed}


class ReportGenerationTask:
    supports_chat = False
    """Report generation answers no follow-up questions. A dialogue family's task sets this to True and has
    `chat(batch, history: [(question, answer)], question, gen) -> str`; the demo then shows a chat."""

    def __init__(self, model: nn.Module, tokenizer, label_smoothing: float = 0.0) -> None:  # noqa: ANN001
        self.model = model
        self.tokenizer = tokenizer
        self.label_smoothing = label_smoothing

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch.input_ids[:, :-1], batch.input_ids[:, 1:]
        target_mask = batch.attention_mask[:, 1:].bool()
        logits = self.model(batch.images, batch.view_ids, batch.view_mask, inputs, batch.attention_mask[:, :-1])
        targets = targets.masked_fill(~target_mask, -100)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                               label_smoothing=self.label_smoothing)
        return {"loss": loss, "n_tokens": target_mask.sum()}

    def log_likelihood(self, batch: Batch) -> torch.Tensor:
        """Summed log-probability of the batch's reports under teacher forcing (saliency maps explain it)."""
        inputs, targets = batch.input_ids[:, :-1], batch.input_ids[:, 1:]
        logits = self.model(batch.images, batch.view_ids, batch.view_mask, inputs, batch.attention_mask[:, :-1])
        logp = logits.float().log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        return (logp * batch.attention_mask[:, 1:]).sum()

    @torch.inference_mode()
    def generate(self, batch: Batch, gen: GenerationConfig) -> list[str]:
        ids = self.model.generate(
            batch.images, batch.view_ids, batch.view_mask,
            bos_id=self.tokenizer.bos_token_id, eos_id=self.tokenizer.eos_token_id,
            max_new_tokens=gen.max_new_tokens, num_beams=gen.num_beams,
            no_repeat_ngram_size=gen.no_repeat_ngram_size, length_penalty=gen.length_penalty,
            **sampling_options(gen),
        )
        return [decode_report(self.tokenizer, row.tolist()) for row in ids]
