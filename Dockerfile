# langadapt CPU image. Build: docker build -t langadapt .   (GPU target: issue 6). Not built here: no Docker engine.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
# Convert the embedded base model at build time so the container starts without it.
ENV LANGADAPT_CACHE=/opt/langadapt-cache
RUN /opt/venv/bin/langadapt model info embedded --json

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 langadapt
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=langadapt /opt/langadapt-cache /opt/langadapt-cache
ENV PATH=/opt/venv/bin:$PATH LANGADAPT_CACHE=/opt/langadapt-cache HF_HUB_OFFLINE=1
USER langadapt
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["langadapt"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
