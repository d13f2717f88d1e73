# TrailGuard's Airflow image: the official Airflow image of the locked version plus the locked set.
# Build: docker compose build   (the tag below must match apache-airflow in requirements.lock; a test checks)
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.lock /opt/trailguard/requirements.lock
RUN pip install --no-cache-dir uv \
 && uv pip install --no-cache --compile-bytecode --python "$(command -v python)" -r /opt/trailguard/requirements.lock

COPY --chown=airflow:0 pyproject.toml README.md /opt/trailguard/
COPY --chown=airflow:0 include /opt/trailguard/include
RUN uv pip install --no-cache --no-deps --python "$(command -v python)" -e /opt/trailguard
