"""Optional CheXbert labeler (Smit et al. 2020) from weights the user has: the CheXpert 14 from a BERT classifier.

Contract: `CheXbertLabeler(checkpoint, tokenizer_dir)` loads the published `chexbert.pth` (a training checkpoint whose
`model_state_dict` holds `module.bert.*` and `module.linear_heads.{0..13}.*`) and a BERT WordPiece tokenizer folder
(`vocab.txt`, e.g. a local copy of bert-base-uncased); `label(texts)` returns the 14 observations of `CHEXPERT_14`
-> "positive" / "negative" / "uncertain" / None per report, like the rule-based labeler, so the same clinical metrics
apply (`chexbert_14_*`, `chexbert_5_*` in metrics.json).

- Nothing is downloaded: both paths are local, and a missing one raises `CheXbertUnavailableError` with what to pass.
- The checkpoint is read with `torch.load(weights_only=True)` (tensors and plain containers only, never code).
- The BERT geometry (vocabulary, width, depth, positions) is read from the tensor shapes, so the real bert-base
  checkpoint and the tiny ones the tests write both load; the attention heads are width / 64 (12 for bert-base).
- Heads 0..12 classify blank / positive / negative / uncertain, head 13 ("No Finding") blank / positive, as in the
  CheXbert code; reports are stripped, whitespace-collapsed and cut to 512 tokens, as CheXbert does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvl.evaluate.chexpert import CHEXPERT_14
from medvl.evaluate.labeler import NEGATIVE, POSITIVE, UNCERTAIN, UNCERTAIN_POLICIES

_CLASSES = (None, POSITIVE, NEGATIVE, UNCERTAIN)
HOW_TO = (
    "pass --chexbert PATH/chexbert.pth --chexbert-tokenizer DIR (a folder with the bert-base-uncased "
    "vocab.txt); the weights are published by Stanford ML Group with the CheXbert paper"
)


class CheXbertUnavailableError(RuntimeError):
    """CheXbert cannot be used with what was given; the message says what is missing."""


def _state_dict(checkpoint: Path) -> dict:
    import torch

    if not checkpoint.is_file():
        raise CheXbertUnavailableError(f"CheXbert checkpoint {checkpoint} not found: {HOW_TO}")
    try:
        blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code, a truncated file...
        raise CheXbertUnavailableError(
            f"{checkpoint} is not a readable CheXbert checkpoint ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    state = blob.get("model_state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not any("linear_heads.13" in k for k in state):
        raise CheXbertUnavailableError(f"{checkpoint} does not hold CheXbert weights (no linear_heads.0-13)")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


class CheXbertLabeler:
    """CheXbert on CPU or GPU; see the module docstring."""

    name = "CheXbert (BERT classifier, user-supplied weights)"

    def __init__(
        self, checkpoint: str | Path, tokenizer_dir: str | Path | None, device: str = "cpu", batch_size: int = 32
    ) -> None:
        import torch
        from torch import nn
        from transformers import BertConfig, BertModel, BertTokenizer

        if tokenizer_dir is None:
            raise CheXbertUnavailableError(f"CheXbert needs its WordPiece tokenizer: {HOW_TO}")
        tokenizer_dir = Path(tokenizer_dir)
        tokenizer_dir = tokenizer_dir.parent if tokenizer_dir.name == "vocab.txt" else tokenizer_dir
        if not (tokenizer_dir / "vocab.txt").is_file():
            raise CheXbertUnavailableError(f"no vocab.txt in {tokenizer_dir}: {HOW_TO}")
        state = _state_dict(Path(checkpoint))
        words = state["bert.embeddings.word_embeddings.weight"]
        hidden = words.shape[1]
        layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
        config = BertConfig(
            vocab_size=words.shape[0],
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=max(1, hidden // 64),
            intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
            max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
        )
        self.bert = BertModel(config, add_pooling_layer="bert.pooler.dense.weight" in state)
        self.heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])
        module = nn.ModuleDict({"bert": self.bert, "linear_heads": self.heads})
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheXbertUnavailableError(
                f"{checkpoint} does not match the CheXbert architecture: missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}"
            )
        self.tokenizer = BertTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        self.max_length = min(512, config.max_position_embeddings)
        self.device, self.batch_size = torch.device(device), batch_size
        module.to(self.device).eval()

    def label(self, texts: Sequence[str]) -> list[dict[str, str | None]]:
        """The 14 observations of each report."""
        import torch

        out: list[dict[str, str | None]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [" ".join(t.strip().split()) for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                cls = self.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0][:, 0]
                classes = [head(cls).argmax(-1).tolist() for head in self.heads]
            for i in range(len(chunk)):
                out.append({name: _CLASSES[classes[k][i]] for k, name in enumerate(CHEXPERT_14)})
        return out

    def binary(self, texts: Sequence[str], uncertain: str = "positive") -> np.ndarray:
        """int8 [len(texts), 14]; uncertain counts as `uncertain` ("positive" or "negative")."""
        value = {POSITIVE: 1, UNCERTAIN: UNCERTAIN_POLICIES[uncertain], NEGATIVE: 0, None: 0}
        return np.array([[value[lab[n]] for n in CHEXPERT_14] for lab in self.label(texts)], dtype=np.int8).reshape(
            len(texts), len(CHEXPERT_14)
        )


__all__ = ["HOW_TO", "CheXbertLabeler", "CheXbertUnavailableError"]
