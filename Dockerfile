# Two images from one Dockerfile, both at the exact versions of constraints.txt:
#   docker build -t perennial .                            every `perennial` subcommand: learn, pretrain,
#                                                          serve, simulate, broker, demo, evaluate
#   docker build --target server -t perennial-server .     `perennial serve` only: no torch, pandas,
#                                                          Avalanche or local broker (about a tenth the size)
# Run: docker run -p 8000:8000 perennial-server serve --host 0.0.0.0

FROM python:3.11-slim AS build-server
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY perennial ./perennial
COPY service ./service
COPY learners ./learners
COPY streams ./streams
RUN python -m venv /opt/perennial \
    && /opt/perennial/bin/pip install -c constraints.txt '.[serve]'

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# CPU-only torch and torchvision from PyTorch's CPU wheel index keep the image small (no CUDA); the
# constraints pin their versions (2.14.1 matches 2.14.1+cpu).
RUN python -m venv /opt/perennial \
    && /opt/perennial/bin/pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu \
        torch torchvision
COPY perennial ./perennial
COPY service ./service
COPY learners ./learners
COPY streams ./streams
RUN /opt/perennial/bin/pip install -c constraints.txt '.[serve,learn,evaluate,demo]'

FROM python:3.11-slim AS runtime
ENV PATH=/opt/perennial/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PERENNIAL_REGISTRY__PATH=/var/lib/perennial/registry \
    PERENNIAL_LEARN__CHECKPOINT_PATH=/var/lib/perennial/checkpoint/learner.safetensors \
    PERENNIAL_SERVE__HOST=0.0.0.0 \
    PERENNIAL_LEARN__METRICS_HOST=0.0.0.0 \
    PERENNIAL_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
RUN useradd --system --uid 10001 --home-dir /var/lib/perennial --create-home perennial
WORKDIR /var/lib/perennial
EXPOSE 8000 9101
# For `serve`; a learner container points PERENNIAL_HEALTHCHECK_URL at its metrics port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PERENNIAL_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["perennial"]
CMD ["serve"]

FROM runtime AS server
COPY --from=build-server /opt/perennial /opt/perennial
USER 10001

# The default target (last): every subcommand.
FROM runtime AS full
COPY --from=build /opt/perennial /opt/perennial
USER 10001
