"""IU X-ray in the original OpenI layout (the two archives of https://openi.nlm.nih.gov/imgs/collections/):

    ROOT/ecgen-radiology/1.xml ...   NLMCXR_reports.tgz: one XML report per study (`reports/` is accepted too)
    ROOT/NLMCXR_png/CXR1_1_IM-0001-3001.png ...   NLMCXR_png.tgz: the images (`images/` is accepted too)

A report's `<uId id="CXR1">` is the study id, its `<AbstractText Label="FINDINGS|IMPRESSION|INDICATION|COMPARISON">`
the sections, and each `<parentImage id="...">` one view, `<id>.png`, in document order (frontal first in the
collection; the XML names no view, so the first image is frontal and the others lateral). The split is
`HASH_SPLIT` of the id, the same as the CSV layout's (`iu_csv`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.reports import select_section
from medvl.data.study import DataSourceError, Study, group_splits, hash_split, view_id

LAYOUT = "ROOT/ecgen-radiology/*.xml (NLMCXR_reports.tgz) and ROOT/NLMCXR_png/*.png (NLMCXR_png.tgz)"


def _first_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataSourceError(
        f"missing {what}: none of {', '.join(str(root / n) for n in names)} is a directory. "
        f"Expected layout: {LAYOUT} (medvl data download iu_xray --out ROOT fetches both)"
    )


def _text(node: ET.Element | None) -> str:
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def read_xml(path: Path, images: Path, section: str) -> Study:
    """One study from one OpenI XML report; an unparsable file becomes an unusable study named after the file."""
    try:
        doc = ET.parse(path).getroot()
    except ET.ParseError as e:
        return Study(
            f"file:{path.name}",
            (),
            "",
            hash_split(path.stem),
            (),
            None,
            problem=f"cannot parse the XML report {path}: {e}",
        )
    uid_node = doc.find("uId")
    sid = uid_node.get("id", "") if uid_node is not None else ""
    sid = sid or f"CXR{path.stem}"
    sections = {n.get("Label", "").upper(): _text(n) for n in doc.iter("AbstractText")}
    report, problem = select_section("", section, sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""))
    if section == "full":
        report = " ".join(f"{k}: {v}" for k, v in sections.items() if v)
        problem = "" if report else "report has no text"
    image_ids = [n.get("id", "") for n in doc.iter("parentImage") if n.get("id")]
    if not image_ids and not problem:
        problem = f"the report {path.name} lists no images (no <parentImage>)"
    meta = {
        "uid": sid,
        "mesh": [_text(n) for n in doc.iter("major")],
        "indication": sections.get("INDICATION", ""),
        "comparison": sections.get("COMPARISON", ""),
        "report_file": path.name,
    }
    return Study(
        sid,
        tuple(images / f"{i}.png" for i in image_ids),
        report,
        hash_split(sid),
        tuple(view_id(None, k) for k in range(len(image_ids))),
        None,
        problem=problem,
        meta=meta,
    )


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of an OpenI-layout directory (see the module docstring)."""
    root = Path(cfg.root)
    reports = _first_dir(root, ("ecgen-radiology", "reports"), "OpenI XML reports")
    images = _first_dir(root, ("NLMCXR_png", "images"), "OpenI PNG images")
    files = sorted(reports.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataSourceError(f"no *.xml report in {reports}. Expected layout: {LAYOUT}")
    return group_splits(read_xml(f, images, cfg.reports.section) for f in files)
