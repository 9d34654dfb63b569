"""Command-line shells around the core; see :mod:`driftline.cli.main`."""
