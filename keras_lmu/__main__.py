"""``python -m keras_lmu``: the ``keras-lmu`` command."""

import sys

from keras_lmu.cli import main

if __name__ == "__main__":
    sys.exit(main())
