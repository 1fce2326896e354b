"""`medvl data download iu_xray`: fetch the public IU X-ray collection from its official source, OpenI, and unpack it.

The two archives (https://openi.nlm.nih.gov/imgs/collections/) are the PNG images (NLMCXR_png.tgz, about 1.3 GB) and
the XML reports (NLMCXR_reports.tgz); unpacked they are the `openi` layout (`medvl.data.layouts.openi`).

Contract of `fetch`: the download goes to NAME.part and is resumed from its size with an HTTP Range request (a server
that ignores Range restarts it from zero); the final size must equal what the server announced (Content-Length /
Content-Range) and `expected_size` when given; the SHA-256 must equal `sha256` when given. A size mismatch keeps the
.part file for the next resume; a checksum mismatch deletes it (resuming a corrupt file cannot help). OpenI publishes
no checksums, so `download_iu_xray` records the size and SHA-256 of what it fetched in OUT/SHA256SUMS and checks any
archive already present against it. The base URL is `--base-url`, else $MEDVL_IU_XRAY_URL, else OpenI's: tests point
it at a local server. Nothing here runs unless the user asks for a download.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPENI_BASE_URL = "https://openi.nlm.nih.gov/imgs/collections/"
BASE_URL_ENV = "MEDVL_IU_XRAY_URL"
IU_XRAY_ARCHIVES = ("NLMCXR_reports.tgz", "NLMCXR_png.tgz")
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or whose result is not what the server or the user said it should be."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _total_from(response: Any, start: int) -> int | None:
    """The full size of the resource from a 206's Content-Range or a 200's Content-Length."""
    if response.status == 206:
        m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != start:
            raise DownloadError(
                f"the server answered the range request from byte {start} with "
                f"Content-Range {response.headers.get('Content-Range')!r}"
            )
        return int(m.group(3)) if m.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def fetch(
    url: str,
    dest: str | Path,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: Callable[[str], None] | None = print,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest`, resuming a previous partial download (see the module docstring).

    Args:
        url: http(s) URL of the file.
        dest: the final path; the download is written to `dest`.part until it is complete and checked.
        expected_size: size in bytes the file must have, when known.
        sha256: hex SHA-256 the file must have, when known.
        progress: called with a progress line every few seconds and at the end (None = silent).
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        `dest`.

    Raises:
        DownloadError: the server cannot be reached or refuses, or the size or checksum is wrong.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the user chose this URL
    except urllib.error.HTTPError as e:
        if e.code != 416 or not start:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
        # 416: nothing after byte `start`: the .part file is complete, unless the server says the file is shorter.
        m = re.match(r"bytes\s+\*/(\d+)", e.headers.get("Content-Range", "") if e.headers else "")
        if m and int(m.group(1)) != start:
            part.unlink()
            raise DownloadError(
                f"{part} is longer than {url} ({start} > {m.group(1)} bytes); it was deleted, run the command again"
            ) from e
        response = None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"cannot reach {url}: {e}; check the network, or point --base-url / ${BASE_URL_ENV} at a mirror"
        ) from e
    total: int | None = start
    if response is not None:
        with response:
            if start and response.status == 200:
                start = 0  # the server ignored Range: start again from zero
            total = _total_from(response, start)
            done, t0, shown = start, time.time(), time.time()
            with open(part, "ab" if start else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    if progress and time.time() - shown > 2.0:
                        shown = time.time()
                        rate = (done - start) / max(shown - t0, 1e-9) / 1e6
                        of = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
                        progress(f"  {dest.name}: {done / 1e6:.1f}{of}, {rate:.1f} MB/s")
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"{dest.name}: got {size} bytes but the server announced {total}; the partial file "
            f"{part} is kept, run the command again to resume"
        )
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{dest.name}: {size} bytes, expected {expected_size}; the partial file {part} is kept")
    if sha256 is not None and sha256_of(part) != sha256.lower():
        part.unlink()
        raise DownloadError(f"{dest.name}: SHA-256 mismatch (expected {sha256}); the file was deleted, download again")
    part.replace(dest)
    if progress:
        progress(f"  {dest.name}: {size / 1e6:.1f} MB complete")
    return dest


def _read_sums(path: Path) -> dict[str, tuple[str, int]]:
    sums: dict[str, tuple[str, int]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                sums[parts[2]] = (parts[0], int(parts[1]))
    return sums


def _extract(archive: Path, out: Path) -> int:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            tar.extractall(out, filter="data")  # "data": no absolute paths, links out of `out` or device files
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"{archive} is not a readable .tgz archive ({e}); delete it and download again") from e
    return len(members)


def download_iu_xray(
    out: str | Path,
    base_url: str | None = None,
    sha256: dict[str, str] | None = None,
    extract: bool = True,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Download (resumably) and unpack OpenI's IU X-ray archives into `out`, the `openi` layout.

    Args:
        out: output directory; archives go to out/archives/, their content to out/.
        base_url: where the archives are (default $MEDVL_IU_XRAY_URL, else OpenI's collections URL).
        sha256: archive name -> expected hex SHA-256, when the user has them.
        extract: unpack the archives after downloading.
        progress: called with progress lines (None = silent).

    Returns:
        {"base_url", "archives": {name: {"bytes", "sha256", "members"}}, "out"}.

    Raises:
        DownloadError: a download failed, or an archive differs from its recorded or given checksum.
    """
    base = (base_url or os.environ.get(BASE_URL_ENV) or OPENI_BASE_URL).rstrip("/") + "/"
    out = Path(out)
    archives = out / "archives"
    sums_path = archives / "SHA256SUMS"
    recorded = _read_sums(sums_path)
    result: dict[str, Any] = {"base_url": base, "archives": {}, "out": str(out)}
    for name in IU_XRAY_ARCHIVES:
        dest = archives / name
        want = (sha256 or {}).get(name) or (recorded[name][0] if name in recorded else None)
        if dest.is_file():
            if progress:
                progress(f"  {name}: already downloaded, checking it")
            if want and sha256_of(dest) != want:
                raise DownloadError(f"{dest} does not match its SHA-256 {want}; delete it and download again")
        else:
            if progress:
                progress(f"downloading {base}{name}")
            fetch(base + name, dest, sha256=want, progress=progress)
        digest = want or sha256_of(dest)
        recorded[name] = (digest, dest.stat().st_size)
        sums_path.write_text("".join(f"{d} {n} {k}\n" for k, (d, n) in sorted(recorded.items())))
        result["archives"][name] = {"bytes": dest.stat().st_size, "sha256": digest}
        if extract:
            result["archives"][name]["members"] = _extract(dest, out)
    return result
