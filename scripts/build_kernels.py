"""Rebuild the C kernel modules of `kernels/` whose `.wasm` is missing or stale.

Each `kernels/NAME.c` is one module, `kernels/NAME.wasm`, with the entries it
defines. A module is current when its `sharedwasm.build` section records the
digest of its source, the header, the ABI stub and the options it is built
with now (`kernels/library.py` holds the options per module). With `--check`, nothing
is built and the exit status says whether everything is current.

    python scripts/build_kernels.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sharedwasm

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
sys.path.insert(0, str(KERNELS))

from library import BUILD_OPTIONS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale modules, build none")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(KERNELS.glob("*.c")):
        options = BUILD_OPTIONS.get(source.stem, {})
        output = source.with_suffix(".wasm")
        if sharedwasm.build_is_current(source, output, **options):
            continue
        stale.append(output.name)
        if not args.check:
            sharedwasm.build(source, output, **options)
            print(f"build_kernels: built {output.relative_to(KERNELS.parent)}", file=sys.stderr)
    if args.check and stale:
        print(f"build_kernels: stale: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
