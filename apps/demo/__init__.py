"""``driftline demo``: a simulated fleet of camera devices, the real sidecar and the real service.

The only place that composes the edge sidecar and the cloud service; neither imports the other.
"""
