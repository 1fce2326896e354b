"""`medvl data download` against a local HTTP server (resume, checks), `medvl data stats`, and the data CLI."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medvl.cli import main
from medvl.data.download import DownloadError, download_iu_xray, fetch
from medvl.data.stats import data_stats, format_stats, write_html

from . import data_fixtures as fx


class _Server:
    """Serves `files` on 127.0.0.1 with HTTP Range support; records the Range headers it saw."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.ranges, self.honour_range, self.truncate = files, [], True, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng and outer.honour_range else 0
                if start >= len(body) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start : len(body) - outer.truncate])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server({})
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _tgz(root: Path, folder: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    return buffer.getvalue()


def test_fetch_resumes_with_range_and_checks_size_and_checksum(tmp_path: Path, server: _Server) -> None:
    body = bytes(range(256)) * 40
    server.files["f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:1000])
    fetch(server.url + "f.bin", dest, expected_size=len(body), sha256=hashlib.sha256(body).hexdigest(), progress=None)
    assert dest.read_bytes() == body and server.ranges == ["bytes=1000-"] and not (tmp_path / "f.bin.part").exists()
    # a server that ignores Range: the download restarts from zero
    server.honour_range = False
    (tmp_path / "g.bin.part").write_bytes(b"junk")
    fetch(server.url + "f.bin", tmp_path / "g.bin", progress=None)
    assert (tmp_path / "g.bin").read_bytes() == body
    # a wrong checksum deletes the file; a wrong size keeps the part for a resume
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch(server.url + "f.bin", tmp_path / "h.bin", sha256="0" * 64, progress=None)
    assert not (tmp_path / "h.bin.part").exists()
    with pytest.raises(DownloadError, match="expected 5"):
        fetch(server.url + "f.bin", tmp_path / "i.bin", expected_size=5, progress=None)
    assert (tmp_path / "i.bin.part").is_file()
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url + "missing", tmp_path / "j.bin", progress=None)
    with pytest.raises(DownloadError, match="cannot reach"):
        fetch("http://127.0.0.1:9/x", tmp_path / "k.bin", progress=None, timeout=2)


def test_download_iu_xray_from_a_local_mirror_gives_the_openi_layout(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = fx.write_openi(tmp_path / "src")
    server.files = {"NLMCXR_png.tgz": _tgz(src, "NLMCXR_png"), "NLMCXR_reports.tgz": _tgz(src, "ecgen-radiology")}
    out = tmp_path / "iu"
    # an interrupted earlier run left part of the image archive
    (out / "archives").mkdir(parents=True)
    (out / "archives" / "NLMCXR_png.tgz.part").write_bytes(server.files["NLMCXR_png.tgz"][:100])
    monkeypatch.setenv("MEDVL_IU_XRAY_URL", server.url)
    assert main(["data", "download", "iu_xray", "--out", str(out)]) == 0
    assert "bytes=100-" in server.ranges
    sums = (out / "archives" / "SHA256SUMS").read_text()
    assert hashlib.sha256(server.files["NLMCXR_png.tgz"]).hexdigest() in sums
    assert (
        main(
            [
                "data",
                "prepare",
                "openi",
                "--src",
                str(out),
                "--out",
                str(tmp_path / "p"),
                "--image-size",
                "16",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "p" / "prepared.json").read_text())["studies"] == 3
    # a second run checks the archives it has against the recorded sums, and a corrupted one is refused
    result = download_iu_xray(out, base_url=server.url, extract=False, progress=None)
    assert set(result["archives"]) == {"NLMCXR_png.tgz", "NLMCXR_reports.tgz"}
    (out / "archives" / "NLMCXR_reports.tgz").write_bytes(b"corrupt")
    with pytest.raises(DownloadError, match="does not match its SHA-256"):
        download_iu_xray(out, base_url=server.url, progress=None)


def test_stats_text_and_self_contained_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fx.write_iu_csv(tmp_path / "csv")
    assert (
        main(
            [
                "data",
                "prepare",
                "iu_csv",
                "--src",
                str(src),
                "--out",
                str(tmp_path / "p"),
                "--image-size",
                "16",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert "1 unusable studies (missing section 1)" in capsys.readouterr().err
    stats = data_stats(tmp_path / "p")
    assert stats["studies"] == 3 and stats["problem_kinds"] == {"missing section": 1}
    assert stats["labels"]["Cardiomegaly"]["positive"] == 1 and stats["labels"]["Pleural Effusion"]["negative"] == 1
    assert stats["image_height"]["median"] == 24 and stats["report_words_summary"]["max"] == 9
    text = format_stats(stats)
    assert "Cardiomegaly" in text and "report words" in text
    page = write_html(stats, tmp_path / "s.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page and "http" not in page
    raw = data_stats(src, source="iu_csv")
    assert raw["studies"] == 3 and raw["image_height"]["median"] == 24
    assert main(["data", "stats", str(tmp_path / "p"), "--json", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "p" / "stats.html").is_file() and json.loads((tmp_path / "s.json").read_text())["studies"] == 3


def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "iu_csv", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "indiana_reports.csv does not exist" in capsys.readouterr().err
    fx.write_iu_csv(tmp_path / "csv")
    assert (
        main(
            [
                "data",
                "prepare",
                "iu_csv",
                "--src",
                str(tmp_path / "csv"),
                "--out",
                str(tmp_path / "o"),
                "--strict",
                "--workers",
                "0",
            ]
        )
        == 2
    )
    assert "CXR3" in capsys.readouterr().err
    assert main(["data", "prepare", "nope", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown data source" in capsys.readouterr().err
    # A --src that does not exist is an error, never a reason to generate a data set there.
    assert main(["data", "prepare", "synthetic", "--src", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "--src" in capsys.readouterr().err and not (tmp_path / "none").exists()
