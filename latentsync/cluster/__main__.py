"""``python -m latentsync.cluster MANIFEST ...`` — the same as ``python -m latentsync batch MANIFEST ...``."""

from .cli import main

raise SystemExit(main())
