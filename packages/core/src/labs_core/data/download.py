"""Downloads: try each mirror, verify the MD5, write atomically; failure is one clear LabError."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import LabError

TIMEOUT_S = 30


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(urls: list[str], dest: Path, md5: str | None) -> None:
    """Download the first URL that works into ``dest``; check ``md5``; leave nothing half-written.

    Raises ``DownloadFailed`` (not a LabError: the caller adds which dataset and files it wanted).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                shutil.copyfileobj(resp, out, length=1 << 20)
            got = md5_of(Path(tmp))
            if md5 is not None and got != md5:
                reasons.append(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
                continue
            os.replace(tmp, dest)
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DownloadFailed("; ".join(reasons))


class DownloadFailed(Exception):
    pass


OFFLINE_IMAGES = (
    "run offline with --dataset synthetic, --dataset digits, or your own images with --dataset"
    " imagefolder"
)


def missing_data_error(
    dataset: str,
    folder: Path,
    expected: list[str],
    source: str,
    why: str,
    offline: str = OFFLINE_IMAGES,
) -> LabError:
    """The one-line message for 'the files are not here and could not be fetched'."""
    return LabError(
        f"{dataset}: {why}. Put the standard files in {folder}/ ({', '.join(expected)}; from"
        f" {source}), or {offline}"
    )
