"""HTTP routers, one module per resource; :mod:`driftline.service.app` mounts them."""
