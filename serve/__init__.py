"""Width-switching inference server for PareCO weight files (DESIGN §9).

    python -m serve --weights zoo/resnet20-fashionmnist/model.safetensors [--backend torch]
    PARECO_WEIGHTS=path/model.safetensors uvicorn --factory serve.app:create_app --port 8000
    curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10&top_k=3'
    curl -H 'Content-Type: image/png' --data-binary @shirt.png 'http://127.0.0.1:8000/predict'

Modules, in request order:

- ``http`` / ``protocol``: uvicorn options and the guarded HTTP protocol (timeouts, header
  limits, JSON protocol errors, early refusal when full, probes exempt from the concurrency
  limit); ``limits``: the body-size middleware (413); ``metrics``: Prometheus, per-app registry;
- ``app``: ``create_app`` wires the rest; ``errors``: JSON errors, disconnects as 499;
- ``predict``: ``POST /predict``; ``query``: the strict query and its OpenAPI schema;
  ``selection``: budget -> config; ``admission``: the in-progress bound;
- ``bodies`` / ``multipart`` / ``images``: body -> batch in one worker-thread hop (Pillow,
  bounded by the output size, every mode scaled by its bit depth);
- ``batching``: per-config micro-batching; ``postprocess``: ranked softmax per batch;
- ``info``: ``/configs``, ``/configs/profile``, ``/healthz``, ``/readyz``, ``/metrics``;
- ``v2`` / ``v2codec``: the Open Inference Protocol (KServe v2) REST endpoints and wire format;
- ``explorer``: ``GET /``, the front explorer page (``static/``: HTML, JS, CSS; package data);
- ``server``: start-up (runners, latency table) and state; ``runners``: ONNX Runtime / torch;
  ``onnxcache``: verified ONNX per weight-file sha256, so later starts need no torch;
  ``model``: the torch-free view of a weight file; ``settings``: every tunable.

Design notes:

- The weight file is validated in ``create_app`` (not in the lifespan) so that an invalid file
  refuses to start before a port is bound; the slow part runs in a background task started by
  the lifespan, so ``/healthz`` answers during start-up and ``/readyz`` says when serving can begin.
- One runner per configuration: no width state is shared or mutated, so concurrent requests at
  different widths cannot interfere.
- The event loop only parses HTTP, validates the query, admits, and reads the body; parsing,
  decoding, preprocessing and queueing happen in ONE worker-thread hop; softmax + ranking run
  vectorized once per batch in the inference thread; the answer is serialized straight to JSON
  bytes (its shape is ``PredictResponse``); middleware is pure ASGI.
- ``expected_accuracy`` is the config's test accuracy (validation accuracy if absent); ranking
  for selection uses validation accuracy, as the front was chosen on it.
"""
