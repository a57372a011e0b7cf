"""Start or join Ray for one batch, failing fast with a readable message when the cluster cannot be reached.

Without an address a local Ray is started on this machine (dashboard off, a small object store: only job
descriptions and results travel through it) and shut down afterwards. With an address (``HOST:PORT`` printed by
``ray start --head``, ``auto`` for the cluster this machine belongs to, or ``ray://HOST:PORT`` for Ray Client)
the address is checked first: ``ray.init`` on an address that accepts connections but is not a Ray head
retries for minutes. A Ray head's GCS is a gRPC server, so it answers the HTTP/2 connection preface with a
SETTINGS frame at once; a closed port, a host that does not answer or a server that is not HTTP/2 is reported
within ``timeout_s``. When Ray is already initialised in this process (tests, a notebook) it is used as it is.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

from ..errors import LatentSyncError

log = logging.getLogger(__name__)

DEFAULT_PORT = 6379  # ray start --head's default GCS port
OBJECT_STORE_BYTES = 128 * 1024 ** 2  # local Ray: job descriptions and results only
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
HTTP2_SETTINGS_TYPE = 0x04
AUTH_HINT = ("If the cluster uses token authentication (Ray turns it on when ~/.ray/auth_token exists on the head), "
             "run the batch with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN.")


class ClusterError(LatentSyncError):
    """Ray could not be started or joined, or the cluster has no room for a worker."""


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``ray://HOST:PORT`` / ``[IPv6]:PORT`` / ``HOST`` → (host, port)."""
    rest = address.strip().removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or "]" in port:  # no port given (or the colon belongs to a bracketed IPv6 address)
        host, port = rest, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray-address {address!r} is not HOST:PORT (ray start --head prints the address).")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise ClusterError unless a gRPC (HTTP/2) server answers at ``address`` within about ``timeout_s``."""
    host, port = split_address(address)
    hint = (f"Is the head running (`ray start --head` prints its address) and is port {port} open from this "
            f"machine?")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            header = _read_exactly(conn, 9)
    except socket.gaierror as e:
        raise ClusterError(f"Cannot reach the Ray cluster at {address}: unknown host {host!r} ({e}).") from None
    except TimeoutError:
        raise ClusterError(f"Cannot reach the Ray cluster at {address}: no answer within {timeout_s:g} s. "
                           f"{hint}") from None
    except OSError as e:
        raise ClusterError(f"Cannot reach the Ray cluster at {address}: {e.strerror or e}. {hint}") from None
    if len(header) < 9 or header[3] != HTTP2_SETTINGS_TYPE:
        raise ClusterError(f"{address} answers but is not a Ray head (no gRPC server there). Use the address "
                           f"that `ray start --head` printed (default port {DEFAULT_PORT}).")


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def ray_session(address: str | None = None, *, local_cpus: int | None = None, timeout_s: float = 5.0,
                worker_logs: bool = False) -> Iterator[dict]:
    """Ray for the duration of the ``with`` block; yields the cluster's total resources (``{"CPU": 8, "GPU": 2,
    ...}``). Shuts Ray down afterwards unless it was already initialised by the caller. ``worker_logs``: show
    the workers' output here (else it stays in Ray's log files; job errors come back in the results anyway)."""
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed; batches need it: pip install -r requirements-cluster.txt "
                           "(the same Ray version on every node).") from None

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address and address != "auto":
        check_reachable(address, timeout_s)
    kwargs = dict(address=address) if address else dict(
        address="local", num_cpus=local_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES)
    # "local": a new Ray even when RAY_ADDRESS or an earlier `ray start` points elsewhere
    kwargs.update(configure_logging=False, log_to_driver=worker_logs)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
        if not address:
            raise ClusterError(f"Cannot start a local Ray: {e}") from None
        raise ClusterError(f"Cannot join the Ray cluster at {address}: {e}. {AUTH_HINT}") from None
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
