"""The FastAPI service: app factory, routes, auth, errors."""
