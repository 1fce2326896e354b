"""Typed configuration of the data layer and the tokenizer (the one source of their defaults).

Image size, views per study and report length belong to the model (`model.image_size`, `model.max_views`,
`model.max_len`): they are properties of what the model was trained on and travel with its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SynthConfig:
    """Settings of the synthetic data set that `data.source=synthetic` generates when `data.root` is empty."""

    n: int = 2500
    """Number of studies."""
    seed: int = 0
    image_size: int = 256
    """Side of the written PNGs in pixels (the model resizes to model.image_size)."""
    lateral: bool = True
    """Also draw a lateral view for every study."""


@dataclass
class DataConfig:
    """Where studies come from and how they are batched."""

    source: str = "synthetic"
    """Data source by name: synthetic or iu_xray (see `medvl.data.sources.SOURCES`)."""
    root: str = "data/synth"
    """Directory in the R2Gen layout: annotation.json plus images/."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    batch_size: int = 16
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the main process)."""
    cache_images: bool = True
    """Keep decoded, resized images in memory after the first epoch."""
    strict: bool = False
    """Fail on the first unusable study (missing/corrupt image, empty report) instead of skipping and counting it."""
    max_studies: int = 0
    """Use at most this many studies per split (0 = all); for quick experiments."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TokenizerConfig:
    """The report tokenizer: trained on the training reports unless `path` names an existing one."""

    path: str = ""
    """Directory with tokenizer.json (e.g. a previous run's tokenizer/); empty = train a new byte-level BPE."""
    vocab_size: int = 1200
    min_frequency: int = 2
