"""Width-switching inference server for PareCO weight files (DESIGN §9).

    python -m serve --weights zoo/resnet20-fashionmnist/model.safetensors [--backend torch]
    PARECO_WEIGHTS=path/model.safetensors uvicorn --factory serve.app:create_app --port 8000
    curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10&top_k=3'
    curl -H 'Content-Type: image/png' --data-binary @shirt.png 'http://127.0.0.1:8000/predict'

Endpoints: ``POST /predict`` (multipart ``file`` parts, or one raw image as the whole body with
``Content-Type: image/*`` -- the single-image fast path, its ``filename`` is null; ``mflops`` or
``latency_ms`` budget, or none = the most accurate config; ``top_k``), ``GET /configs``,
``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), ``/docs`` and ``/openapi.json``.

Design notes:

- The weight file is loaded and validated in ``create_app`` (not in the lifespan) so that an
  invalid file refuses to start before a port is bound. The slow part (one runner per config,
  warm-up, batch-1 latency measurement) runs in a background task started by the lifespan, so
  ``/healthz`` answers during start-up and ``/readyz`` says when serving can begin.
- One runner per configuration (``serve.runners``): no width state is shared or mutated, so
  concurrent requests at different widths cannot interfere. Per configuration a micro-batcher
  (``serve.batching``) merges concurrent requests (up to ``--max-batch`` images, waiting at most
  ``--batch-delay-ms``, and only while other requests for that config are still being decoded)
  into one inference call on a dedicated thread pool, and refuses new work with 503 +
  ``Retry-After`` once ``--max-queue`` requests wait. A lone request is never delayed: the thread
  that decoded it runs its inference at once.
- The request path is lean: the event loop (uvloop + httptools when installed, access log off
  unless ``--access-log``) parses HTTP, validates the query with one pydantic model and reads the
  body; multipart parsing (``serve.multipart``), decoding, preprocessing and queueing happen in ONE
  worker-thread hop; softmax + ranking run vectorized once per batch in the inference thread; the
  answer is serialized straight to JSON bytes (its shape is ``PredictResponse``); middleware is
  pure ASGI.
- Preprocessing: first frame, EXIF orientation applied, converted to L or RGB, shorter side
  resized to the model's input size (bilinear) and centre-cropped, scaled to [0, 1], normalized
  with the weight file's mean/std (``serve.images``).
- ``expected_accuracy`` is the config's test accuracy (validation accuracy if absent); ranking
  for selection uses validation accuracy (``FrontConfig.accuracy``), as the front was chosen on it.
- Error statuses: see ``serve.app``.
"""
