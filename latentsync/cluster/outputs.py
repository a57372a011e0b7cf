"""When is a job's output finished (so that re-running a manifest skips it)?

A finished output is a file under the job's final output name that ``latentsync.video.probe`` reads as a video
with at least one frame, and whose last second decodes without error. Outputs are written atomically (encoded
under a temporary name in the same folder and renamed at the end), so a file under the final name is normally
complete; the decode of the tail also rejects a file cut short by something else (a full disk, a copy that was
interrupted). What the output was made with (settings, weights) is not recorded: delete an output, or run the
batch with ``--force``, to make it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)
TAIL_SECONDS = 1.0


def is_finished(path) -> bool:
    """True when ``path`` is a complete, readable video (see the module docstring)."""
    import av

    from ..video import probe

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        info = probe(path)
        if info.n_frames < 1:
            return False
        with av.open(str(path)) as container:
            return _tail_decodes(container, info.duration)
    except (InputError, av.error.FFmpegError, OSError, ValueError) as e:
        log.info("%s is not a finished output (%s); it will be made again", path, e)
        return False


def _tail_decodes(container, duration: float) -> bool:
    """Seek to the last second and decode to the end: at least one frame, no decoding error."""
    stream = container.streams.video[0]
    if stream.time_base is not None and duration > TAIL_SECONDS:
        container.seek(int((duration - TAIL_SECONDS) / stream.time_base), stream=stream, backward=True)
    frames = sum(1 for _ in container.decode(stream))
    return frames > 0
