"""Typed configuration of report generation (used by validation, `medvl evaluate`, `medvl predict`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationConfig:
    num_beams: int = 3
    """Beam width (1 = greedy)."""
    max_new_tokens: int = 128
    """Longest report generated, in tokens."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a report (0 = off)."""
    length_penalty: float = 1.0
    """Beam score = log-prob / length**length_penalty."""
    batch_size: int = 32
    """Studies generated at once."""

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"generation.num_beams must be >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"generation.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
