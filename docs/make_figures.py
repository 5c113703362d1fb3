"""Draw the figures of the README (``docs/legendre.png``).

Run from anywhere: ``python docs/make_figures.py``. The drawing code is in
:mod:`keras_lmu.plots` (shared with ``keras-lmu plot-basis``); it uses only the
pure NumPy functions of :mod:`keras_lmu.legendre`, so any Keras backend will do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_lmu.plots import make_legendre_figure

HERE = Path(__file__).resolve().parent

__all__ = ["make_legendre_figure", "main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the figures to")
    args = parser.parse_args()
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out '{args.out}' is a file; give a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out: cannot create the folder '{args.out}': {error}")
    path = args.out / "legendre.png"
    make_legendre_figure(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
