"""`medvl doctor`: each line reports what this machine really has, and a missing part says how to get it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from medvl import doctor as doctor_module
from medvl.cli import main


def _checks(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict]:
    assert main(["doctor", "--json", *args]) == 0
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)}


def test_doctor_reports_what_this_machine_has(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    checks = _checks(capsys, "--path", str(tmp_path))
    assert checks["Python"]["ok"] and checks["Python"]["detail"].startswith(".".join(map(str, sys.version_info[:3])))
    assert checks["PyTorch"]["ok"] and checks["PyTorch"]["detail"] == torch.__version__
    assert checks["CUDA"]["ok"] is torch.cuda.is_available()
    assert checks["Java"]["ok"] is (shutil.which("java") is not None)
    assert checks["chromium + chromedriver"]["ok"] is (
        doctor_module.CHROMIUM.exists() and doctor_module.CHROMEDRIVER.exists()
    )
    free = float(checks["free disk"]["detail"].split()[0])
    assert free == pytest.approx(shutil.disk_usage(tmp_path).free / 2**30, abs=0.5)
    for name, check in checks.items():  # every missing part says how to get it; a present one needs no hint
        assert check["enables"], name
        assert bool(check["how"]) is not check["ok"], name
    # an extra's line lists the installed version of each of its packages
    assert checks["pydicom"]["detail"] == f"pydicom {doctor_module._version('pydicom')}"


def test_doctor_names_what_is_missing_and_how_to_get_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(
        doctor_module,
        "EXTRAS",
        (
            (("pytest",), "the test suite", "pip install pytest"),
            (("surely-not-an-installed-package-xyz",), "nothing real", "pip install it"),
        ),
    )
    assert main(["doctor"]) == 0  # optional parts missing: still status 0
    out = capsys.readouterr().out
    assert "[--] Java: no java on PATH" in out and "get it:  apt-get install default-jre-headless" in out
    assert f"[ok] pytest: pytest {pytest.__version__}" in out
    assert "[--] surely-not-an-installed-package-xyz: missing surely-not-an-installed-package-xyz" in out
    assert out.rstrip().splitlines()[-1].startswith("missing (optional unless marked !!): ")


def test_doctor_fails_only_when_a_required_part_is_unusable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_module.sys, "version_info", (3, 10, 0))
    assert main(["doctor"]) == 1
    assert "[!!] Python" in capsys.readouterr().out


def test_disk_of_a_folder_not_created_yet_is_measured_where_it_would_be(tmp_path: Path) -> None:
    check = doctor_module.check_disk(tmp_path / "runs" / "quickstart")
    assert check.detail.endswith(
        f"GiB free in {tmp_path.resolve()} (for {tmp_path / 'runs' / 'quickstart'}, not created yet)"
    )
    assert float(check.detail.split()[0]) == pytest.approx(shutil.disk_usage(tmp_path).free / 2**30, abs=0.5)
