# One image runs every `perennial` subcommand: serve, learn, pretrain, simulate, broker, demo.
# Build: docker build -t perennial .   Run: docker run -p 8000:8000 perennial serve --host 0.0.0.0

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# CPU-only torch and torchvision from PyTorch's CPU wheel index keep the image small (no CUDA).
RUN python -m venv /opt/perennial \
    && /opt/perennial/bin/pip install --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY perennial ./perennial
COPY service ./service
COPY learners ./learners
COPY streams ./streams
RUN /opt/perennial/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/perennial/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PERENNIAL_REGISTRY__PATH=/var/lib/perennial/registry \
    PERENNIAL_LEARN__CHECKPOINT_PATH=/var/lib/perennial/checkpoint/learner.safetensors \
    PERENNIAL_SERVE__HOST=0.0.0.0 \
    PERENNIAL_LEARN__METRICS_HOST=0.0.0.0 \
    PERENNIAL_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
COPY --from=build /opt/perennial /opt/perennial
RUN useradd --system --uid 10001 --home-dir /var/lib/perennial --create-home perennial
USER 10001
WORKDIR /var/lib/perennial
EXPOSE 8000 9101
# For `serve`; a learner container points PERENNIAL_HEALTHCHECK_URL at its metrics port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PERENNIAL_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["perennial"]
CMD ["serve"]
