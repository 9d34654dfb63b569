"""The composition roots: the ``driftline`` command (:mod:`.cli`) and the demo (:mod:`.demo`).

They are the only code that wires the pure core (``driftline``) to its shells (``driftline.edge_sidecar``,
``driftline.service``): the core never imports a shell, and neither shell imports the other. The folder
is ``apps/`` in the repository, installed as ``driftline.apps``.
"""
