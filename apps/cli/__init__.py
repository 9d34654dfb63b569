"""Command-line shells around the core; see :mod:`driftline.apps.cli.main`."""
