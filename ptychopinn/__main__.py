"""``python -m ptychopinn``: the ``ptychopinn`` command (see ``ptychopinn.cli``)."""

import sys

from ptychopinn.cli import main

if __name__ == "__main__":
    sys.exit(main())
