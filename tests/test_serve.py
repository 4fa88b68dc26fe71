"""The serving app through the real HTTP stack (httpx -> ASGI), on a tiny weight file.

Each app runs its lifespan on an anyio blocking portal (its own event loop thread); every test
sends real HTTP requests with ``httpx.AsyncClient(transport=httpx.ASGITransport(app))`` on that
loop, so concurrent requests really interleave with the micro-batchers.
"""

import asyncio
import io
import struct
import time
import zlib
from contextlib import contextmanager

import anyio.from_thread
import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from pareco.weightfile import WeightFileError, load_zoo_model
from serve.__main__ import main
from serve.app import create_app
from serve.images import preprocess
from serve.runners import TorchRunner
from serve.schemas import PredictResponse
from tinymodel import write_tiny_zoo_model

SIZE = 16
CLASSES = [f"item-{i}" for i in range(10)]
MAX_FILES = 8
MAX_BODY = 256 * 1024


# ------------------------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_torch_thread):
    path = tmp_path_factory.mktemp("serve") / "model.safetensors"
    return write_tiny_zoo_model(path, size=SIZE, classes=CLASSES, middle=[0.5, 0.7, 0.5, 0.7, 0.5, 0.7],
                                n_images=16)


@pytest.fixture(scope="module")
def zoo(weights):
    return load_zoo_model(weights)


class Served:
    """A started app; ``call(fn)`` runs ``await fn(client)`` on the app's event loop."""

    def __init__(self, portal, app):
        self.portal, self.app = portal, app

    def call(self, fn):
        async def go():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                return await fn(client)
        return self.portal.call(go)

    def get(self, path, **kw) -> httpx.Response:
        return self.call(lambda c: c.get(path, **kw))

    def post(self, path="/predict", **kw) -> httpx.Response:
        return self.call(lambda c: c.post(path, **kw))

    def metrics(self) -> dict:
        """``{(sample name, frozenset(labels)): value}`` from ``/metrics``."""
        text = self.get("/metrics").text
        return {(s.name, frozenset(s.labels.items())): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}


@contextmanager
def serving(weights, **kwargs):
    """Create the app, run its lifespan, record the first answers, wait until ready."""
    kwargs.setdefault("cache_dir", False)
    kwargs.setdefault("max_inflight", 64)  # the concurrency tests send up to 24 at once
    app = create_app(weights, max_files=MAX_FILES, max_body_bytes=MAX_BODY, **kwargs)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            served = Served(portal, app)
            served.early = {p: served.get(p) for p in ("/healthz", "/readyz", "/configs")}
            served.early["/predict"] = served.post(files=[("file", ("a.png", png(0), "image/png"))])
            deadline = time.monotonic() + 60
            while served.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, served.get("/readyz").json()
                time.sleep(0.05)
            yield served


@pytest.fixture(scope="module")
def torch_app(weights):
    with serving(weights, backend="torch", batch_delay_ms=20, max_batch=16, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def ort_app(weights):
    with serving(weights, backend="onnxruntime", batch_delay_ms=5, threads=1) as s:
        yield s


@pytest.fixture(params=["torch", "onnxruntime"])
def app(request):
    return request.getfixturevalue("torch_app" if request.param == "torch" else "ort_app")


# ------------------------------------------------------------------------------- helpers
def png(seed: int, size=(20, 24), mode="L", fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    buf = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def offline_probs(zoo, config_id: str, blobs: list[bytes]) -> np.ndarray:
    """Softmax of the config's dense subnet (torch) on the same preprocessed input."""
    x = torch.from_numpy(np.stack([preprocess(b, zoo.preprocessing) for b in blobs]))
    with torch.no_grad():
        return torch.softmax(zoo.extract(config_id)(x).double(), dim=1).numpy()


def expected_config(zoo, mflops=None):
    return max((c for c in zoo.front if mflops is None or c.mflops <= mflops),
               key=lambda c: (c.accuracy, -c.macs))


def check_against_offline(zoo, body: dict, blobs: list[bytes], top_k: int) -> None:
    probs = offline_probs(zoo, body["config"]["id"], blobs)
    assert len(body["predictions"]) == len(blobs)
    for pred, p in zip(body["predictions"], probs):
        got = pred["top_k"]
        assert len(got) == top_k
        assert [g["probability"] for g in got] == sorted((g["probability"] for g in got), reverse=True)
        for g in got:
            assert g["label"] == CLASSES[g["index"]]
            assert abs(g["probability"] - p[g["index"]]) <= 1e-4
        assert got[0]["index"] == int(np.argmax(p))


# --------------------------------------------------------------------------------- tests
def test_readiness_health_and_configs(torch_app, zoo):
    early = torch_app.early
    assert early["/healthz"].status_code == 200
    for path in ("/readyz", "/configs", "/predict"):
        assert early[path].status_code == 503, path
        assert early[path].headers["retry-after"] == "1"
        assert early[path].json()["status"] == 503
    assert torch_app.get("/healthz").json() == {"status": "ok"}
    assert torch_app.get("/readyz").json() == {"status": "ready"}
    body = torch_app.get("/configs").json()
    assert body["backend"] == "torch" and body["arch"] == "resnet20" and body["classes"] == CLASSES
    assert [c["id"] for c in body["configs"]] == [c.id for c in zoo.front]
    assert body["default"] == expected_config(zoo).id
    for got, c in zip(body["configs"], zoo.front):
        assert got["mflops"] == pytest.approx(c.mflops) and got["channels"] == list(c.channels)
        assert got["latency_ms"] > 0


def test_predict_matches_offline(app, zoo):
    blobs = [png(1), png(2, size=(40, 30), mode="RGB"), png(3, fmt="JPEG"), png(4, fmt="GIF")]
    files = [("file", (f"img{i}", b, "application/octet-stream")) for i, b in enumerate(blobs)]
    r = app.post(files=files, params={"top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    best = expected_config(zoo)
    assert body["config"]["id"] == best.id
    assert body["config"]["mflops"] == pytest.approx(best.mflops)
    assert body["config"]["expected_accuracy"] == pytest.approx(best.test_acc)
    assert body["config"]["latency_ms"] > 0
    assert [p["filename"] for p in body["predictions"]] == [f"img{i}" for i in range(4)]
    check_against_offline(zoo, body, blobs, 3)
    assert PredictResponse.model_validate(body).model_dump() == body  # the declared schema


def test_concurrent_mixed_budgets_match_offline(app, zoo):
    """24 concurrent requests at different widths: each equals its config's offline answer."""
    budgets = [None, zoo.front[0].mflops, zoo.front[1].mflops, zoo.front[1].mflops + 0.01,
               zoo.front[2].mflops * 2, zoo.front[0].mflops * 1.5]
    jobs = [(budgets[i % len(budgets)], [png(100 + i)] * (1 + i % 3)) for i in range(24)]

    async def fire(client):
        async def one(budget, blobs):
            params = {"top_k": 4} | ({} if budget is None else {"mflops": budget})
            return await client.post("/predict", params=params,
                                     files=[("file", ("x.png", b, "image/png")) for b in blobs])
        return await asyncio.gather(*(one(b, blobs) for b, blobs in jobs))

    responses = app.call(fire)
    for (budget, blobs), r in zip(jobs, responses):
        assert r.status_code == 200, r.text
        assert r.json()["config"]["id"] == expected_config(zoo, budget).id
        check_against_offline(zoo, r.json(), blobs, 4)


def test_latency_budget_picks_a_config_that_fits(torch_app, zoo):
    configs = torch_app.get("/configs").json()["configs"]
    lat = {c["id"]: c["latency_ms"] for c in configs}
    fastest = min(lat.values())
    for budget in (fastest, max(lat.values()) * 10):
        body = torch_app.post(params={"latency_ms": budget},
                              files=[("file", ("a.png", png(5), "image/png"))]).json()
        fits = [c for c in zoo.front if lat[c.id] <= budget]
        assert body["config"]["id"] == max(fits, key=lambda c: (c.accuracy, -lat[c.id])).id
        assert body["config"]["latency_ms"] <= budget


def test_concurrent_requests_are_micro_batched(torch_app, zoo):
    cid = zoo.front[0].id
    key = ("pareco_batch_size_count", frozenset({("config", cid)}))
    before = torch_app.metrics()
    n0, s0 = before.get(key, 0), before.get(("pareco_batch_size_sum", key[1]), 0)

    async def fire(client):
        return await asyncio.gather(*(
            client.post("/predict", params={"mflops": zoo.front[0].mflops},
                        files=[("file", ("a.png", png(i), "image/png"))]) for i in range(12)))

    assert all(r.status_code == 200 for r in torch_app.call(fire))
    after = torch_app.metrics()
    batches = after[key] - n0
    images = after[("pareco_batch_size_sum", key[1])] - s0
    assert images == 12 and batches < 12  # some inference calls served several requests


def test_overload_answers_503_and_keeps_serving(weights, monkeypatch):
    original = TorchRunner.predict

    def slow(self, batch):
        time.sleep(0.05)
        return original(self, batch)

    with serving(weights, backend="torch", max_batch=1, batch_delay_ms=0, max_inflight=1,
                 threads=1) as s:
        monkeypatch.setattr(TorchRunner, "predict", slow)  # every batch now takes >= 50 ms
        async def fire(client):
            return await asyncio.gather(*(
                client.post("/predict", files=[("file", ("a.png", png(i), "image/png"))])
                for i in range(10)))

        codes = [r.status_code for r in s.call(fire)]
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        busy = next(r for r in s.call(fire) if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "overloaded" in busy.json()["detail"]
        assert s.post(files=[("file", ("a.png", png(0), "image/png"))]).status_code == 200
        rejected = s.metrics()[("pareco_overload_rejections_total",
                                 frozenset({("reason", "inflight")}))]
        assert rejected >= 1


GOOD = [("file", ("ok.png", png(7), "image/png"))]


async def _streamed_body():
    """A chunked (no Content-Length) multipart upload that grows past the body limit."""
    yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
           b"Content-Type: image/png\r\n\r\n")
    for _ in range(MAX_BODY // 65536 + 2):
        yield b"x" * 65536


@pytest.mark.parametrize("status, request_kw, needle", [
    (400, {"files": [("file", ("a.png", b"definitely not an image", "image/png"))]}, "not an image"),
    (400, {"files": [("file", ("a.png", png(1)[:60], "image/png"))]}, "truncated"),
    (400, {"files": [("file", ("a.png", b"", "image/png"))]}, "empty file"),
    (413, {"files": [("file", ("bomb.png", png_header_only(5000, 5000), "image/png"))]},
     "decompression-bomb"),
    (413, {"files": [("file", ("bomb.png", png_header_only(30000, 30000), "image/png"))]},
     "too large"),
    (413, {"files": [("file", (f"{i}.png", png(i), "image/png")) for i in range(MAX_FILES + 1)]},
     f"limit is {MAX_FILES}"),
    (413, {"files": [("file", ("big.png", b"\0" * (MAX_BODY + 1), "image/png"))]}, "byte limit"),
    (413, {"content": _streamed_body, "headers": {"content-type": "multipart/form-data; boundary=b"}},
     "byte limit"),
    (415, {"json": {"image": "abc"}}, "multipart/form-data"),
    (415, {"content": b"file=x", "headers": {"content-type": "application/x-www-form-urlencoded"}},
     "multipart/form-data"),
    (415, {"files": [("file", ("a.txt", b"hello", "text/plain"))]}, "not an image type"),
    (422, {"files": [("other", ("a.png", png(1), "image/png"))]}, "named 'file'"),
    (422, {"files": GOOD, "params": {"top_k": 0}}, "top_k"),
    (422, {"files": GOOD, "params": {"top_k": 11}}, "top_k"),
    (422, {"files": GOOD, "params": {"mflops": "abc"}}, "mflops"),
    (422, {"files": GOOD, "params": {"MFLOPS": 3}}, "accepted: mflops, latency_ms, top_k"),
    (422, {"files": GOOD, "params": {"latency": 1}}, "accepted: mflops, latency_ms, top_k"),
    (422, {"files": GOOD, "params": {"mflops": ""}}, "'mflops' is empty"),
    (422, {"files": GOOD, "params": [("top_k", 1), ("top_k", 2)]}, "more than once"),
    (422, {"files": GOOD, "params": {"mflops": "1_000"}}, "finite decimal number"),
    (422, {"files": GOOD, "params": {"mflops": "nan"}}, "finite decimal number"),
    (422, {"files": GOOD, "params": {"mflops": "inf"}}, "mflops"),
    (422, {"files": GOOD, "params": {"latency_ms": -1}}, "latency_ms"),
    (422, {"files": GOOD, "params": {"latency_ms": 1e-9}}, "(the minimum)"),
    (422, {"files": GOOD, "params": {"mflops": 1, "latency_ms": 1}}, "not both"),
])
def test_bad_input_is_a_clear_json_error_and_the_server_keeps_serving(
        torch_app, status, request_kw, needle):
    kw = dict(request_kw)
    if callable(kw.get("content")):
        kw["content"] = kw["content"]()
    r = torch_app.post(**kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"] and needle in body["detail"], body
    assert torch_app.post(files=GOOD).status_code == 200


def test_budget_below_the_smallest_config_names_the_minimum(torch_app, zoo):
    smallest = zoo.front[0]
    r = torch_app.post(files=GOOD, params={"mflops": smallest.mflops / 2})
    assert r.status_code == 422
    assert repr(smallest.mflops) in r.json()["detail"] and smallest.id in r.json()["detail"]
    r = torch_app.post(files=GOOD, params={"mflops": smallest.mflops})  # the minimum itself fits
    assert r.status_code == 200 and r.json()["config"]["id"] == smallest.id


def test_openapi_declares_the_minimum_and_every_error(torch_app, zoo):
    spec = torch_app.get("/openapi.json").json()
    op = spec["paths"]["/predict"]["post"]
    (param,) = op["parameters"]
    assert (param["in"], param["style"], param["explode"]) == ("query", "form", True)
    query = param["schema"]
    assert query["additionalProperties"] is False
    assert query["not"] == {"required": ["mflops", "latency_ms"]}  # mutually exclusive budgets
    params = query["properties"]
    assert params["mflops"]["minimum"] == zoo.front[0].mflops
    fastest = min(c["latency_ms"] for c in torch_app.get("/configs").json()["configs"])
    assert params["latency_ms"]["minimum"] == fastest  # measured, then declared
    top_k = params["top_k"]
    assert (top_k["minimum"], top_k["maximum"], top_k["default"]) == (1, 10, 5)
    for code in ("400", "413", "415", "422", "503"):
        ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Error"), code
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {"status", "error", "detail"}
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert "image/*" in op["requestBody"]["content"]  # the raw single-image body
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/PredictResponse")
    for path in ("/configs", "/readyz"):
        assert "503" in spec["paths"][path]["get"]["responses"]


def test_metrics_exposition(torch_app, zoo):
    torch_app.post(files=GOOD)
    torch_app.post(files=[("file", ("a.png", b"", "image/png"))])
    m = torch_app.metrics()
    assert m[("pareco_http_requests_total", frozenset(
        {("endpoint", "/predict"), ("method", "POST"), ("status", "200")}))] >= 1
    assert m[("pareco_http_errors_total", frozenset({("status", "400")}))] >= 1
    best = frozenset({("config", expected_config(zoo).id)})
    assert m[("pareco_predict_latency_seconds_count", best)] >= 1
    assert m[("pareco_inference_latency_seconds_count", best)] >= 1
    assert m[("pareco_batch_size_count", best)] >= 1
    for c in zoo.front:
        assert m[("pareco_config_latency_seconds", frozenset({("config", c.id)}))] > 0
    assert m[("pareco_ready", frozenset())] == 1
    assert m[("process_resident_memory_bytes", frozenset())] > 0
    assert m[("pareco_http_request_duration_seconds_count", frozenset(
        {("endpoint", "/predict"), ("status", "200")}))] >= 1
    assert m[("pareco_decode_seconds_count", frozenset())] >= 1
    assert ("pareco_predict_inflight", frozenset()) in m
    r = torch_app.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    unknown = torch_app.get("/no/such/path")
    assert unknown.status_code == 404 and unknown.json()["status"] == 404
    assert torch_app.metrics()[("pareco_http_requests_total", frozenset(
        {("endpoint", "other"), ("method", "GET"), ("status", "404")}))] >= 1


def test_invalid_weight_file_refuses_to_start(tmp_path, weights, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightFileError):
        create_app(bad, backend="torch")
    assert main(["--weights", str(bad), "--backend", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("serve: error:") and str(bad) in err and "\n" not in err
    assert main(["--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such weight file" in capsys.readouterr().err


# ---------------------------------------------------------------- lean request path
def test_a_lone_request_does_not_wait_out_the_batch_delay(weights, zoo):
    """Nothing else queued or being decoded: dispatched at once, even with a 500 ms delay."""
    with serving(weights, backend="torch", batch_delay_ms=500, max_batch=32, threads=1) as s:
        for i in range(3):
            t0 = time.perf_counter()
            r = s.post(files=[("file", ("a.png", png(i), "image/png"))])
            assert r.status_code == 200, r.text
            assert time.perf_counter() - t0 < 0.4  # well under the 500 ms delay

        # concurrent requests are still merged, and stop waiting once every one is queued
        async def fire(client):
            return await asyncio.gather(*(
                client.post("/predict", params={"mflops": zoo.front[0].mflops},
                            files=[("file", ("a.png", png(i), "image/png"))]) for i in range(12)))

        key = ("pareco_batch_size_count", frozenset({("config", zoo.front[0].id)}))
        n0 = s.metrics().get(key, 0)
        t0 = time.perf_counter()
        assert all(r.status_code == 200 for r in s.call(fire))
        assert time.perf_counter() - t0 < 5
        assert s.metrics()[key] - n0 < 12


def test_raw_image_body_is_a_single_image_fast_path(app, zoo):
    blob = png(11, size=(30, 26), mode="RGB")
    r = app.post(content=blob, headers={"content-type": "image/png"}, params={"top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["config"]["id"] == expected_config(zoo).id
    assert [p["filename"] for p in body["predictions"]] == [None]
    check_against_offline(zoo, body, [blob], 3)
    for content, status, needle in [(b"", 400, "empty file"), (b"garbage", 400, "not an image"),
                                    (png_header_only(5000, 5000), 413, "decompression-bomb"),
                                    (b"\0" * (MAX_BODY + 1), 413, "byte limit")]:
        r = app.post(content=content, headers={"content-type": "image/jpeg"})
        assert r.status_code == status and needle in r.json()["detail"], r.text
    r = app.post(content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["predictions"][0]["filename"] is None  # as parts are
    r = app.post(content=blob, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "image/*" in r.json()["detail"]
    r = app.post(content=blob, headers={"content-type": "image/png"}, params={"mflops": 1e-6})
    assert r.status_code == 422 and "(the minimum)" in r.json()["detail"]


@pytest.mark.parametrize("content, ctype, status, needle", [
    (b"no boundary anywhere", "multipart/form-data; boundary=b", 400, "malformed"),
    (b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc", "multipart/form-data; boundary=b",
     400, "closing boundary"),
    (b"--b\r\nContent-Disposition: form-data; name=\"file\"", "multipart/form-data; boundary=b",
     400, "malformed"),
    (b"--b--\r\n", "multipart/form-data", 400, "boundary"),
    (b"--b--\r\n", "multipart/form-data; boundary=b", 422, "named 'file'"),
])
def test_malformed_multipart_is_a_clear_error(torch_app, content, ctype, status, needle):
    r = torch_app.post(content=content, headers={"content-type": ctype})
    assert r.status_code == status and needle in r.json()["detail"], r.text
    assert torch_app.post(files=GOOD).status_code == 200


def test_multipart_parts_preamble_and_other_fields(torch_app, zoo):
    a, b = png(21), png(22, fmt="JPEG")
    body = (b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello"
            b"\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a b.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + a +
            b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + b +
            b"\r\n--XyZ--\r\nepilogue")
    r = torch_app.post(content=body, headers={"content-type": 'multipart/form-data; boundary="XyZ"'},
                       params={"top_k": 2})
    assert r.status_code == 200, r.text
    assert [p["filename"] for p in r.json()["predictions"]] == ["a b.png", None]
    check_against_offline(zoo, r.json(), [a, b], 2)


def test_multipart_parser_unit():
    from serve.multipart import MultipartError, TooManyParts, boundary_of, parse_parts

    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    with pytest.raises(MultipartError):
        boundary_of("multipart/form-data")
    req = httpx.Request("POST", "http://x/", files=[("file", ("x.png", b"\r\n--\r\n", "image/png")),
                                                    ("file", ("y", b"", "image/gif"))],
                        data={"k": "v"})
    body, boundary = req.read(), boundary_of(req.headers["content-type"])
    parts = parse_parts(body, boundary, "file", 2)
    assert [(p.filename, p.content_type, p.data) for p in parts] == [
        ("x.png", "image/png", b"\r\n--\r\n"), ("y", "image/gif", b"")]
    with pytest.raises(TooManyParts) as e:
        parse_parts(body, boundary, "file", 1)
    assert e.value.count == 2
