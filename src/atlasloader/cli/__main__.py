"""``python -m atlasloader.cli``: the same as the ``atlasloader`` console script."""

import sys

from . import main

sys.exit(main())
