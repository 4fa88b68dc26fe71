"""MobileNetV2 / V3-Large go through the same CLIs as ResNet: train (tiny) -> export -> serve."""

from __future__ import annotations

import io
import time
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from datagen import write_fashion_mnist
from export.__main__ import main as export_main
from pareco.train import main as train_main
from pareco.training.recipe import load_recipe
from pareco.weightfile import load_zoo_model
from serve.app import create_app

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["mobilenet_v2-imagenet", "mobilenet_v3_large-imagenet"])
def test_imagenet_recipes_carry_the_paper_hyper_parameters(name):
    recipe = load_recipe(name)
    raw = yaml.safe_load((ROOT / "zoo" / "recipes" / f"{name}.yaml").read_text())
    assert raw["train"] == {"epochs": 250, "batch_size": 1024, "lr": 0.5, "momentum": 0.9,
                            "nesterov": True, "weight_decay": 4e-5, "schedule": "linear",
                            "warmup_epochs": 5, "label_smoothing": 0.1}
    scale = [0.25, 1.0] if "v2" in name else [0.08, 1.0]
    assert raw["data"]["augment"] == {"crop_scale": scale, "flip": True, "color_jitter": 0.4,
                                      "lighting": 0.1}
    assert recipe.model.arch == name.split("-")[0]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large"])
def test_mobilenet_trains_exports_and_serves(arch, tmp_path):
    data = write_fashion_mnist(tmp_path / "data", n_train=160, n_test=48, seed=0)
    recipe = yaml.safe_load((ROOT / "zoo" / "recipes" / "resnet20-fashionmnist.yaml").read_text())
    recipe.update(name=f"{arch}-tiny", model={"arch": arch, "kwargs": {}})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert train_main([
        "--recipe", str(recipe_path), "--data-dir", str(data), "--no-download", "--out", str(out),
        "--subset", "160", "--val-size", "32", "--batch-size", "32", "--epochs", "1",
        "--history-size", "6", "--eval-batch", "32", "--calib-images", "32", "--max-configs", "3",
        "--threads", "1", "--quiet", "--set", "data.image_size=32",
        "--set", "pareco.warmup_configs=4", "--set", "front.uniform_grid=3",
    ]) == 0
    weights = out / "model.safetensors"
    zoo = load_zoo_model(weights)
    assert zoo.net.arch_name == arch and zoo.net.width_space.lower == pytest.approx(0.42)
    assert all(c.macs == zoo.net.macs(c.alpha) for c in zoo.front)

    exported = tmp_path / "onnx"
    assert export_main(["--weights", str(weights), "--all", "--out", str(exported),
                        "--data-dir", str(data)]) == 0
    manifest = json.loads((exported / "manifest.json").read_text())
    onnx_files = [f for f in manifest["files"] if f["kind"] == "onnx"]
    assert sorted(f["config"]["id"] for f in onnx_files) == [c.id for c in zoo.front]
    assert all(f["onnx_macs"] == f["config"]["macs"] for f in onnx_files)

    png = io.BytesIO()
    Image.fromarray((np.arange(28 * 28) % 255).astype(np.uint8).reshape(28, 28)).save(png, "PNG")
    with TestClient(create_app(weights, threads=1)) as client:
        deadline = time.monotonic() + 300  # start-up exports and times every config
        while time.monotonic() < deadline:
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        answer = client.post(f"/predict?mflops={zoo.front[-1].mflops}",
                             files={"file": ("x.png", png.getvalue(), "image/png")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["config"]["id"] in {c.id for c in zoo.front}
        assert len(body["predictions"][0]["top_k"]) == 5
