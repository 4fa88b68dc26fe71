"""``python -m serve``: serve one weight file over HTTP (uvicorn).

    python -m serve --weights zoo/resnet20-fashionmnist/model.safetensors --port 8000
    python -m serve --weights zoo/resnet20-fashionmnist/model.safetensors --prepare  # cache only
    curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10'
    python -m serve --slo-ms 10  # per request the most accurate config answering within 10 ms

Exit status: 2 for an invalid weight file or bad arguments (one line on stderr, nothing bound),
3 if uvicorn could not start (e.g. the port is taken) or ``--prepare`` failed. On SIGINT/SIGTERM
uvicorn shuts down gracefully and then re-raises the signal, so the process ends by that signal.
"""

from __future__ import annotations

import argparse
import logging
import sys

from serve.http import HttpLimits


def _parser() -> argparse.ArgumentParser:
    from serve.app import DEFAULT_WEIGHTS
    from serve.runners import BACKENDS
    from serve.settings import Settings, default_threads

    d, h = Settings(), HttpLimits()
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the model.safetensors to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="onnxruntime (fast; verified ONNX cached) or torch (eager)")
    p.add_argument("--cache-dir", default=None,
                   help="ONNX cache folder (default $PARECO_CACHE, else ~/.cache/pareco)")
    p.add_argument("--no-cache", action="store_true", help="export through torch at every start")
    p.add_argument("--prepare", action="store_true",
                   help="build and verify the ONNX cache for --weights, then exit (no server)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per inference call")
    p.add_argument("--batch-delay-ms", type=float, default=d.batch_delay_ms,
                   help="how long a micro-batch waits to fill (0: only what queued meanwhile)")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="/predict requests in progress before new ones get 503 (unread)")
    p.add_argument("--reject-delay-ms", type=float, default=d.reject_delay_ms,
                   help="hold a 503 0.5-1.5 x this long (drawn per refusal) before answering "
                        "it (0: at once, e.g. behind a load balancer that fails over)")
    p.add_argument("--slo-ms", type=float, default=None, metavar="P",
                   help="SLO mode: each request gets the most accurate config (within its budget) "
                        "predicted to answer within P ms including the queue wait; a request "
                        "even the fastest config cannot answer in time gets 503 (default: off)")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="intra-op threads per inference call")
    p.add_argument("--max-files", type=int, default=d.max_files, help="files per request (413)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                   help="request body limit in MiB (413)")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per image (413)")
    p.add_argument("--limit-concurrency", type=int, default=h.limit_concurrency,
                   help="connections or tasks before uvicorn answers 503 (probes exempt)")
    p.add_argument("--keep-alive-s", type=float, default=h.keep_alive_s,
                   help="idle keep-alive timeout")
    p.add_argument("--header-timeout-s", type=float, default=h.header_timeout_s,
                   help="a request head must arrive within this (408)")
    p.add_argument("--body-timeout-s", type=float, default=h.body_timeout_s,
                   help="a request body must arrive within this after its head (408)")
    p.add_argument("--max-header-kb", type=float, default=h.max_header_bytes / 1024,
                   help="request line + headers size limit in KiB (431)")
    p.add_argument("--max-headers", type=int, default=h.max_headers,
                   help="request header count limit (431)")
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: it costs CPU on the event loop)")
    return p


def _prepare(app) -> int:
    """Run the start-up (export, verify, cache) without serving; 0 once ready."""
    import asyncio

    server = app.state.server

    async def go() -> None:
        await server.start()
        await server.stop()

    asyncio.run(go())
    if not server.ready:
        print(f"serve: error: {server.failure}", file=sys.stderr)
        return 3
    print(f"serve: ONNX cache ready in {server.settings.cache_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.slo_ms is not None and not 0 < args.slo_ms < float("inf"):
        parser.error(f"--slo-ms must be a finite number of milliseconds > 0, got {args.slo_ms:g}")
    from serve.app import create_app
    from serve.http import uvicorn_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        limits = HttpLimits(args.limit_concurrency, args.keep_alive_s, args.header_timeout_s,
                            args.body_timeout_s, int(args.max_header_kb * 1024), args.max_headers)
        app = create_app(args.weights, cache_dir=False if args.no_cache else (args.cache_dir or True),
                         backend=args.backend, max_batch=args.max_batch,
                         batch_delay_ms=args.batch_delay_ms, max_inflight=args.max_inflight,
                         reject_delay_ms=args.reject_delay_ms, slo_ms=args.slo_ms,
                         threads=args.threads, max_files=args.max_files,
                         max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels)
    except (ValueError, RuntimeError) as e:  # WeightFileError is a ValueError
        hint = (" (train one with `python -m pareco.train` or pass --weights)"
                if "no such weight file" in str(e) else "")
        print(f"serve: error: {e}{hint}", file=sys.stderr)
        return 2
    if args.prepare:
        return _prepare(app)

    import uvicorn

    config = uvicorn_config(app, host=args.host, port=args.port, limits=limits,
                            access_log=args.access_log)
    logging.getLogger("serve").info(
        "HTTP: %s, event loop: %s, access log %s",
        "h11" if config.http == "h11" else "httptools (guarded)", config.loop, "on" if args.access_log else "off")
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
