#!/usr/bin/env python
"""Launcher for `deploy.tools.inspect_tflite` (the same as `kvision inspect`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.tools.inspect_tflite import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
