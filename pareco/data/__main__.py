"""``python -m pareco.data [NAME] [--data-dir D] [--no-download]``: find (or download) a dataset.

Looks where training looks (``--data-dir``, ``$PARECO_DATA``, the Debian package's folder, the
user cache), downloads through torchvision into the cache when allowed, and prints the split
sizes; exits 1 with a message naming the options when the dataset cannot be had.
"""

from __future__ import annotations

import argparse
import sys

from pareco.data import DATASETS, DataError, load_data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pareco.data", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", default="fashion-mnist", choices=DATASETS)
    p.add_argument("--data-dir", help="folder searched first")
    p.add_argument("--no-download", action="store_true", help="never download")
    a = p.parse_args(argv)
    try:
        data = load_data(a.name, data_dir=a.data_dir, download=not a.no_download)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.name}: {len(data.train) + len(data.val)} training images "  # type: ignore[arg-type]
          f"({len(data.val)} of them the validation split), {len(data.test)} test images, "  # type: ignore[arg-type]
          f"{data.num_classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
