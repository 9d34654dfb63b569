"""The ``driftline`` command, a composition root: one module per subcommand; see :mod:`.main`."""
