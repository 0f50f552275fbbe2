"""Command-line tools behind `kvision convert` and `kvision inspect` (also run from tools/)."""
