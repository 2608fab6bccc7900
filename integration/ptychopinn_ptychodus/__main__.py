"""``python -m ptychopinn_ptychodus``: the same as the ``ptychopinn-ptychodus`` command."""

import sys

from ptychopinn_ptychodus.launcher import main

sys.exit(main())
