"""`medvl data ...`: draw the synthetic set or the synthetic satellite clips, prepare real data sets, download IU
X-ray, and data set statistics.

Each subcommand parses its arguments and calls one library function; `add_data_commands` adds them to the `medvl`
parser (medvl/cli/__init__.py), which also turns user errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any


def cmd_synth(args: argparse.Namespace) -> int:
    from medvl.data.synth import generate_dataset

    t0 = time.time()
    info = generate_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        image_size=args.image_size,
        lateral=not args.no_lateral,
        workers=args.workers,
        progress=True,
    )
    print(f"wrote {args.n} synthetic studies to {args.out} in {time.time() - t0:.1f}s")
    print(json.dumps({k: v for k, v in info.items() if k in ("n", "seed", "image_size", "views", "splits")}, indent=1))
    return 0


def cmd_synth_clips(args: argparse.Namespace) -> int:
    from medvl.data.synth_clips import generate_clips

    t0 = time.time()
    info = generate_clips(
        args.out,
        n=args.n,
        seed=args.seed,
        tile_size=args.tile_size,
        frames=args.frames,
        minutes=args.minutes,
        channels=args.channels,
        tracks=args.tracks,
        workers=args.workers,
        progress=True,
    )
    print(f"wrote {args.n} synthetic clips to {args.out} in {time.time() - t0:.1f}s (tracks: {info['tracks']})")
    print(json.dumps({k: info[k] for k in ("splits", "positives", "kinds", "km_per_pixel")}, indent=1))
    print(
        f"train on it with: medvl train medicanes_classify_tiny_synthetic data.root={args.out} "
        f"data.synth_clips.n={args.n} ... (or data.source=clips data.root={args.out})"
    )
    return 0


def _data_config(args: argparse.Namespace):  # noqa: ANN202 - the type lives in a lazily imported module
    from medvl.data.config import DataConfig, ReportConfig

    rules = ReportConfig(section=args.section, clean=args.clean, deid=args.deid, max_words=args.max_words)
    return DataConfig(reports=rules, manifest=args.manifest or "", caption=args.caption)


def cmd_prepare(args: argparse.Namespace) -> int:
    from medvl.data.prepare import prepare

    if not Path(args.src).exists():  # never generate or guess: prepare reads what is there
        raise FileNotFoundError(
            f"--src {args.src} does not exist: give the folder that holds the {args.source} data "
            "set (for the synthetic set, draw it first with `medvl data synth --out DIR`)"
        )
    info = prepare(
        args.source,
        args.src,
        args.out,
        image_size=args.image_size,
        strict=args.strict,
        data=_data_config(args),
        workers=args.workers,
        overwrite=args.overwrite,
        require_report=not args.no_reports,
    )
    splits = ", ".join(f"{k} {v}" for k, v in sorted(info["splits"].items())) or "none"
    print(
        f"prepared {info['studies']} of {info['studies_read']} studies ({splits}; {info['rows']} views at "
        f"{info['image_size']} px) into {args.out} in {info['seconds']:.1f}s"
    )
    if info["problems"]:
        kinds = ", ".join(f"{k} {v}" for k, v in info["problem_kinds"].items())
        print(
            f"{info['problems']} unusable studies ({kinds}), listed in {Path(args.out) / 'problems.jsonl'}; "
            "first ones:",
            file=sys.stderr,
        )
        for line in (Path(args.out) / "problems.jsonl").read_text().splitlines()[:5]:
            row = json.loads(line)
            print(f"  {row['id']}: {row['reason']}", file=sys.stderr)
    print(f"train on it with: medvl train RECIPE data.source=prepared data.root={args.out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from medvl.data.download import download_iu_xray

    sums = dict(item.split("=", 1) for item in args.sha256)
    result = download_iu_xray(args.out, base_url=args.base_url, sha256=sums, extract=not args.no_extract)
    for name, a in result["archives"].items():
        print(f"{name}: {a['bytes'] / 1e6:.1f} MB, sha256 {a['sha256']}")
    print(f"IU X-ray is in {args.out} (openi layout); next: medvl data prepare openi --src {args.out} --out DIR")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from medvl.data.stats import data_stats, format_stats, write_html

    source = args.source or "prepared"
    if not args.source and Path(args.dir).is_dir() and not (Path(args.dir) / "prepared.json").exists():
        from medvl.data.sources import DataSourceError

        raise DataSourceError(
            f"{args.dir} is not a `medvl data prepare` output (no prepared.json); for a data set in its own layout "
            "name it with --source, e.g. --source iu_xray for annotation.json + images/ (a `medvl data synth` folder)"
        )
    stats = data_stats(args.dir, source, data=_data_config(args) if args.source else None)
    print(format_stats(stats))
    if not args.no_html:
        page = Path(args.html or Path(args.dir) / "stats.html")
        write_html(stats, page)
        print(f"\nwrote {page}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({k: v for k, v in stats.items() if k not in ("report_words", "sizes")}, indent=1)
        )
    return 0


def add_data_commands(sub: Any) -> None:
    """Add `medvl data synth | synth-clips | prepare | download | stats` to the top-level subparsers `sub`."""
    data = sub.add_parser(
        "data",
        help="data set tools",
        description="Draw the synthetic data sets, download IU X-ray, decode a real data set into the fast prepared "
        "format, and describe a data set. `medvl data DATA_COMMAND --help` explains each.",
    ).add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data.add_parser(
        "synth",
        help="draw the synthetic chest X-ray data set (R2Gen/IU X-ray layout)",
        description="Draw synthetic chest radiographs with findings and matching reports into DIR, "
        "in the layout the iu_xray source reads (annotation.json + images/).",
    )
    p.add_argument("--out", required=True, help="output directory (must be new or a previous synth output)")
    p.add_argument("--n", type=int, default=2500, help="number of studies (default 2500)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--image-size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--no-lateral", action="store_true", help="frontal view only")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: min(CPUs, 4))")
    p.set_defaults(func=cmd_synth)

    p = data.add_parser(
        "synth-clips",
        help="draw synthetic satellite clips with a moving vortex (clip layout)",
        description="Draw synthetic airmass-like satellite clips (a vortex with spiral bands and an "
        "eye moving along real medicane tracks, or built-in random ones) into DIR in the "
        "clip layout: clips/<id>/img_00001.png..., train/val/test.csv (path,start,end,"
        "label,x_pix,y_pix,cyclone), centres.json, dataset_info.json. Split by cyclone.",
    )
    p.add_argument("--out", required=True, help="output directory (new, empty, or a previous synth-clips output)")
    p.add_argument("--n", type=int, default=600, help="number of clips (default 600)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--tile-size", type=int, default=64, help="tile side in pixels (default 64)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--minutes", type=int, default=5, help="minutes between frames (default 5)")
    p.add_argument("--channels", type=int, default=3, help="bands per frame (default 3: PNG; others: .npy)")
    p.add_argument(
        "--tracks", default="", help="real tracks CSV (medicanes_new_windows.csv); default: built-in random tracks"
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: min(CPUs, 4))")
    p.set_defaults(func=cmd_synth_clips)

    from medvl.data.config import CLEAN_CHOICES, DEID_CHOICES, SECTION_CHOICES  # dataclasses only: cheap

    def source_args(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("reports and index files")
        g.add_argument(
            "--section",
            default="findings",
            choices=SECTION_CHOICES,
            help="part of whole reports used (openi, iu_csv, "
            "mimic_cxr_jpg): findings (default), impression, findings+impression, findings|impression "
            "(findings, else impression), full",
        )
        g.add_argument(
            "--clean",
            default="none",
            choices=CLEAN_CHOICES,
            help="report cleaning: none (default) or r2gen (lower-case, punctuation removed, as R2Gen)",
        )
        g.add_argument(
            "--deid",
            default="keep",
            choices=DEID_CHOICES,
            help="placeholders XXXX / ___: keep (default), unify (all XXXX), drop",
        )
        g.add_argument("--max-words", type=int, default=0, help="cut reports to N words (default 0 = no limit)")
        g.add_argument(
            "--manifest",
            default=None,
            help="index file relative to the data directory, for manifest, "
            "coco_captions, flickr_captions, xraygpt (default: the layout's usual name)",
        )
        g.add_argument("--caption", type=int, default=0, help="which caption of an image is the target (default 0)")

    p = data.add_parser(
        "prepare",
        help="decode a real data set once into a fast memory-mapped format",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # the raw formatter keeps the epilog's table; the description is wrapped here instead
        description=textwrap.fill(
            "Read a data set in the layout of SOURCE, check every study, decode and resize "
            "every view once into OUT/images.npy (uint8, memory-mapped when training), and "
            "write OUT/studies.jsonl, OUT/problems.jsonl (every unusable study and why) and "
            "OUT/prepared.json (splits, report rules, statistics). Train on it with "
            "data.source=prepared data.root=OUT.",
            width=79,
        ),
        epilog="sources and their layouts (details: medvl/data/layouts/*.py):\n"
        "  iu_xray, mimic_cxr  R2Gen annotation.json + images/\n"
        "  openi              ecgen-radiology/*.xml + NLMCXR_png/*.png\n"
        "  iu_csv             indiana_reports.csv + indiana_projections.csv + images/\n"
        "  mimic_cxr_jpg      mimic-cxr-2.0.0-{metadata,split,chexpert}.csv + files/\n"
        "  xraygpt            filter_cap.json + image/<image_id>.jpg\n"
        "  coco_captions      dataset_coco.json (Karpathy) + <filepath>/<filename>\n"
        "  flickr_captions    results.csv (image_name| comment_number| comment)\n"
        "  manifest           manifest.jsonl / manifest.csv (id, image_paths, text, labels, "
        "split)\n"
        "  dicom              **/*.dcm grouped by StudyInstanceUID (+ reports.csv)\n"
        "  nih                Data_Entry_2017*.csv + the images anywhere below (labels)\n"
        "  chexpert           train.csv + valid.csv (+ test.csv) + the images (labels)\n"
        "  image_folder       [split/]class/image (one-hot class labels)\n"
        "  vqa_rad            trainset.json [+ testset.json] + images/ (a study per question)\n"
        "  slake              train.json [+ validate.json, test.json] + imgs/ or images/ "
        "(English)\n"
        "  pathvqa            qas/<split>/<split>_qa.pkl + images/<split>/\n"
        "  cxr_vqa_synthetic  questions on a `medvl data synth` set's ground truth\n"
        "  report_summaries   findings -> impression, text only (iu_csv, openi, or a "
        "text/summary manifest)",
    )
    p.add_argument("source", help="source name (see below)")
    p.add_argument("--src", required=True, help="the data set's directory")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--image-size", type=int, default=256, help="side of the stored square views (default 256)")
    p.add_argument("--strict", action="store_true", help="fail on the first unusable study instead of listing it")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default min(CPUs, 4); 0 = none)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous prepare output in --out")
    p.add_argument(
        "--no-reports",
        action="store_true",
        help="keep studies without report text (image-only sets, "
        "e.g. a classification manifest); by default they are counted as unusable",
    )
    source_args(p)
    p.set_defaults(func=cmd_prepare)

    p = data.add_parser(
        "download",
        help="download a public data set (IU X-ray from OpenI)",
        description="Download the IU X-ray collection from its official source, OpenI "
        "(NLMCXR_png.tgz, about 1.3 GB, and NLMCXR_reports.tgz), resuming partial "
        "downloads, checking sizes and checksums, and unpack it into OUT in the openi "
        "layout. SHA-256 sums of the archives are recorded in OUT/archives/SHA256SUMS.",
    )
    p.add_argument("dataset", choices=("iu_xray",), help="data set to download")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--base-url",
        default=None,
        help="where the archives are (default $MEDVL_IU_XRAY_URL, else https://openi.nlm.nih.gov/imgs/collections/)",
    )
    p.add_argument(
        "--sha256", action="append", default=[], metavar="NAME=HEX", help="expected SHA-256 of an archive (repeatable)"
    )
    p.add_argument("--no-extract", action="store_true", help="only download the archives")
    p.set_defaults(func=cmd_download)

    p = data.add_parser(
        "stats",
        help="counts, report lengths, labels and image sizes of a data set",
        description="Print the statistics of a prepared data set (or, with --source, of a raw one): "
        "studies per split, unusable studies, report length distribution, CheXpert label "
        "distribution of the reports (rule-based labeler), image sizes; and write a "
        "self-contained stats.html with the plots embedded.",
    )
    p.add_argument("dir", help="a `medvl data prepare` output, or a raw data set with --source")
    p.add_argument("--source", default=None, help="read DIR as this source instead of a prepared directory")
    p.add_argument("--html", default=None, help="where to write the page (default DIR/stats.html)")
    p.add_argument("--no-html", action="store_true", help="do not write the HTML page")
    p.add_argument("--json", default=None, help="also write the statistics as JSON to this file")
    source_args(p)
    p.set_defaults(func=cmd_stats)
