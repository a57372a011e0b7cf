"""Lip-sync whole catalogues on a Ray cluster: ``python -m latentsync batch MANIFEST`` (see ``cli``).

Optional: needs ``pip install -r requirements-cluster.txt`` (Ray). Nothing outside this package imports Ray,
and inside it Ray is imported only by the functions that start or use it, so importing ``latentsync`` (ComfyUI,
the single-file CLI) never needs Ray.

* ``manifest``   — JSON lines / CSV of jobs → checked ``Job`` list (every problem with its line number)
* ``outputs``    — what a finished output is (resume skips it)
* ``worker``     — ``LipSyncWorker``: a long-lived actor that keeps the models loaded between jobs
* ``connection`` — start a local Ray or join a cluster, failing fast on an unreachable address
* ``runner``     — ``run_batch``: hand jobs to free workers, retries after a worker died, one progress bar
* ``cli``        — ``add_arguments`` / ``main`` for the ``batch`` subcommand
"""
