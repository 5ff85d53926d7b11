"""The API's routes, one router per concept; :func:`~privsynth.service.app.create_app` includes them all."""

from privsynth.service.routes import datasets, jobs, meta, releases, users

ROUTERS = (meta.router, users.router, datasets.router, jobs.router, releases.router)

__all__ = ["ROUTERS"]
