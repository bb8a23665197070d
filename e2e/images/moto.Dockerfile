# syntax=docker/dockerfile:1
# In-cluster AWS stand-in for the kind e2e: moto in server mode (S3, IAM, STS, EC2), built from
# PyPI at the version the test suite uses, so the e2e needs no image from another registry.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${PYTHON_IMAGE}
ARG MOTO_VERSION=5.2.5
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install "moto[server]==${MOTO_VERSION}"
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["moto_server"]
CMD ["-H", "0.0.0.0", "-p", "5000"]
