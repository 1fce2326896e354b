"""Tiny data sets in every supported layout, written under a test's tmp_path (images of a few pixels)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Four IU X-ray studies: uid -> (findings, impression, number of views). uid 3 has no FINDINGS section.
IU = {
    "1": ("The heart is normal in size. No pleural effusion.", "Normal chest.", 2),
    "2": ("Mild cardiomegaly. XXXX opacity in the left base.", "Cardiomegaly.", 2),
    "3": ("", "No acute disease.", 1),
    "4": ("No pneumothorax. Lungs are clear.", "Clear lungs.", 2),
}


def png(path: Path, value: int = 100, shape: tuple[int, int] = (24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


def jpg(path: Path, value: int = 100, shape: tuple[int, int] = (24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path, quality=95)
    return path


def iu_image_names(uid: str, views: int) -> list[str]:
    return [f"CXR{uid}_1_IM-000{uid}-{1001 + 1000 * k}" for k in range(views)]


def write_openi(root: Path) -> Path:
    """The OpenI layout: ecgen-radiology/<uid>.xml + NLMCXR_png/<image id>.png."""
    for uid, (findings, impression, views) in IU.items():
        parents = "".join(
            f'<parentImage id="{n}"><caption>Xray Chest PA and Lateral</caption></parentImage>'
            for n in iu_image_names(uid, views)
        )
        sections = (
            f'<AbstractText Label="COMPARISON">None.</AbstractText>'
            f'<AbstractText Label="INDICATION">Cough.</AbstractText>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
        )
        xml = (
            f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{uid}"/><MedlineCitation><Article>'
            f"<Abstract>{sections}</Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>"
            f"{parents}</eCitation>"
        )
        (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
        (root / "ecgen-radiology" / f"{uid}.xml").write_text(xml)
        for k, name in enumerate(iu_image_names(uid, views)):
            png(root / "NLMCXR_png" / f"{name}.png", int(uid) * 10 + k)
    return root


def write_iu_csv(root: Path) -> Path:
    """The Kaggle CSV layout, lateral rows listed first to check the frontal-first ordering."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "indiana_reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        for uid, (findings, impression, _) in IU.items():
            w.writerow([uid, "normal", "normal", "Xray Chest PA and Lateral", "Cough.", "None.", findings, impression])
    with open(root / "indiana_projections.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "filename", "projection"])
        for uid, (_, _, views) in IU.items():
            names = iu_image_names(uid, views)
            for k in reversed(range(views)):
                w.writerow([uid, f"{names[k]}.dcm.png", "Frontal" if k == 0 else "Lateral"])
                png(root / "images" / "images_normalized" / f"{names[k]}.dcm.png", int(uid) * 10 + k)
    return root


def write_r2gen(root: Path, findings_only: bool = True) -> Path:
    """The R2Gen layout of the same studies (only those with findings, as R2Gen builds it)."""
    records = []
    for uid, (findings, _, views) in IU.items():
        if not findings:
            continue
        sid = f"CXR{uid}"
        paths = [f"{sid}/{k}.png" for k in range(views)]
        for k, p in enumerate(paths):
            png(root / "images" / p, int(uid) * 10 + k)
        records.append({"id": sid, "report": findings, "image_path": paths, "split": "train"})
    (root / "annotation.json").write_text(json.dumps({"train": records}))
    return root


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The heart
 is normal in size.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def write_mimic_jpg(root: Path) -> Path:
    """MIMIC-CXR-JPG: 3 studies (one without a FINDINGS section), gzipped metadata, plain split + CheXpert CSVs."""
    import gzip

    studies = [
        ("10000032", "50414267", [("02aa", "PA"), ("174c", "LATERAL")], "train", MIMIC_REPORT),
        ("10000032", "53189527", [("2a2d", "AP")], "validate", MIMIC_REPORT.replace("no focal", "a focal")),
        ("10000764", "57375967", [("096", "PA")], "test", "IMPRESSION: No acute process."),
    ]
    root.mkdir(parents=True, exist_ok=True)
    meta = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns"]
    split = ["dicom_id,study_id,subject_id,split"]
    chex = ["subject_id,study_id,Atelectasis,Cardiomegaly,No Finding"]
    for subject, study, images, which, report in studies:
        d = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        for k, (dicom, view) in reversed(list(enumerate(images))):
            jpg(d / f"{dicom}.jpg", 50 + k)
            meta.append(f"{dicom},{subject},{study},CHEST,{view},24,20")
            split.append(f"{dicom},{study},{subject},{which}")
        d.with_suffix(".txt").write_text(report)
        chex.append(f"{subject},{study},,-1.0,1.0")
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
        f.write("\n".join(meta) + "\n")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(split) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join(chex) + "\n")
    return root


def write_xraygpt(root: Path) -> Path:
    """filter_cap.json with three ids: one exact, one whose file is a .png in other case, one with no file."""
    root.mkdir(parents=True, exist_ok=True)
    jpg(root / "image" / "a1.jpg", 10)
    png(root / "image" / "B2.png", 20)
    anns = [
        {"image_id": "a1", "caption": "the heart is normal."},
        {"image_id": "b2", "caption": "effusion."},
        {"image_id": "CXR99_IM-9", "caption": "no file."},
    ]
    (root / "filter_cap.json").write_text(json.dumps({"annotations": anns}))
    return root


def write_coco(root: Path) -> Path:
    images = [
        {
            "filepath": "val2014",
            "filename": "a.jpg",
            "split": "restval",
            "cocoid": 1,
            "sentences": [{"raw": "A dog."}, {"raw": "A brown dog."}],
        },
        {"filepath": "val2014", "filename": "b.jpg", "split": "test", "cocoid": 2, "sentences": [{"raw": "A cat."}]},
    ]
    for rec in images:
        jpg(root / rec["filepath"] / rec["filename"], rec["cocoid"] * 40)
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


def write_flickr(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "image_name| comment_number| comment",
        "1.jpg| 0| A dog runs .",
        "1.jpg| 1| A dog .",
        "2.jpg| 0| A cat sits .",
        "2.jpg| 1 A cat .",
    ]  # the last row has Kaggle's missing "|"
    (root / "results.csv").write_text("\n".join(lines) + "\n")
    jpg(root / "flickr30k_images" / "1.jpg", 30)
    jpg(root / "flickr30k_images" / "2.jpg", 60)
    return root


def write_dicom(path: Path, study_uid: str, view: str, pixels: bool = True, value: int = 7) -> Path:
    """A minimal uncompressed 16-bit grayscale DICOM file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.PatientID = "P1"
    ds.Modality = "DX"
    ds.ViewPosition = view
    if pixels:
        arr = np.arange(16 * 12, dtype=np.uint16).reshape(16, 12) * value
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
