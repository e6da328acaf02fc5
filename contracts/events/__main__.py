"""``python -m contracts.events [--check]``: write (or check) the event schemas."""

from __future__ import annotations

import argparse
import sys

from contracts.events import SCHEMAS, expected_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.events", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    files = expected_files()
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    extra = [p for p in SCHEMAS.glob("*.json") if p not in files]
    if args.check:
        for path in [*stale, *extra]:
            print(f"stale: {path.name} (run `python -m contracts.events`)", file=sys.stderr)
        return 1 if stale or extra else 0
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path.name}")
    for path in extra:
        path.unlink()
        print(f"removed {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
