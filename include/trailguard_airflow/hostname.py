"""The hostname a task instance records: Airflow's ``[core] hostname_callable`` in ``make up-scale``.

Two Celery workers on one machine would both record the machine's name; ``make up-scale`` gives each its
own (``TRAILGUARD_WORKER_HOSTNAME``), as two machines would have, so the UI, the REST API and
``make status`` tell them apart. Unset, it is Airflow's default, the fully qualified domain name.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("TRAILGUARD_WORKER_HOSTNAME", "").strip() or socket.getfqdn()
