# CPU image serving the shipped Fashion-MNIST model:
#   docker build -t pareco-serve .
#   docker run --rm -p 8000:8000 pareco-serve
#   curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10'
# Serve another weight file: mount it and override the command, e.g.
#   docker run -v $PWD/zoo:/models pareco-serve python -m serve --weights /models/x/model.safetensors --host 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# CPU-only torch first (from the PyTorch CPU index), so the project's install keeps it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"

COPY pyproject.toml README.md ./
COPY pareco ./pareco
COPY export ./export
COPY serve ./serve
RUN pip install ".[serve]"

COPY zoo/resnet20-fashionmnist/model.safetensors ./zoo/resnet20-fashionmnist/model.safetensors

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin serve
USER serve

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["python", "-m", "serve", "--weights", "zoo/resnet20-fashionmnist/model.safetensors", "--host", "0.0.0.0", "--port", "8000"]
