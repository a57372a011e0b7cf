"""A batch manifest: one lip-sync job per JSON line or CSV row, checked completely before any work starts.

JSON lines (``.jsonl``/``.ndjson``/``.json``; blank lines and lines starting with ``#`` are skipped)::

    {"video": "in/ep01.mp4", "audio": "dub/ep01_de.wav", "output": "out/ep01_de.mp4"}
    {"video": "in/ep02.mp4", "audio": "dub/ep02_de.wav", "output": "out/ep02_de.mp4", "steps": 30, "face": "center"}

CSV (``.csv``; a header row names the columns; an empty cell means "the default")::

    video,audio,output,steps,face
    in/ep01.mp4,dub/ep01_de.wav,out/ep01_de.mp4,,
    in/ep02.mp4,dub/ep02_de.wav,out/ep02_de.mp4,30,center

``video`` and ``output`` are required; ``audio`` is optional (missing or empty: the video's own sound track).
Every other key is a ``LipSyncSettings`` field (steps, guidance, seed, face, length_mode, deepcache, ...) that
overrides the batch's defaults for that job. Relative paths are relative to the manifest's folder.

``read_manifest`` reports every problem at once, each with its line number (``check_manifest`` returns them
next to the valid jobs): a line that is not JSON / a JSON object, unknown keys, a missing required key, an
invalid setting, a missing input file, an output folder that does not exist, an output name that is not a
video, an output that overwrites an input, two jobs writing the same output. Nothing here imports Ray.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, LatentSyncError
from ..settings import LipSyncSettings

MEDIA_KEYS = ("video", "audio", "output")
REQUIRED_KEYS = ("video", "output")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Job:
    """One manifest entry: lip-sync ``video`` to ``audio`` (None: the video's own track) into ``output``."""

    line: int  # line of the manifest (1-based): how reports name the job
    video: Path
    audio: Path | None
    output: Path
    settings: LipSyncSettings


@dataclass(frozen=True)
class WorkUnit:
    """What one worker call does: a whole job (``segment`` None), or segment ``segment`` of the job's
    ``plan`` (latentsync.segments.SegmentPlan: one long video split across workers), written to ``part``."""

    job: Job
    segment: int | None = None
    plan: Any = None

    @property
    def key(self) -> tuple[int, int]:
        """(manifest line, segment index or -1): names the unit in progress reports."""
        return self.job.line, -1 if self.segment is None else self.segment

    @property
    def part(self) -> Path:
        """The lossless part file of a segment, hidden next to the output (removed once the output is joined)."""
        out = self.job.output
        return out.with_name(f".{out.stem}.part{self.segment:04d}.mkv")


class ManifestError(LatentSyncError):
    """The manifest has problems; ``problems`` lists (line, message), line 0 = the manifest as a whole."""

    def __init__(self, path, problems: list[tuple[int, str]]):
        self.path, self.problems = Path(path), sorted(problems)
        super().__init__(problems_text(path, problems, "nothing was started"))


def problems_text(path, problems: list[tuple[int, str]], consequence: str) -> str:
    """``Manifest jobs.jsonl has 2 problems (consequence):`` and one indented line per problem."""
    lines = [f"  line {line}: {message}" if line else f"  {message}" for line, message in sorted(problems)]
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return f"Manifest {path} has {count} ({consequence}):\n" + "\n".join(lines)


def settings_keys() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(LipSyncSettings))


def read_manifest(path, defaults: LipSyncSettings | None = None) -> list[Job]:
    """The manifest's jobs in file order, each with ``defaults`` (default: ``LipSyncSettings()``) updated by its
    own settings. Raises ManifestError listing every problem found (with line numbers)."""
    jobs, problems = check_manifest(path, defaults)
    if problems:
        raise ManifestError(path, problems)
    return jobs


def check_manifest(path, defaults: LipSyncSettings | None = None) -> tuple[list[Job], list[tuple[int, str]]]:
    """(the valid jobs, the problems as (line, message)): a job with a problem is left out, so the caller may
    run the others. Raises InputError only when the manifest cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Manifest not found: {path}")
    defaults = defaults if defaults is not None else LipSyncSettings()
    problems: list[tuple[int, str]] = []
    jobs = []
    for line, row in _rows(path, problems):
        try:
            jobs.append(_job(line, row, path.parent, defaults))
        except InputError as e:
            problems.append((line, str(e)))
    conflicts = _conflicts(jobs)
    problems += conflicts
    jobs = [j for j in jobs if j.line not in {line for line, _ in conflicts}]
    if not jobs and not problems:
        problems.append((0, "no jobs (every line is blank or a comment)"))
    return jobs, sorted(problems)


def _rows(path: Path, problems: list) -> list[tuple[int, dict]]:
    """(line, raw entry) pairs; unreadable lines go to ``problems``. CSV cells are marked as text (str)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"Cannot read the manifest {path}: {e}") from e
    first = next((s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")), "")
    is_json = path.suffix.lower() in JSON_SUFFIXES or (path.suffix.lower() != ".csv" and first.startswith("{"))
    return _json_rows(text, problems) if is_json else _csv_rows(text, problems)


def _json_rows(text: str, problems: list) -> list[tuple[int, dict]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append((line, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(entry, dict):
            problems.append((line, f"expected a JSON object like {{\"video\": ..., \"output\": ...}}, "
                                   f"got {type(entry).__name__}"))
            continue
        rows.append((line, entry))
    return rows


def _csv_rows(text: str, problems: list) -> list[tuple[int, dict]]:
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rows = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                duplicates = sorted({c for c in header if header.count(c) > 1})
                if duplicates:
                    problems.append((line, f"the header names a column twice: {', '.join(duplicates)}"))
                if "video" not in header:
                    problems.append((line, "the first row must be a header naming the columns "
                                           "(video, audio, output, settings...)"))
                continue
            if len(cells) != len(header):
                problems.append((line, f"{len(cells)} cells but the header has {len(header)} columns"))
                continue
            rows.append((line, {k: _CsvText(v.strip()) for k, v in zip(header, cells) if v.strip()}))
    except csv.Error as e:
        problems.append((reader.line_num, f"not valid CSV ({e})"))
    return rows


class _CsvText(str):
    """A CSV cell: text to convert to the setting's type (JSON values keep their own type)."""


def _job(line: int, entry: dict, base: Path, defaults: LipSyncSettings) -> Job:
    fields = settings_keys()
    unknown = sorted(set(entry) - set(MEDIA_KEYS) - set(fields))
    if unknown:
        raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"use video, audio, output and settings ({', '.join(fields)})")
    missing = [k for k in REQUIRED_KEYS if entry.get(k) in (None, "")]
    if missing:
        raise InputError(f"missing {' and '.join(map(repr, missing))}")
    overrides = {k: _setting_value(k, v, getattr(defaults, k)) for k, v in entry.items() if k in fields}
    try:
        settings = dataclasses.replace(defaults, **overrides)
    except (InputError, TypeError) as e:
        raise InputError(str(e).removeprefix("Invalid setting: ").rstrip(".")) from None
    video = _path(entry["video"], base, "video")
    audio = _path(entry["audio"], base, "audio") if entry.get("audio") not in (None, "") else None
    output = _path(entry["output"], base, "output")
    for what, p in (("video", video), ("audio", audio)):
        if p is not None and not p.is_file():
            raise InputError(f"{what} file not found: {p}" if not p.exists() else f"{what} is not a file: {p}")
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output must be a video file ({', '.join(VIDEO_SUFFIXES)}), got {output.name!r}")
    if not output.parent.is_dir():
        raise InputError(f"output folder does not exist: {output.parent}")
    if output.resolve() in {video.resolve(), audio.resolve() if audio else None}:
        raise InputError(f"output would overwrite this job's input: {output}")
    return Job(line=line, video=video, audio=audio, output=output, settings=settings)


def _path(value, base: Path, key: str) -> Path:
    if not isinstance(value, str):
        raise InputError(f"{key!r} must be a path (text), got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _setting_value(key: str, value, default):
    """CSV text → the type of the setting's default (bool/int/float/str); JSON values are passed as they are."""
    if not isinstance(value, _CsvText):
        return value
    text = str(value)
    if isinstance(default, bool):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise InputError(f"{key} must be true or false, got {text!r}")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise InputError(f"{key} must be a {type(default).__name__}, got {text!r}") from None
    return text


def _conflicts(jobs: list[Job]) -> list[tuple[int, str]]:
    """Two jobs writing the same output, or one job's output overwriting another job's input."""
    problems = []
    writer: dict[Path, int] = {}
    inputs = {p.resolve(): j.line for j in jobs for p in (j.video, j.audio) if p is not None}
    for job in jobs:
        out = job.output.resolve()
        if out in writer:
            problems.append((job.line, f"writes the same output as line {writer[out]}: {job.output}"))
        else:
            writer[out] = job.line
        if out in inputs and inputs[out] != job.line:
            problems.append((job.line, f"output overwrites the input of line {inputs[out]}: {job.output}"))
    return problems
