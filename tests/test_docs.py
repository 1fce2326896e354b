"""The documentation: every `medvl ...` command written in README.md and the getting-started page exists as written,
the README stays a short front door whose test command is the one CI runs, and the built site renders in a real
browser (Debian's headless chromium driven by Selenium) with its navigation."""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medvl.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = (ROOT / "README.md", ROOT / "docs" / "getting-started.md")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def fenced_commands(path: Path) -> list[str]:
    """The shell commands of the ```bash blocks of a Markdown file, continuation lines joined, one per `&&` part."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", path.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def medvl_argv(command: str) -> list[str] | None:
    """The arguments a command passes to medvl (`medvl ...`, `.venv/bin/medvl ...`, `torchrun ... -m medvl ...`),
    or None for a command that does not run medvl."""
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words and Path(words[0]).name == "medvl":
        return words[1:]
    if "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "medvl":
        return words[words.index("-m") + 2 :]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCUMENTED:
        for command in fenced_commands(path):
            argv = medvl_argv(command)
            if argv is not None:
                found.append((f"{path.name}: {command}", argv))
    return found


def _subcommand_path(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    path = []
    for word in argv:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        path.append(word)
        parser = subparsers[0].choices[word]
    return path


COMMANDS = documented_commands()


def test_the_documents_hold_the_commands_a_newcomer_needs() -> None:
    names = {argv[0] for _, argv in COMMANDS if argv}
    assert {"quickstart", "train", "evaluate", "predict", "serve", "demo", "export", "data", "doctor"} <= names
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_exists_as_written(where: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    try:  # every subcommand, option and choice as written (parsing runs nothing)
        parser.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: medvl refuses these arguments ({capsys.readouterr().err.strip()}; exit {exit_.code})")
    path = _subcommand_path(parser, argv)
    assert path, f"{where}: no medvl subcommand"
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0 and f"usage: medvl {' '.join(path)}" in capsys.readouterr().out


def test_readme_is_a_short_front_door_whose_test_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S)[1].splitlines()  # the two commands come first
    assert [" ".join(shlex.split(line, comments=True)) for line in first_block] == [
        "./scripts/setup.sh && .venv/bin/medvl quickstart",
        "./scripts/setup.sh && .venv/bin/python -m pytest -q",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/setup.sh" in ci and "\n.venv/bin/python -m pytest -q\n" in ci
    assert ci.index("scripts/lint.sh") < ci.index("mkdocs build --strict") < ci.index("pytest -q")
    # `.venv/bin/medvl` is the console script of this package
    assert re.search(r'^medvl = "medvl\.cli:main"$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):  # links into the docs point at pages that exist
        assert (ROOT / link).is_file(), link


def test_command_extraction() -> None:
    assert medvl_argv("MEDVL_API_KEY=s medvl serve runs/x --api-key-env MEDVL_API_KEY  # a comment") == [
        "serve",
        "runs/x",
        "--api-key-env",
        "MEDVL_API_KEY",
    ]
    assert medvl_argv("torchrun --nproc-per-node 2 -m medvl train quickstart") == ["train", "quickstart"]
    assert medvl_argv(".venv/bin/medvl quickstart") == ["quickstart"]
    assert medvl_argv("sbatch --nodes 2 scripts/slurm/train.sbatch quickstart") is None
    assert medvl_argv("medvl predict CKPT 'incoming/*.dcm' --out r.csv") == [
        "predict",
        "CKPT",
        "incoming/*.dcm",
        "--out",
        "r.csv",
    ]


# ------------------------------------------------------------------------------------------------- the built site
@pytest.fixture(scope="module")
def site() -> Path:
    """The built site: .ci/run's build (`$MEDVL_DOCS_SITE`), else a strict build made here."""
    if os.environ.get("MEDVL_DOCS_SITE"):
        built = Path(os.environ["MEDVL_DOCS_SITE"])
        assert (built / "index.html").is_file(), f"MEDVL_DOCS_SITE={built} holds no built site"
        return built
    pytest.importorskip("mkdocs", reason="the docs tools are in requirements-dev.txt")
    import tempfile

    built = Path(tempfile.mkdtemp(prefix="medvl-site-"))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(built)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return built


@pytest.fixture(scope="module")
def site_url(site: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]  # quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver); "
    ".ci/run installs them",
)
def test_site_renders_in_a_real_browser_with_its_navigation(
    site_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        "--proxy-server=direct://",
        "--proxy-bypass-list=*",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        pages = {
            "home": ("/", "medvl"),
            "family": ("/families/xraygpt/", "XrayGPT: the xraygpt family"),
            "api": ("/reference/train/", "medvl.train"),
        }
        for name, (path, title) in pages.items():
            driver.get(site_url + path)
            assert driver.find_element(By.CSS_SELECTOR, "article h1").text.strip() == title, name
            # the theme's stylesheet applied (its header is sticky), and the primary navigation lists the sections
            assert (
                driver.execute_script("return getComputedStyle(document.querySelector('.md-header')).position")
                == "sticky"
            ), name
            nav = driver.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").get_attribute("textContent")
            for section in ("Getting started", "Model families", "Evaluation", "Serving", "API reference"):
                assert section in nav, (name, section)
            if name == "family":  # the page is the active entry of the navigation
                active = driver.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary a.md-nav__link--active")
                assert any(a.get_attribute("textContent").strip() == "XrayGPT" for a in active)
            if name == "api":  # mkdocstrings rendered the function with its signature and docstring
                heading = driver.find_element(By.ID, "medvl.train.loop.train")
                assert heading.is_displayed()
                body = driver.find_element(By.CSS_SELECTOR, "article").text
                assert "train(" in body and "resume" in body
            shot = tmp_path / f"docs_{name}.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
            if os.environ.get("MEDVL_ARTIFACTS"):
                target = Path(os.environ["MEDVL_ARTIFACTS"])
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, target / shot.name)
        # nothing on the pages came from another host (the site is read offline)
        hosts = driver.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
        assert set(hosts) <= {site_url.split("//")[1]}, hosts
    finally:
        driver.quit()
