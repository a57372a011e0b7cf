"""Resumable downloads of weight files, with a terminal progress bar and a progress callback.

A Hub file is resolved by huggingface_hub (``HEAD /{repo}/resolve/{revision}/{file}``: size, ETag — the sha256
of an LFS file —, the CDN address of the bytes; honours ``HF_ENDPOINT`` and a saved token) in ONE attempt with
an explicit timeout. The bytes then come with a plain HTTP GET into ``<target>.<etag>.incomplete`` next to the
target: a dropped connection is resumed with ``Range: bytes=N-`` (in the same call while bytes keep coming,
else in a later run), the file is checked (size; sha256 when the ETag is one) and only then renamed to its
final name, so a partial file is never taken for a weight file.

Why not ``hf_hub_download``: in huggingface_hub 2.4 it retries an unreachable Hub with back-off for ~23 s
(``HF_HUB_OFFLINE`` aside) and deletes its partial file when a download fails, so an interrupted 5 GB UNet
started again from zero.

Offline policy: ``HF_HUB_OFFLINE`` set → no network use at all; an unreachable host (DNS failure, connection
refused, no answer within ``timeout``) → ``DownloadError`` at once, without retries.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import MissingWeightsError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds: the first request to a host; an unreachable host fails within this
READ_TIMEOUT = 60.0  # seconds without a byte before a running transfer counts as dropped
CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL = 0.2  # seconds between two progress callbacks (the end of every file is always reported)
USER_AGENT = "latentsync-downloader/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "true", "yes", "on"}

ProgressCallback = Callable[[int, int, dict], None]
"""``progress(done_bytes, total_bytes, info)``; info: file, target, file_done, file_total, index, count."""


class DownloadError(MissingWeightsError):
    """A weight file could not be downloaded; the message says why (offline, unreachable, HTTP error...)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: ``url`` is what the GET asks for (the CDN address of a Hub LFS file)."""

    url: str
    target: Path
    size: int | None
    etag: str | None
    label: str

    @property
    def sha256(self) -> str | None:
        return self.etag if self.etag and _SHA256.fullmatch(self.etag) else None

    @property
    def partial(self) -> Path:
        tag = re.sub(r"[^0-9A-Za-z]", "", self.etag or "")[:16]
        return self.target.with_name(f"{self.target.name}.{tag}.incomplete" if tag else
                                     f"{self.target.name}.incomplete")


def offline_reason() -> str | None:
    """Why no download may happen now (``HF_HUB_OFFLINE``), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "huggingface_hub is in offline mode (HF_HUB_OFFLINE), so nothing is downloaded"
    return None


def _check_online() -> None:
    reason = offline_reason()
    if reason:
        raise DownloadError(reason + ".")


def _within(seconds: float, url: str, ask: Callable[[], object]):
    """``ask()`` with a wall-clock bound: socket timeouts do not cover a DNS lookup that hangs, nor the extra
    requests a library makes first (huggingface_hub 2.4 fetches ``{endpoint}/api/agent-harnesses`` with its own
    3 s timeout when it builds its headers). The request goes on in a daemon thread and is dropped if late."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = ask()
        except Exception as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="latentsync-resolve", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DownloadError(f"cannot reach {url} (no answer within {seconds:g} s)")
    if "error" in outcome:
        exc = outcome["error"]
        status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "code", None)
        what = f"the server answered HTTP {status} for" if isinstance(status, int) else "cannot reach"
        raise DownloadError(f"{what} {url} ({type(exc).__name__}: {_first_line(exc)})") from exc
    return outcome["value"]


def resolve_hub_file(repo_id: str, filename: str, target, *, revision: str = "main", endpoint: str | None = None,
                     timeout: float = CONNECT_TIMEOUT) -> RemoteFile:
    """Ask the Hub where the bytes of ``repo_id/filename`` are: one attempt, an answer within ``timeout`` s."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    _check_online()
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    # any huggingface_hub version: its errors (requests, httpx or httpx2 ones, HfHubHTTPError) become DownloadError
    meta = _within(timeout, url, lambda: get_hf_file_metadata(url, timeout=timeout))
    return RemoteFile(meta.location or url, Path(target), meta.size, meta.etag, f"{repo_id}/{filename}")


def resolve_url(url: str, target, *, timeout: float = CONNECT_TIMEOUT) -> RemoteFile:
    """Size and ETag of a plain URL: one HEAD request (redirects followed), an answer within ``timeout`` s."""
    _check_online()

    def head():
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers.get("Content-Length"), response.headers.get("ETag"), response.url

    size, etag, location = _within(timeout, url, head)
    etag = etag.strip().removeprefix("W/").strip('"') if etag else None
    return RemoteFile(location or url, Path(target), int(size) if size else None, etag, Path(target).name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


class _Progress:
    """Terminal bar per file (tqdm, off when stderr is not a terminal) + one monotone callback over all files."""

    def __init__(self, files: Sequence[RemoteFile], callback: ProgressCallback | None, bar: bool):
        self.callback, self.bar, self.count = callback, bar, len(files)
        self.total = sum(f.size or 0 for f in files)
        self.done_before = 0  # bytes of the files already finished
        self.reported, self.last_time = -1, 0.0

    def start(self, index: int, remote: RemoteFile, offset: int):
        from tqdm.auto import tqdm

        self.index, self.remote, self.file_done = index, remote, offset
        self.tqdm = tqdm(total=remote.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=remote.label, disable=None if self.bar else True, leave=True)
        self._report(force=True)

    def advance(self, n: int) -> None:
        self.file_done += n
        self.tqdm.update(n)
        self._report()

    def restart(self) -> None:
        """The server ignored the Range request: the file starts again from byte 0."""
        self.tqdm.reset(total=self.remote.size)
        self.file_done = 0

    def finish(self) -> None:
        self.tqdm.close()
        self._report(force=True)
        self.done_before += self.file_done
        self.file_done = 0

    def close(self) -> None:
        if getattr(self, "tqdm", None) is not None:
            self.tqdm.close()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last_time < PROGRESS_INTERVAL):
            return
        done = max(self.reported, self.done_before + self.file_done)  # never backwards, even after a restart
        self.reported, self.last_time = done, now
        self.callback(done, max(self.total, done), {
            "file": self.remote.label, "target": str(self.remote.target), "file_done": self.file_done,
            "file_total": self.remote.size, "index": self.index, "count": self.count})


def _check_disk_space(files: Sequence[RemoteFile]) -> None:
    need: dict[Path, int] = {}
    for f in files:
        have = f.partial.stat().st_size if f.partial.is_file() else 0
        need[f.target.parent] = need.get(f.target.parent, 0) + max((f.size or 0) - have, 0)
    for folder, n in need.items():
        free = shutil.disk_usage(folder).free
        if n > free:
            raise DownloadError(f"not enough disk space in {folder}: {n / 1e9:.2f} GB needed, {free / 1e9:.2f} GB "
                                "free")


class _PartialFile:
    """``<target>.<etag>.incomplete`` opened for appending, with a sha256 of every byte it holds. Partials of an
    older version of the file (another ETag) and oversized ones are removed first."""

    def __init__(self, remote: RemoteFile):
        for stale in remote.target.parent.glob(f"{remote.target.name}.*incomplete"):
            if stale != remote.partial:
                stale.unlink()
        if remote.partial.is_file() and remote.size is not None and remote.partial.stat().st_size > remote.size:
            remote.partial.unlink()
        self.digest = hashlib.sha256()
        if remote.sha256 and remote.partial.is_file():
            with open(remote.partial, "rb") as kept:
                while block := kept.read(CHUNK_BYTES):
                    self.digest.update(block)
        self.file = open(remote.partial, "ab")
        self.size = self.file.tell()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.digest = hashlib.sha256()
        self.size = 0

    def close(self) -> None:
        self.file.close()


def _transfer(remote: RemoteFile, partial: _PartialFile, progress: _Progress, read_timeout: float) -> int:
    """One GET from the partial file's end; returns the bytes received (raises on HTTP and network errors)."""
    offset = partial.size
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    received = 0
    with urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers), timeout=read_timeout) as resp:
        partial_content = getattr(resp, "status", None) == 206
        if offset and partial_content and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise DownloadError(f"{remote.label}: the server answered the range request with "
                                f"{resp.headers.get('Content-Range')!r}, expected bytes {offset}-")
        if offset and not partial_content:  # the server ignored Range and sends the whole file
            logger.info("%s: the server does not resume, downloading it again from the start", remote.label)
            partial.restart()
            progress.restart()
        while chunk := resp.read1(CHUNK_BYTES):  # what has arrived: a reset loses no received byte
            partial.write(chunk)
            received += len(chunk)
            progress.advance(len(chunk))
    return received


def _fetch_one(remote: RemoteFile, progress: _Progress, index: int, read_timeout: float) -> None:
    remote.target.parent.mkdir(parents=True, exist_ok=True)
    partial = _PartialFile(remote)
    try:
        progress.start(index, remote, partial.size)
        while remote.size is None or partial.size < remote.size:
            before = partial.size
            try:
                got = _transfer(remote, partial, progress, read_timeout)
            except DownloadError:
                raise
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{remote.label}: HTTP {exc.code} {exc.reason} from {remote.url}") from exc
            except (OSError, http.client.HTTPException) as exc:  # dropped or stalled: resume if bytes came
                if partial.size == before:
                    raise DownloadError(
                        f"{remote.label}: download interrupted ({type(exc).__name__}: {_first_line(exc)}); "
                        f"{partial.size} bytes are kept in {remote.partial} and the next run resumes there") from exc
                logger.warning("%s: connection lost after %d bytes (%s), resuming", remote.label, partial.size, exc)
                continue
            if remote.size is None or got == 0:
                break
    finally:
        partial.close()
    if remote.size is not None and partial.size != remote.size:
        raise DownloadError(f"{remote.label}: got {partial.size} bytes, expected {remote.size}; the next run "
                            f"resumes from {remote.partial}")
    if remote.sha256 and partial.digest.hexdigest() != remote.sha256:
        remote.partial.unlink()
        raise DownloadError(f"{remote.label}: the downloaded file is corrupt (sha256 {partial.digest.hexdigest()}, "
                            f"expected {remote.sha256}); it was deleted, run again to download it anew")
    os.replace(remote.partial, remote.target)
    progress.finish()
    logger.info("downloaded %s → %s", remote.label, remote.target)


def download(files: Sequence[RemoteFile], *, progress: ProgressCallback | None = None, bar: bool = True,
             read_timeout: float = READ_TIMEOUT) -> list[Path]:
    """Fetch ``files`` one after the other (each resumed from its partial file when one is there); returns the
    targets. Raises DownloadError (a MissingWeightsError) naming the file and the reason."""
    files = [f for f in files if not f.target.is_file()]
    for f in files:
        f.target.parent.mkdir(parents=True, exist_ok=True)
    _check_disk_space(files)
    tracker = _Progress(files, progress, bar)
    try:
        for index, remote in enumerate(files):
            _fetch_one(remote, tracker, index, read_timeout)
    finally:
        tracker.close()
    return [f.target for f in files]


def fetch_hub_files(items: Sequence[tuple[str, str, Path]], *, revision: str = "main", endpoint: str | None = None,
                    timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                    progress: ProgressCallback | None = None, bar: bool = True) -> list[Path]:
    """Download ``(repo_id, filename, target)`` items that are not yet at their target. Every file is resolved
    first (sizes for one overall progress and the disk-space check); the first failure stops everything."""
    todo = [(repo, name, Path(target)) for repo, name, target in items if not Path(target).is_file()]
    if not todo:
        return []
    _check_online()
    remotes = [resolve_hub_file(repo, name, target, revision=revision, endpoint=endpoint, timeout=timeout)
               for repo, name, target in todo]
    return download(remotes, progress=progress, bar=bar, read_timeout=read_timeout)


def fetch_url(url: str, target, *, timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
              progress: ProgressCallback | None = None, bar: bool = True) -> Path:
    """Download a plain URL to ``target`` (same partial-file, resume, offline and progress rules)."""
    target = Path(target)
    if target.is_file():
        return target
    download([resolve_url(url, target, timeout=timeout)], progress=progress, bar=bar, read_timeout=read_timeout)
    return target
