# syntax=docker/dockerfile:1.7
# Two images from one file, built by `make image` (tags: see airflow_project/release/project.py):
#   docker build --target airflow   -t airflow-project/airflow:<tag> .
#   docker build --target predictor -t airflow-project/predictor:<tag> .
# Requirements are exported from uv.lock into image/ (`make requirements`); the airflow
# set excludes kserve because kserve 0.21 pins psutil<6 and Airflow 3.3 needs psutil>=6.1
# (see airflow_project/release/requirements.py).

# Keep AIRFLOW_VERSION equal to the FROM tag below and to pyproject.toml (tests/chart checks).
ARG AIRFLOW_VERSION=3.3.2

# ------------------------------------------------------------------ project wheel
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY airflow_project ./airflow_project
# hatchling builds the wheel in an isolated environment; nothing of this stage ships.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ------------------------------------------------------------------ airflow
FROM apache/airflow:3.3.2-python3.11 AS airflow
ARG AIRFLOW_VERSION
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/airflow-project
LABEL org.opencontainers.image.title="airflow-project airflow" \
      org.opencontainers.image.description="Apache Airflow with the wachttijden DAGs and the airflow_project package" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# The base image's airflow user, by uid (hadolint DL3066: a name may not resolve on the host;
# Kubernetes' runAsNonRoot checks need the number).
USER 50000
COPY --chown=airflow:0 image/requirements-airflow.txt /tmp/requirements-airflow.txt
COPY --from=wheel --chown=airflow:0 /dist/ /tmp/dist/
# apache-airflow==${AIRFLOW_VERSION} next to the lock export so pip can never move Airflow.
# The project wheel goes in with --no-deps: its own metadata asks for kserve, which must
# not be in this image (psutil conflict); all its other dependencies are in the export.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt \
 && pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/requirements-airflow.txt /tmp/dist "${HOME}/.cache"
COPY --chown=airflow:0 airflow_project/dags/ /opt/airflow/dags/
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLOPS_DEPLOY_TARGET=kubernetes
# Airflow components are probed by the Helm chart (liveness/readiness per component);
# a single image-level HEALTHCHECK cannot fit scheduler, api-server and task pods.
HEALTHCHECK NONE

# ------------------------------------------------------------------ predictor
FROM python:3.11-slim-bookworm AS predictor
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/airflow-project
LABEL org.opencontainers.image.title="airflow-project predictor" \
      org.opencontainers.image.description="KServe model server for the wachttijden model (loads from the MLflow registry)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true
RUN groupadd --system --gid 10001 mlops \
 && useradd --system --uid 10001 --gid mlops --home-dir /home/mlops --create-home --shell /usr/sbin/nologin mlops
COPY image/requirements-predictor.txt /tmp/requirements-predictor.txt
COPY --from=wheel /dist/ /tmp/dist/
# kserve, scikit-learn, skops, mlflow-skinny, pandas, numpy at the training versions;
# the project wheel with --no-deps (it would otherwise pull Airflow in).
RUN pip install --no-cache-dir -r /tmp/requirements-predictor.txt \
 && pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf /tmp/requirements-predictor.txt /tmp/dist /root/.cache
WORKDIR /home/mlops
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4).status == 200 else 1)"]
# The InferenceService passes `--model_name wachttijden --model-uri models:/wachttijden/<v>
# --http_port 8080 --host 0.0.0.0` as container args (the CLI's own default host is 127.0.0.1).
ENTRYPOINT ["mlops", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
