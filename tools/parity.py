"""Run our implementation against parity fixtures: python tools/parity.py PARITY_DIR [--only NAME ...]

Every fixture sub-folder present in PARITY_DIR (unet, whisper, affine, mask, ddim) is checked by the module
tools/parity_checks/<name>.py; one JSON line per fixture; exit status 1 if any fixture fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ("unet", "whisper", "ddim", "affine", "mask")


def run_fixture(name: str, folder: Path) -> dict:
    try:
        module = importlib.import_module(f"tools.parity_checks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("tools.parity_checks"):
            return {"fixture": name, "ok": None, "status": "pending", "why": "no checker yet"}
        raise
    try:
        result = module.check(folder)
    except Exception as exc:  # report, don't die: other fixtures still run
        logging.getLogger("parity").debug("fixture %s crashed", name, exc_info=True)
        return {"fixture": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(limit=3)}
    result = {"fixture": name, **result}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parity_dir", type=Path)
    parser.add_argument("--only", nargs="*", choices=FIXTURES, help="check only these fixtures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.parity_dir.is_dir():
        parser.error(f"not a folder: {args.parity_dir}")
    sys.path.insert(0, str(ROOT))
    names = [n for n in (args.only or FIXTURES) if (args.parity_dir / n).is_dir()]
    if not names:
        parser.error(f"no fixture folders ({', '.join(FIXTURES)}) in {args.parity_dir}")
    failed = False
    for name in names:
        result = run_fixture(name, args.parity_dir / name)
        print(json.dumps(result), flush=True)
        failed |= result.get("ok") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
