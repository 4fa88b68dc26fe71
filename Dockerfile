# CPU image serving the shipped Fashion-MNIST model, without torch at run time:
#   docker build -t pareco-serve .
#   docker run --rm -p 8000:8000 pareco-serve
#   curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10'
#
# Stage 1 (build) installs torch + the exporter and runs `python -m serve --prepare`: every front
# configuration is exported to ONNX, checked against PyTorch and written to the ONNX cache
# (serve/onnxcache.py). Stage 2 (runtime) has only what serving from that cache needs
# (onnxruntime, numpy, Pillow, FastAPI, uvicorn, prometheus-client, python-multipart): it is
# ready in about 2 s, and carries neither torch nor the exporter (its Python packages take about
# 210 MB, measured in a dev environment; torch's CPU wheel alone is several hundred MB).
# Another weight file: build its cache the same way (a stage like `build`, or any machine with
# torch: `PARECO_CACHE=DIR python -m serve --weights W --prepare`), then mount both, e.g.
#   docker run -v $PWD/zoo:/models -v $PWD/cache:/app/cache pareco-serve \
#       python -m serve --weights /models/x/model.safetensors --host 0.0.0.0
# Without a cache entry (and without torch) the server refuses to start with a clear message.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
COPY pyproject.toml README.md ./
COPY pareco ./pareco
COPY export ./export
COPY serve ./serve
RUN pip install ".[serve]"
COPY zoo/resnet20-fashionmnist/model.safetensors ./zoo/resnet20-fashionmnist/model.safetensors
RUN PARECO_CACHE=/app/cache python -m serve --prepare \
        --weights zoo/resnet20-fashionmnist/model.safetensors

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PARECO_CACHE=/app/cache
WORKDIR /app
# The serve extra minus the exporter (onnx, onnxscript) and minus torch (a core dependency of
# the distribution, hence --no-deps below): the run-time needs of a start from the cache.
RUN pip install "fastapi>=0.110" "uvicorn[standard]>=0.29" "python-multipart>=0.0.9" \
        "prometheus-client>=0.20" "pillow>=9" "onnxruntime>=1.18" "numpy>=1.24"
COPY pyproject.toml README.md ./
COPY pareco ./pareco
COPY export ./export
COPY serve ./serve
RUN pip install --no-deps .
COPY zoo/resnet20-fashionmnist/model.safetensors ./zoo/resnet20-fashionmnist/model.safetensors
COPY --from=build /app/cache /app/cache

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin serve
USER serve

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["python", "-m", "serve", "--weights", "zoo/resnet20-fashionmnist/model.safetensors", "--host", "0.0.0.0", "--port", "8000"]
