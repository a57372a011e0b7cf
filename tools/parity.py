"""Run our implementation against parity fixtures: python tools/parity.py PARITY_DIR [--only NAME ...]

Every fixture sub-folder present in PARITY_DIR (unet, whisper, ddim, affine, mask, e2e) is checked by the module
tools/parity_checks/<name>.py; one JSON line per fixture; exit status 1 if any fixture fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from tools.parity_checks import affine, ddim, e2e, mask, unet, whisper

CHECKERS = {"unet": unet, "whisper": whisper, "ddim": ddim, "affine": affine, "mask": mask, "e2e": e2e}
FIXTURES = tuple(CHECKERS)


def run_fixture(name: str, folder: Path) -> dict:
    try:
        result = CHECKERS[name].check(folder)
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
