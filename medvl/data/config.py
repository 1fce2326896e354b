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
class ClipsConfig:
    """Where the clip CSVs of `data.source=clips` are and how their clips are split (`medvl.data.layouts.clips`)."""

    train: str = "train.csv"
    """CSV of the training clips (`path,start,end,label` and/or `x_pix,y_pix`), relative to `data.root`."""
    val: str = "val.csv"
    """CSV of the validation clips; a missing file means no validation split."""
    test: str = "test.csv"
    """CSV of the test clips; a missing file means no test split."""
    frames_root: str = ""
    """Folder the CSVs' clip `path`s are relative to (absolute paths are kept); empty = `data.root`."""
    tracks: str = ""
    """Medicane tracks CSV (`id_final` or `id_cyc_unico`, `time`, `x_pix`, `y_pix`, as medicanes_new_windows.csv):
    names each clip's cyclone from its folder name (end time and tile offset) when the CSV has no cyclone column."""
    split: str = "files"
    """files: each CSV is its split (a cyclone found in two of them is an error); cyclone: every CSV's rows pooled
    and split by a hash of the cyclone id, so all clips of one cyclone fall in one split."""

    def __post_init__(self) -> None:
        if self.split not in ("files", "cyclone"):
            raise ValueError(f"data.clips.split must be files or cyclone, got {self.split!r}")


@dataclass
class SynthClipsConfig:
    """Settings of the synthetic satellite clips that `data.source=clips_synthetic` draws when `data.root` is empty
    (`medvl.data.synth_clips`)."""

    n: int = 600
    """Number of clips."""
    seed: int = 0
    tile_size: int = 64
    """Side of a tile in pixels (a real tile is 224 px of a 1290x420 frame; 64 px keeps CPU training in minutes)."""
    frames: int = 16
    """Frames per clip."""
    minutes: int = 5
    """Minutes between frames (SEVIRI rapid scan)."""
    channels: int = 3
    """Bands per frame (3: airmass-RGB-like PNG frames; other counts are written as .npy)."""
    tracks: str = ""
    """Real medicane tracks CSV (medicanes_new_windows.csv) whose hourly centres drive the vortices; empty, or a
    file that is not there, = built-in smooth random tracks."""


SECTION_CHOICES = ("findings", "impression", "findings+impression", "findings|impression", "full")
CLEAN_CHOICES = ("none", "r2gen")
DEID_CHOICES = ("keep", "unify", "drop")


@dataclass
class ReportConfig:
    """How the target text is taken from raw reports and cleaned (`medvl.data.reports`); a prepared data set records
    these rules in its metadata so that evaluation scores against the same text."""

    section: str = "findings"
    """Part of a whole report used, for layouts that hold whole reports (openi, iu_csv, mimic_cxr_jpg):
    findings, impression, findings+impression (both, joined), findings|impression (findings, else the impression),
    full (everything). A study without the chosen section is kept as unusable and counted, with the reason."""
    clean: str = "none"
    """none (text as written) or r2gen (R2Gen's cleaning: lower-case, punctuation removed, " . " between sentences)."""
    deid: str = "keep"
    """De-identification placeholders (IU "XXXX", MIMIC "___"): keep, unify (all become XXXX) or drop."""
    max_words: int = 0
    """Cut reports to this many words after cleaning (0 = no limit)."""

    def __post_init__(self) -> None:
        for name, choices in (("section", SECTION_CHOICES), ("clean", CLEAN_CHOICES), ("deid", DEID_CHOICES)):
            if getattr(self, name) not in choices:
                value = getattr(self, name)
                raise ValueError(f"data.reports.{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.max_words < 0:
            raise ValueError(f"data.reports.max_words must be >= 0, got {self.max_words}")


VQA_VAL_SHARE = 1 / 8
"""Share of the images whose questions a VQA source moves from train to val when its data set has no validation file
(VQA-RAD never has one; SLAKE without validate.json): about the size of VQA-RAD's official test split (451 of 3,515
questions)."""


@dataclass
class MixtureEntry:
    """One data set of `data.mixture`: the fields of `DataConfig` that say where studies come from, per source."""

    source: str
    """Data source by name, as `data.source`."""
    root: str = ""
    """Its directory, as `data.root`."""
    name: str = ""
    """Prefix of its study ids ("NAME/ID"); empty = the source name. Two entries need different names."""
    manifest: str = ""
    """Its index file, as `data.manifest`."""
    caption: int = 0
    max_studies: int = 0
    """Use at most this many studies per split of this data set (0 = all)."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    reports: ReportConfig = field(default_factory=ReportConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    synth_clips: SynthClipsConfig = field(default_factory=SynthClipsConfig)

    @property
    def prefix(self) -> str:
        return self.name or self.source


@dataclass
class DataConfig:
    """Where studies come from and how they are batched.

    Several data sets read together (multitask training: reports + VQA + classification) are a mixture:
    `data.source=mixture` and `data.mixture` a list of entries (`MixtureEntry`: source, root, name, manifest, caption,
    max_studies and the per-source sections synth, reports, clips, synth_clips), e.g. in a recipe::

        data:
          source: mixture
          mixture:
            - {source: synthetic, root: data/synth}
            - {source: vqa_rad, root: ../shared/data/vqa_rad}
            - {source: iu_csv, root: data/iu_csv, reports: {section: impression}}

    Each entry is read as if it were `data.source` (its own report rules included), its study ids are prefixed
    "NAME/" (the entry's name, default its source) so they cannot collide, and the splits are merged: train is every
    entry's train, and so on. An unknown source in the list is an error naming it and the known ones.
    """

    source: str = "synthetic"
    """Data source by name (see `medvl.data.sources.SOURCES` and `medvl data prepare --help`): synthetic, iu_xray,
    openi, iu_csv, mimic_cxr, mimic_cxr_jpg, xraygpt, coco_captions, flickr_captions, manifest, dicom, prepared;
    with labels for classification: nih (ChestX-ray14), chexpert, image_folder (a folder per class), and a manifest
    with labels; satellite clips (labels and/or point targets): clips (the medicane CSVs), clips_synthetic; visual
    question answering (one study per question): vqa_rad, slake, pathvqa, cxr_vqa_synthetic; text-only
    summarization (findings -> impression): report_summaries; several of these together: mixture."""
    root: str = "data/synth"
    """Directory of the data set in the layout of `source` (R2Gen: annotation.json plus images/)."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    reports: ReportConfig = field(default_factory=ReportConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    """The clip CSVs of data.source=clips."""
    synth_clips: SynthClipsConfig = field(default_factory=SynthClipsConfig)
    """The synthetic satellite clips of data.source=clips_synthetic."""
    manifest: str = ""
    """The index file, for sources that take one (manifest: a .jsonl/.csv; coco_captions: the Karpathy JSON;
    flickr_captions: the captions CSV; xraygpt: filter_cap.json; nih: the Data_Entry CSV); relative to `root`; empty =
    the layout's default."""
    caption: int = 0
    """Which caption of an image with several is its `report` (0 = the first); all are kept as its references."""
    every_reference: bool = True
    """Train on every reference of a study that has several (COCO/Flickr's five captions: each is a sample of the
    epoch); false = only the `data.caption` one. Evaluation always scores against all references."""
    batch_size: int = 16
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the main process)."""
    cache_images: bool = True
    """Keep decoded, resized images in memory after the first epoch."""
    strict: bool = False
    """Fail on the first unusable study (missing/corrupt image, empty report) instead of skipping and counting it."""
    group_by_length: bool = False
    """Training batches of similar target length (less padding): each run of 50 global batches of the epoch's shuffled
    order is sorted by length, cut into global batches, and those are shuffled (Hugging Face's `group_by_length`).
    Needs a task whose training set knows its lengths (report generation). Off by default: on the quickstart, where a
    report's length follows its findings, it cut the decoder's padded positions from 1.70 to 1.03 per real token but
    test micro-F1 fell from 0.715 to 0.502 (one run each), as batches sorted by length are also sorted by finding."""
    max_studies: int = 0
    """Use at most this many studies per split (0 = all); for quick experiments. A mixture takes them in turn from
    each entry."""
    mixture: list[MixtureEntry] = field(default_factory=list)
    """The data sets of `data.source=mixture` (see the class docstring); empty for any other source."""

    def __post_init__(self) -> None:
        if self.mixture and self.source != "mixture":
            raise ValueError(
                f"data.mixture is set but data.source is {self.source!r}; set data.source=mixture to "
                "read the listed data sets together, or drop data.mixture"
            )
        if self.source == "mixture" and not self.mixture:
            raise ValueError(
                "data.source=mixture needs data.mixture: a list of entries such as "
                "[{source: synthetic, root: data/synth}, {source: vqa_rad, root: DIR}]"
            )
        names = [m.prefix for m in self.mixture]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"data.mixture lists {repeated[0]!r} more than once; give the entries different `name`s "
                "(their study-id prefixes)"
            )
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
