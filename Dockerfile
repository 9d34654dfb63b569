# The service and the sidecar in one image (the Helm chart's default). Non-root, read-only friendly.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY driftline ./driftline
COPY service ./service
COPY edge_sidecar ./edge_sidecar
COPY dashboards ./dashboards
COPY apps ./apps
RUN pip install --no-cache-dir '.[service,sidecar]' && useradd --uid 10001 --no-create-home driftline
USER 10001
EXPOSE 8000 8470 8471
ENTRYPOINT ["driftline"]
CMD ["service"]
