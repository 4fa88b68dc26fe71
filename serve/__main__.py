"""``python -m serve``: serve one weight file over HTTP (uvicorn).

    python -m serve --weights zoo/resnet20-fashionmnist/model.safetensors --port 8000
    curl -F file=@shirt.png 'http://127.0.0.1:8000/predict?mflops=10'

Exit status: 2 for an invalid weight file or bad arguments (one line on stderr, nothing bound),
3 if uvicorn could not start (e.g. the port is taken). On SIGINT/SIGTERM uvicorn shuts down
gracefully and then re-raises the signal, so the process ends by that signal.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    from serve.app import DEFAULT_WEIGHTS, default_threads
    from serve.runners import BACKENDS

    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the model.safetensors to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="onnxruntime (fast; sessions built in memory) or torch (eager)")
    p.add_argument("--max-batch", type=int, default=32, help="images per inference call")
    p.add_argument("--batch-delay-ms", type=float, default=2.0,
                   help="how long a micro-batch waits to fill (0: only what queued meanwhile)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting per configuration before answering 503")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="intra-op threads per inference call")
    p.add_argument("--max-files", type=int, default=64, help="files per request (more: 413)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit in MiB (413)")
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: it costs CPU on the event loop)")
    return p


def _available(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def http_and_loop() -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop: httptools and uvloop when installed (the ``serve``
    extra installs ``uvicorn[standard]``), else the pure-Python h11 and asyncio."""
    return ("httptools" if _available("httptools") else "h11",
            "uvloop" if _available("uvloop") else "asyncio")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pareco.weightfile import WeightFileError
    from serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        app = create_app(args.weights, backend=args.backend, max_batch=args.max_batch,
                         batch_delay_ms=args.batch_delay_ms, max_queue=args.max_queue,
                         threads=args.threads, max_files=args.max_files,
                         max_body_bytes=int(args.max_body_mb * 2**20))
    except (WeightFileError, ValueError, RuntimeError) as e:
        hint = (" (train one with `python -m pareco.train` or pass --weights)"
                if isinstance(e, WeightFileError) and "no such weight file" in str(e) else "")
        print(f"serve: error: {e}{hint}", file=sys.stderr)
        return 2

    import uvicorn

    http, loop = http_and_loop()
    logging.getLogger("serve").info("HTTP: %s, event loop: %s, access log %s", http, loop,
                                    "on" if args.access_log else "off")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", http=http,
                            loop=loop, access_log=args.access_log)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
