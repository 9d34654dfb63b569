"""Driftline: drift and canary monitoring for ML models on edge devices and in the cloud.

The shared core (this package) is pure: sketches, window profiles, the wire format and the
statistics, plus a few I/O helpers named as such (data files, settings files). The edge sidecar
(``driftline.edge_sidecar``) and the cloud service (``driftline.service``) are thin shells around it;
the composition roots (``driftline.apps``: the ``driftline`` command and the demo) wire them together.
This package imports neither a shell nor a root (``tests/test_layering.py``).
"""

from __future__ import annotations

from .errors import DriftlineError, WireFormatError
from .profile import ProfileConfig, StreamKey, WindowProfile, merge_all
from .wire import Envelope, decode_envelope, encode_envelope, read_profile_file, write_profile_file

__version__ = "0.1.0"

__all__ = [
    "DriftlineError",
    "Envelope",
    "ProfileConfig",
    "StreamKey",
    "WindowProfile",
    "WireFormatError",
    "__version__",
    "decode_envelope",
    "encode_envelope",
    "merge_all",
    "read_profile_file",
    "write_profile_file",
]
