# One image for every part of the pipeline; the Kubernetes manifests (k8s/) pick the command:
#   txn worker -l info                       Faust processing worker (StatefulSet)
#   txn sink -l info                         MongoDB sink worker (Deployment)
#   uvicorn views.api:app --host $(BIND_HOST) --port 8000                         API
#   panel serve dashboards/live.py --address $(BIND_HOST) --port 5006 ...         dashboard
#   dbt build --profiles-dir .    (working dir /app/dbt)                          dbt (CronJob)
# Build elsewhere (nothing in this repository needs Docker):
#   docker build -t txn-analytics:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, pinned by the lock file (`make lock`): a layer that changes only with it.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install -r requirements/runtime.txt
# Then the project (its requirements are already met: it adds only itself).
COPY setup.cfg pyproject.toml README.md ./
COPY app/ app/
COPY agents/ agents/
COPY tables/ tables/
COPY views/ views/
COPY dashboards/ dashboards/
RUN pip install ".[api,dashboard,dbt]"

# The dbt project, run from its folder (/app/dbt: dbt build --profiles-dir .).
COPY dbt/ dbt/

# An unprivileged user (the manifests run as uid 10001); /data is the worker's RocksDB volume.
RUN groupadd --gid 10001 txn \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app txn \
    && mkdir -p /data \
    && chown -R txn:txn /app /data
USER 10001
# BIND_HOST: in a container the servers listen on every interface (127.0.0.1 outside one);
# the k8s manifests set it too.
ENV DATA_DIR=/data \
    BIND_HOST=0.0.0.0

EXPOSE 6066 8000 5006
CMD ["txn", "worker", "-l", "info"]
