"""Procedural synthetic chest X-ray data set: radiograph-like images, ground-truth finding labels and reports.

`generate_dataset(out_dir, n, seed=...)` writes the R2Gen IU X-ray layout (annotation.json + images/) that the
`iu_xray` source reads, plus dataset_info.json. Modules: `sampling` (labels and attributes), `anatomy` (normal chest
drawing), `lesions` (finding drawing), `reports` (report grammar), `generate` (orchestration, files, processes).
Importing this package only imports numpy and Pillow.
"""

from medvl.data.synth.generate import generate_dataset, make_study, render_study
from medvl.data.synth.reports import write_report
from medvl.data.synth.sampling import PREVALENCE, StudySpec, sample_labels, sample_study

__all__ = [
    "PREVALENCE",
    "StudySpec",
    "generate_dataset",
    "make_study",
    "render_study",
    "sample_labels",
    "sample_study",
    "write_report",
]
