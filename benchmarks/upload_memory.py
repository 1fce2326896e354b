"""Peak memory of `medvl serve` and `medvl predict` on one hostile image file, above the process's idle memory.

One mode, one file, one fresh process (so the peak belongs to this run): the model is loaded and, for serve, a small
PNG study is answered first (warm-up); then the resident memory at idle is read, the file is sent (serve: a multipart
upload through the app with the default limits; predict: `medvl predict CKPT FILE`) while a thread samples the
resident memory every millisecond. The peak during the call is the process's peak (ru_maxrss) when that rose during
the call, else the highest sample; `peak_above_idle_mb` = that peak - idle. Used by tests/test_uploads.py for the
deflate bomb (1 MB that inflates to 1 GiB) and a 182-megapixel deflated DICOM; prints one JSON line.

    .venv/bin/python benchmarks/upload_memory.py serve|predict CKPT FILE.dcm
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Sampler:
    """The highest resident memory seen while the block runs (sampled every millisecond, plus ru_maxrss)."""

    def __enter__(self) -> _Sampler:
        import threading

        self.highest, self.running = _rss_mb(), True
        self.ru_before = _peak_mb()

        def sample() -> None:
            while self.running:
                self.highest = max(self.highest, _rss_mb())
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        ru_after = _peak_mb()
        self.peak = ru_after if ru_after > self.ru_before else max(self.highest, _rss_mb())


def main(mode: str, checkpoint: str, path: str) -> dict:
    import numpy as np
    from PIL import Image

    from medvl.infer.predictor import load_trained

    loaded = load_trained(checkpoint, device="cpu")
    data = open(path, "rb").read()
    if mode == "serve":
        from fastapi.testclient import TestClient

        from medvl.serve.app import create_app

        png = io.BytesIO()
        Image.fromarray(np.full((64, 64), 100, dtype=np.uint8)).save(png, format="PNG")
        with TestClient(create_app(loaded)) as client:
            assert (
                client.post("/v1/reports", files=[("images", ("a.png", png.getvalue(), "image/png"))]).status_code
                == 200
            )
            idle, t0 = _rss_mb(), time.perf_counter()
            with _Sampler() as sampler:
                res = client.post("/v1/reports", files=[("images", ("x.dcm", data, "application/dicom"))])
            status, message = res.status_code, res.json().get("error", {}).get("message", "")
    else:
        from medvl.cli import main as cli

        idle, t0 = _rss_mb(), time.perf_counter()
        with _Sampler() as sampler:
            status, message = cli(["predict", checkpoint, path, "--device", "cpu", "--no-progress"]), ""
    seconds = time.perf_counter() - t0
    peak = sampler.peak
    return {
        "mode": mode,
        "file": os.path.basename(path),
        "file_bytes": len(data),
        "status": status,
        "message": message[:200],
        "seconds": round(seconds, 3),
        "idle_mb": round(idle, 1),
        "peak_mb": round(peak, 1),
        "peak_above_idle_mb": round(peak - idle, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
