"""Images/s from raw PNG folders versus the prepared format, through the real DataLoader used by training.

Both sides read the same studies (a synthetic set in the R2Gen layout, PNGs of `--png-size` px) through
`ReportDataset` + `medvl.train.loop.make_loader` with `--workers` worker processes, without the in-memory image cache,
at the model's `--image-size`: raw decodes and resizes every PNG each epoch; prepared (`medvl data prepare`, done once
beforehand and timed separately) reads the decoded views from the memory-mapped images.npy. Each side runs
`--repeats` epochs and the best is reported (the machine is shared); worker start-up is included in every epoch.
Both read from a warm page cache (the files were just written), which favours raw decoding if anything.

    .venv/bin/python benchmarks/data_throughput.py [--n 1000] [--png-size 256] [--image-size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.dataset import ReportDataset, check_studies, epoch_batches
from medvl.data.prepare import prepare
from medvl.data.sources import load_studies
from medvl.data.synth import generate_dataset
from medvl.data.tokenizer import train_bpe_tokenizer
from medvl.train.loop import make_loader


def images_per_second(dataset: ReportDataset, batch_size: int, workers: int, repeats: int) -> tuple[float, int]:
    """Best images/s over `repeats` epochs, and the number of images per epoch."""
    batches = epoch_batches(len(dataset), batch_size, epoch=0, seed=0, shuffle=True, drop_last=False)
    best, n = 0.0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(int(b.view_mask.sum()) for b in make_loader(dataset, batches, workers, max_views=2, pad_id=0))
        best = max(best, n / (time.perf_counter() - t0))
    return best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="studies (two views each)")
    ap.add_argument("--png-size", type=int, default=256, help="side of the raw PNGs")
    ap.add_argument("--image-size", type=int, default=128, help="side the model reads (and prepare stores)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="epochs per side; the best is reported")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        raw_root = work / "raw"
        if not (raw_root / "annotation.json").is_file():
            generate_dataset(raw_root, n=args.n, seed=0, image_size=args.png_size, lateral=True, workers=args.workers)
        t0 = time.perf_counter()
        info = prepare(
            "iu_xray",
            raw_root,
            work / "prepared",
            image_size=args.image_size,
            workers=args.workers,
            overwrite=True,
            progress=False,
        )
        prep_s = time.perf_counter() - t0
        raw = load_studies(DataConfig(source="iu_xray", root=str(raw_root)))
        prepared = load_studies(DataConfig(source="prepared", root=str(work / "prepared")))
        raw_train = check_studies(raw["train"], strict=True)[0]
        prep_train = check_studies(prepared["train"], strict=True)[0]
        tok = train_bpe_tokenizer([s.report for s in raw_train], vocab_size=600)
        kw = {"image_size": args.image_size, "max_views": 2, "max_tokens": 96, "cache_images": False}
        raw_ips, n = images_per_second(ReportDataset(raw_train, tok, **kw), args.batch_size, args.workers, args.repeats)
        prep_ips, _ = images_per_second(
            ReportDataset(prep_train, tok, **kw), args.batch_size, args.workers, args.repeats
        )
        print(
            f"{len(raw_train)} train studies, {n} images per epoch, {args.png_size} px PNGs -> {args.image_size} px, "
            f"DataLoader with {args.workers} workers, batch {args.batch_size}"
        )
        print(f"prepare (once): {info['rows']} views in {prep_s:.1f}s")
        print(f"{'format':<22}{'images/s':>10}")
        print(f"{'raw PNG folders':<22}{raw_ips:>10.0f}")
        print(f"{'prepared (memmap)':<22}{prep_ips:>10.0f}")
        print(f"speed-up: {prep_ips / raw_ips:.1f}x")


if __name__ == "__main__":
    main()
