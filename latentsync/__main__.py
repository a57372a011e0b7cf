"""``python -m latentsync ...`` — see ``latentsync.cli``."""

from .cli import main

raise SystemExit(main())
