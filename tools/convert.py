#!/usr/bin/env python
"""Launcher for `deploy.tools.convert` (the same as `kvision convert`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.tools.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
