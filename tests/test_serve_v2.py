"""The Open Inference Protocol (KServe v2) endpoints, through the real ``tritonclient[http]``
against a real uvicorn server on 127.0.0.1: same top-1 answers and configs as ``/predict``."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from liveserver import live_server
from serve.images import preprocess
from pareco.weightfile import load_zoo_model
from serve.model import ServedModel
from tinymodel import write_tiny_zoo_model

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NAME = "tiny-fashion"
SIZE = 12
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def served(tmp_path_factory, one_torch_thread):
    weights = tmp_path_factory.mktemp("v2") / NAME / "model.safetensors"
    weights.parent.mkdir()
    write_tiny_zoo_model(weights, size=SIZE, classes=CLASSES, middle=[0.5, 0.7, 0.5, 0.7, 0.5, 0.7])
    with live_server(weights) as url:
        yield url, ServedModel.from_metadata(load_zoo_model(weights).meta).preprocessing


@pytest.fixture(scope="module")
def base(served):
    return served[0]


@pytest.fixture(scope="module")
def client(base):
    c = httpclient.InferenceServerClient(base.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    out = []
    for seed in range(8):
        pixels = (np.random.default_rng(seed).random((28, 28)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def budgets(base) -> list[dict]:
    front = httpx.get(f"{base}/configs").json()["configs"]
    return ([{}] + [{"mflops": c["mflops"]} for c in front]
            + [{"latency_ms": max(c["latency_ms"] for c in front) * 10}])


def predict(base, pngs, budget) -> tuple[str, list[int]]:
    r = httpx.post(f"{base}/predict", params=budget | {"top_k": 1},
                   files=[("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)])
    assert r.status_code == 200, r.text
    return r.json()["config"]["id"], [p["top_k"][0]["index"] for p in r.json()["predictions"]]


def test_health_and_metadata(client, base):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME)
    assert meta["name"] == NAME
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "input": ("FP32", [-1, 1, SIZE, SIZE]), "image": ("BYTES", [-1])}
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert (meta["parameters"]["input_mean"], meta["parameters"]["input_std"]) == ("0.286", "0.353")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data", "classification"]
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    with pytest.raises(InferenceServerException, match=f"serves '{NAME}'"):
        client.get_model_metadata("resnet20-fashionmnist")


@pytest.mark.parametrize("kind", ["fp32-binary", "fp32-json", "bytes-binary"])
def test_infer_agrees_with_predict(client, served, pngs, kind):
    """For every config's budget (and none, and a latency one): same config, same top-1."""
    base, pre = served
    for budget in budgets(base):
        config, top1 = predict(base, pngs, budget)
        if kind == "bytes-binary":
            x = httpclient.InferInput("image", [len(pngs)], "BYTES")
            x.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
        else:
            batch = np.stack([preprocess(p, pre) for p in pngs])
            x = httpclient.InferInput("input", list(batch.shape), "FP32")
            x.set_data_from_numpy(batch, binary_data=kind == "fp32-binary")
        out = httpclient.InferRequestedOutput("probabilities", binary_data=kind != "fp32-json")
        res = client.infer(NAME, [x], outputs=[out], parameters=budget, request_id="r1")
        probs = res.as_numpy("probabilities")
        params = res.get_response()["parameters"]
        assert probs.shape == (len(pngs), 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
        assert params["config_id"] == config, budget
        assert probs.argmax(axis=1).tolist() == top1, budget
        assert res.get_response()["id"] == "r1"


def test_classification_extension(client, base, pngs):
    x = httpclient.InferInput("image", [2], "BYTES")
    x.set_data_from_numpy(np.array(pngs[:2], dtype=np.object_))
    res = client.infer(NAME, [x], outputs=[httpclient.InferRequestedOutput(
        "probabilities", class_count=3)])
    rows = res.as_numpy("probabilities")
    assert rows.shape == (2, 3)
    _, top1 = predict(base, pngs[:2], {})
    for row, want in zip(rows, top1):
        p, idx, label = row[0].decode().split(":", 2)
        assert int(idx) == want and label == CLASSES[want] and 0 < float(p) <= 1


def test_json_base64_images(base, pngs):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(pngs[0]).decode()]}],
            "parameters": {"mflops": 1e9}}
    r = httpx.post(f"{base}/v2/models/{NAME}/infer", json=body)
    assert r.status_code == 200, r.text
    probs = np.array(r.json()["outputs"][0]["data"]).reshape(1, 10)
    assert probs.argmax() == predict(base, pngs[:1], {"mflops": 1e9})[1][0]


def _fp32(shape=(1, 1, SIZE, SIZE), **extra) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(shape),
                        "data": [0.0] * int(np.prod(shape))}]} | extra


@pytest.mark.parametrize("body,status,words", [
    (_fp32(parameters={"mflops": 0.001}), 422, "the minimum"),
    (_fp32(parameters={"mflops": 5, "latency_ms": 1}), 422, "at most one budget"),
    (_fp32(parameters={"budget": 5}), 400, "accepted: mflops, latency_ms"),
    (_fp32(parameters={"mflops": "5"}), 422, "positive number"),
    (_fp32(shape=(1, 3, SIZE, SIZE)), 400, f"shape [-1, 1, {SIZE}, {SIZE}]"),
    ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0]}]}, 400,
     "accepted: 'input'"),
    ({"inputs": [{"name": "input", "datatype": "INT8", "shape": [1, 1, SIZE, SIZE]}]}, 400,
     "datatype FP32"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, SIZE, SIZE],
                  "data": [1.0]}]}, 400, "needs 144 values"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, 400,
     "base64"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "data": [base64.b64encode(b"nope").decode()]}]}, 400, "not an image"),
    (_fp32(outputs=[{"name": "logits"}]), 400, "accepted: 'probabilities'"),
    ({"inputs": []}, 400, "exactly one tensor"),
])
def test_bad_requests_are_clear_4xx(base, body, status, words):
    r = httpx.post(f"{base}/v2/models/{NAME}/infer", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.json()


def test_bad_transport(base):
    url = f"{base}/v2/models/{NAME}/infer"
    r = httpx.post(url, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = httpx.post(url, content=b"{}", headers={"inference-header-content-length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    assert httpx.post(f"{base}/v2/models/other/infer", json=_fp32()).status_code == 404
    # the server keeps serving after all that, and /metrics counts the endpoint by its path
    assert httpx.post(url, json=_fp32()).status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    assert f'endpoint="/v2/models/{NAME}/infer",method="POST",status="200"' in metrics
