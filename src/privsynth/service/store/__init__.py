"""The service's database: users, datasets, grants, jobs, releases and the audit log, beside the privacy ledger.

:class:`Store` is assembled from one part per concept (:mod:`.users`, :mod:`.audit`, :mod:`.datasets`,
:mod:`.jobs`, :mod:`.releases`) over the tables in :mod:`.tables`; the rows it hands out are in :mod:`.records`.
"""

from privsynth.service.store.core import Store
from privsynth.service.store.records import (
    DatasetRow,
    JobRow,
    ReleaseRow,
    ShareExceeded,
    TooManyJobs,
    User,
    hash_token,
    ledger_key,
)
from privsynth.service.store.tables import GRANT_ROLES, JOB_STATES, ROLES, SESSION_HOURS, TOKEN_PREFIX

__all__ = [
    "GRANT_ROLES",
    "JOB_STATES",
    "ROLES",
    "SESSION_HOURS",
    "TOKEN_PREFIX",
    "DatasetRow",
    "JobRow",
    "ReleaseRow",
    "ShareExceeded",
    "Store",
    "TooManyJobs",
    "User",
    "hash_token",
    "ledger_key",
]
