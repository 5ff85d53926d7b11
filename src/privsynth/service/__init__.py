"""The privsynth service: custodians register datasets and cap their budget, analysts request releases.

``privsynth serve`` runs it (FastAPI app, web UI and an in-process worker); ``privsynth worker`` runs more
workers against the same database. Needs the ``service`` extra (``pip install privsynth[service]``).
"""

from privsynth.service.app import ServiceConfig, create_app
from privsynth.service.store import Store

__all__ = ["ServiceConfig", "Store", "create_app"]
