"""`medvl doctor`: what this machine has for medvl, what each part enables, and how to get what is missing.

Only Python and PyTorch are required; everything else is optional and switches one feature on. The checks read
installed package metadata (`importlib.metadata`) rather than importing the packages, so the report is quick and has
no side effects; PyTorch is imported, because only it can say whether CUDA works.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

# Debian's paths, which the browser tests use (Selenium Manager must not download a driver).
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MIN_FREE_GIB = 5.0  # the quickstart needs well under 1 GiB; real data sets and checkpoints need far more

# (distribution names, what they enable, how to install): the optional extras of pyproject.toml and the tools of
# requirements-dev.txt. A feature is available when every distribution of its row is installed.
EXTRAS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("torchvision", "timm"),
        "pretrained torchvision / timm image encoders (model.encoder=torchvision|timm)",
        "pip install -e '.[vision]'",
    ),
    (("peft",), "LoRA adapters for the xraygpt family (model.lora_r)", "pip install -e '.[xraygpt]'"),
    (("bitsandbytes",), "8-bit / 4-bit LLMs (model.llm_quantization, CUDA only)", "pip install bitsandbytes"),
    (("pydicom",), "DICOM images (uncompressed, RLE, deflate)", "pip install -e '.[dicom]'"),
    (
        ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "python-gdcm"),
        "compressed DICOM (JPEG baseline/lossless, JPEG 2000)",
        "pip install -e '.[dicom]'",
    ),
    (("fastapi", "uvicorn", "python-multipart"), "medvl serve (REST API)", "pip install -e '.[serve]'"),
    (("gradio",), "medvl demo (web page)", "pip install -e '.[demo]'"),
    (("tensorboard",), "TensorBoard logs of training", "pip install -e '.[tracking]'"),
    (("wandb",), "Weights & Biases logs (offline unless WANDB_MODE=online)", "pip install -e '.[tracking]'"),
    (("huggingface_hub",), "medvl export --push-to-hub", "pip install -e '.[hub]'"),
    (("selenium",), "the real-browser tests (demo, documentation site)", "pip install selenium"),
    (("ruff", "mypy"), "scripts/lint.sh (style and type checks of CI)", "pip install -r requirements-dev.txt"),
    (
        ("mkdocs", "mkdocs-material", "mkdocstrings-python"),
        "the documentation site (mkdocs build)",
        "pip install -r requirements-dev.txt",
    ),
)


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: what was checked ("Java", "peft").
        ok: True when present and usable.
        detail: what was found (a version, a device name, GiB free), or why it is missing.
        enables: what medvl can do with it.
        how: how to get it (empty when ok).
        required: True for the two things medvl cannot run without (Python, PyTorch).
    """

    name: str
    ok: bool
    detail: str
    enables: str
    how: str = ""
    required: bool = False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check(
        "Python",
        ok,
        f"{platform.python_version()} ({sys.executable})",
        "medvl itself (3.11 or newer)",
        "" if ok else "install Python 3.11+ and rerun scripts/setup.sh",
        required=True,
    )


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as err:
        return [
            Check(
                "PyTorch",
                False,
                f"not importable ({err})",
                "everything: models, training, inference",
                "run scripts/setup.sh (installs the pinned torch)",
                required=True,
            )
        ]
    checks = [Check("PyTorch", True, torch.__version__, "everything: models, training, inference", required=True)]
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        bf16 = "bf16 yes" if torch.cuda.is_bf16_supported() else "bf16 no"
        detail = f"{torch.cuda.device_count()} GPU(s): {', '.join(names)}; CUDA {torch.version.cuda}; {bf16}"
        checks.append(Check("CUDA", True, detail, "GPU training and inference (--device cuda, train.precision=bf16)"))
    else:
        built = f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only torch build"
        checks.append(
            Check(
                "CUDA",
                False,
                f"no GPU visible ({built})",
                "GPU training and inference; the CPU runs every recipe at a small size",
                "a machine with an NVIDIA GPU and driver; a CUDA build of torch (scripts/setup.sh's)",
            )
        )
    return checks


def check_java() -> Check:
    java = shutil.which("java")
    enables = "METEOR and the exact Stanford PTB tokenizer of pycocoevalcap (without it METEOR is unavailable)"
    how = "apt-get install default-jre-headless (or any Java 8+ on PATH)"
    if not java:
        return Check("Java", False, "no java on PATH", enables, how)
    try:  # `java -version` prints to stderr
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Check("Java", False, f"{java} does not run ({err})", enables, how)
    first = (proc.stderr or proc.stdout).strip().splitlines()
    return Check(
        "Java", proc.returncode == 0, first[0] if first else java, enables, "" if proc.returncode == 0 else how
    )


def check_chromium() -> Check:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return Check(
        "chromium + chromedriver",
        not missing,
        "missing " + ", ".join(missing) if missing else str(CHROMIUM),
        "the real-browser tests of the demo and of the documentation site (they skip without it)",
        "apt-get install chromium chromium-driver" if missing else "",
    )


def check_extras() -> list[Check]:
    checks = []
    for dists, enables, how in EXTRAS:
        versions = {d: _version(d) for d in dists}
        absent = [d for d, v in versions.items() if v is None]
        detail = f"missing {', '.join(absent)}" if absent else ", ".join(f"{d} {v}" for d, v in versions.items())
        checks.append(Check(" + ".join(dists), not absent, detail, enables, how if absent else ""))
    return checks


def check_disk(path: str | Path = ".") -> Check:
    """Free space where runs will be written. A folder that does not exist yet (`runs/` on a fresh clone) is measured
    at its nearest existing parent, the disk it would be created on."""
    where = Path(path).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    ok = free >= MIN_FREE_GIB
    pending = "" if where == Path(path).resolve() else f" (for {path}, not created yet)"
    return Check(
        "free disk",
        ok,
        f"{free:.1f} GiB free in {where}{pending}",
        "runs, checkpoints and prepared data sets (the quickstart needs under 1 GiB)",
        ""
        if ok
        else f"free space (at least {MIN_FREE_GIB:g} GiB) or set train.output_dir and data.root on another disk",
    )


def run_checks(path: str | Path = ".") -> list[Check]:
    """Every check, in the order they are printed; `path` is where the free disk space is measured."""
    return [check_python(), *check_torch(), check_java(), check_chromium(), *check_extras(), check_disk(path)]


def format_checks(checks: list[Check]) -> str:
    """The report as text: one block per check, `ok` / `--` (optional and missing) / `!!` (required and missing)."""
    lines = []
    for c in checks:
        mark = "ok" if c.ok else ("!!" if c.required else "--")
        lines.append(f"[{mark}] {c.name}: {c.detail}")
        lines.append(f"     enables: {c.enables}")
        if c.how:
            lines.append(f"     get it:  {c.how}")
    missing = [c.name for c in checks if not c.ok]
    lines.append("all present" if not missing else f"missing (optional unless marked !!): {', '.join(missing)}")
    return "\n".join(lines)


def doctor(as_json: bool = False, path: str | Path = ".") -> int:
    """Print the report (text, or a JSON list of checks); exit status 1 when Python or PyTorch is unusable, else 0."""
    checks = run_checks(path)
    print(json.dumps([asdict(c) for c in checks], indent=2) if as_json else format_checks(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0
