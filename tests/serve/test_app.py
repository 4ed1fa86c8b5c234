"""The model server in-process (FastAPI's TestClient): answers equal to ``slimship predict``, every refusal a 4xx
with one clear line, limits, the bearer token, metrics, and signatures at start-up. Nothing is timed."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimship.cli.main import main
from slimship.core.errors import PackageError, SlimshipError
from slimship.serve import AppConfig, BatchingConfig, Limits, ServedModel, create_app, load_models
from tests.conftest import make_images
from tests.core.test_runtimes import needs_openvino

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slim-v0.1"
TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def models():
    return load_models([str(FIXTURES / "int8.slim"), f"km={FIXTURES / 'sparse-kmeans.slim'}"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six colour PNGs of one size (not the model's), as `slimship predict` takes them."""
    root = tmp_path_factory.mktemp("images")
    x, _ = make_images(2, seed=1)
    out = []
    for i, img in enumerate(x):
        out.append(root / f"img{i}.png")
        Image.fromarray(np.repeat(img, 3, axis=2)).resize((40, 30)).save(out[-1])
    return out


def _client(models, **config):
    from fastapi.testclient import TestClient

    return TestClient(create_app(models, AppConfig(**config), log=lambda s: None))


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _cli_predict(capsys, package: Path, files: list[Path]) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", str(package), *map(str, files), "--json", "--top", "3"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, package", [("int8", "int8.slim"), ("km", "sparse-kmeans.slim")])
def test_served_predictions_equal_slimship_predict(models, files, capsys, name, package):
    expected = _cli_predict(capsys, FIXTURES / package, files)
    with _client(models, batching=BatchingConfig(max_batch_size=4, max_wait_ms=20)) as c:
        multipart = c.post(f"/v1/models/{name}/predict",
                           files=[("images", (f.name, f.read_bytes(), "image/png")) for f in files])
        as_json = c.post(f"/v1/models/{name}/predict", json={"images": [_b64(f) for f in files]})
        # one request per image, sent at once: the server batches them as they come
        with ThreadPoolExecutor(len(files)) as pool:
            alone = list(pool.map(lambda f: c.post(f"/v1/models/{name}/predict", json={"images": [_b64(f)]}), files))
        metrics = c.get("/metrics").text
    assert multipart.status_code == as_json.status_code == 200
    assert multipart.json() == {"model": name, "predictions": [{**r, "image": Path(r["image"]).name} for r in expected]}
    assert [p["top"] for p in as_json.json()["predictions"]] == [r["top"] for r in expected]
    assert [a.json()["predictions"][0]["top"] for a in alone] == [r["top"] for r in expected]
    assert f'slimship_requests_total{{code="200",model="{name}"}} {2 + len(files)}.0' in metrics
    assert f'slimship_images_total{{model="{name}"}} {3 * len(files)}.0' in metrics
    batches = re.search(rf'slimship_batch_size_count{{model="{name}"}} (\S+)', metrics)
    assert 3 <= float(batches.group(1)) <= 2 + len(files)  # multipart, JSON, then the singles in 1 to 6 batches


def test_models_health_ready(models):
    with _client(models) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json() == {"status": "ready", "models": ["int8", "km"]}
        info = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
    assert info["int8"]["classes"] == ["top", "middle", "bottom"] and info["km"]["package"] == "sparse-kmeans.slim"
    assert info["int8"]["input"]["image_size"] == 32 and info["int8"]["input"]["field"] == "images"
    assert len(info["int8"]["package_sha256"]) == 64 and info["int8"]["signed_by"] is None


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels (with no pixel data behind it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(models, files):
    good = {"images": [_b64(files[0])]}
    png = files[0].read_bytes()
    cases = [
        (dict(json={"images": ["%%%"]}), 400, "not valid base64"),
        (dict(json={"images": [base64.b64encode(b"hello").decode()]}), 400, "not a readable image"),
        (dict(json={"images": [base64.b64encode(png[: len(png) // 2]).decode()]}), 400, "cannot be decoded"),
        (dict(json={"images": [12]}), 400, "base64 string"),
        (dict(json={"pictures": []}), 400, "no 'images' list"),
        (dict(json=[1, 2]), 400, "no 'images' list"),
        (dict(json={"images": []}), 400, "no inputs"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON"),
        (dict(content=b"abc", headers={"content-type": "text/plain"}), 415, "not accepted"),
        (dict(content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}), 400, "no inputs"),
        (dict(content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"}), 400, "multipart body"),
        (dict(json={"images": [_b64(files[0])] * 9}), 413, "limit of 8"),
        (dict(files=[("images", (f"{i}.png", png, "image/png")) for i in range(9)]), 413, "limit of 8"),
        (dict(files=[("images", (f"{i}.png", png, "image/png")) for i in range(30)]), 413, "limit of 8"),
        (dict(json={"images": [base64.b64encode(_png_declaring(200, 200)).decode()]}), 413, "40,000 pixels"),
        (dict(json={"images": [base64.b64encode(_png_declaring(30000, 30000)).decode()]}), 413, "pixels"),
        (dict(json=good, params={"top": "0"}), 400, "top="),
        (dict(json=good, params={"top": "x"}), 400, "top="),
    ]
    with _client(models, limits=Limits(max_body_bytes=64 * 1024, max_inputs=8, max_image_pixels=100 * 100)) as c:
        for request, status, phrase in cases:
            r = c.post("/v1/models/int8/predict", **request)
            assert r.status_code == status and phrase in r.json()["error"], (request, r.text)
            assert "\n" not in r.json()["error"]
        r = c.post("/v1/models/nope/predict", json=good)
        assert r.status_code == 404 and "served: int8, km" in r.json()["error"]
        # bodies over the limit: by Content-Length, and counted while a chunked body streams in
        big = json.dumps({"images": ["A" * 70_000]}).encode()
        assert c.post("/v1/models/int8/predict", content=big, headers={"content-type": "application/json"}).status_code == 413
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        r = c.post("/v1/models/int8/predict", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit of 65,536 bytes" in r.json()["error"]
        r = c.post("/v1/models/int8/predict", files=[("images", ("a.png", b"x" * 70_000, "image/png"))])
        assert r.status_code == 413 and "limit of 65,536 bytes" in r.json()["error"]
        assert c.post("/v1/models/int8/predict", json=good).status_code == 200  # still serving
        metrics = c.get("/metrics").text
    assert 'slimship_request_errors_total{code="413",model="int8"} 8.0' in metrics
    assert 'slimship_requests_total{code="404",model=""} 1.0' in metrics  # unknown names never become labels


def test_bearer_token(models, files):
    good = {"images": [_b64(files[0])]}
    with _client(models, token=TOKEN) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = c.post("/v1/models/int8/predict", json=good, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "bearer token" in r.json()["error"]
        assert c.get("/v1/models").status_code == 401 and c.get("/metrics").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/models/int8/predict", json=good, headers=auth).status_code == 200
        assert c.get("/metrics", headers=auth).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200  # probes need no token


class _BrokenRuntime(ServedModel):
    """A model whose runtime fails on every batch after start-up."""

    @property
    def session(self):
        def fail(batch):
            raise RuntimeError("the runtime fell over")
        return fail


def test_a_failing_runtime_gives_500_without_stopping_the_server(models, files):
    good = {"images": [_b64(files[0])]}
    m = models[0]
    broken = _BrokenRuntime("broken", m.path, m.package, m.inputs)
    logged = []
    from fastapi.testclient import TestClient

    with TestClient(create_app([broken, models[1]], AppConfig(), log=logged.append)) as c:
        r = c.post("/v1/models/broken/predict", json=good)
        assert r.status_code == 500 and "inference failed (RuntimeError)" in r.json()["error"]
        assert c.post("/v1/models/km/predict", json=good).status_code == 200
    assert "the runtime fell over" in logged[0]


def test_packages_are_verified_before_serving(tmp_path):
    from slimship.package.sign import generate_key, sign_package

    priv, pub, kid = generate_key(tmp_path / "k")
    signed, damaged = tmp_path / "signed.slim", tmp_path / "damaged.slim"
    shutil.copy(FIXTURES / "int8.slim", signed)
    sign_package(signed, priv)
    data = bytearray((FIXTURES / "int8.slim").read_bytes())
    data[-100] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="integrity|corrupt|decoded|hash"):
        load_models([str(damaged)])
    [m] = load_models([f"a={signed}"], keys=[str(pub)], require_signature=True)
    assert m.name == "a" and m.signed_by == kid
    with pytest.raises(PackageError, match="not signed"):
        load_models([str(FIXTURES / "int8.slim")], keys=[str(pub)], require_signature=True)
    warned = []
    assert load_models([str(FIXTURES / "int8.slim")], keys=[str(pub)], log=warned.append)[0].signed_by is None
    assert "not signed" in warned[0]
    with pytest.raises(SlimshipError, match="needs the publisher's public key"):
        load_models([str(signed)], require_signature=True)
    with pytest.raises(SlimshipError, match="two packages would be served as 'int8'"):
        load_models([str(FIXTURES / "int8.slim"), str(FIXTURES / "int8.slim")])


def test_image_sizes_may_differ_within_a_request(models, files, tmp_path):
    """Each image is resized on its own, so a request may mix sizes; each answer equals the image sent alone."""
    other = tmp_path / "big.png"
    Image.open(files[1]).resize((64, 48)).save(other)
    with _client(models) as c:
        both = c.post("/v1/models/int8/predict", json={"images": [_b64(files[0]), _b64(other)]}).json()["predictions"]
        alone = [c.post("/v1/models/int8/predict", json={"images": [_b64(f)]}).json()["predictions"][0]
                 for f in (files[0], other)]
    assert [b["top"] for b in both] == [a["top"] for a in alone]


def test_jpeg_and_gray_inputs_decode_like_predict(models, tmp_path, capsys):
    x, _ = make_images(1, seed=4)
    paths = [tmp_path / "a.jpg", tmp_path / "b.png"]
    Image.fromarray(np.repeat(x[0], 3, axis=2)).resize((32, 32)).save(paths[0], quality=90)
    Image.fromarray(x[1][..., 0]).resize((32, 32)).save(paths[1])
    for p in paths:
        expected = _cli_predict(capsys, FIXTURES / "int8.slim", [p])
        with _client(models) as c:
            got = c.post("/v1/models/int8/predict", json={"images": [_b64(p)]}).json()["predictions"]
        assert [g["top"] for g in got] == [e["top"] for e in expected]


@needs_openvino
def test_a_package_with_a_runtime_per_batch_size_is_served_in_both(tmp_path, files, capsys):
    from slimship.core.runtime import SessionsByBatch
    from slimship.package.pack import load_package, pack

    src = load_package(FIXTURES / "int8.slim")
    path = tmp_path / "split.slim"
    pack(path, onnx=src.onnx, architecture="test", class_names=src.class_names, preprocessing=src.preprocessing,
         runtime="openvino", runtime_by_batch={1: "onnxruntime", 8: "openvino"})
    (model,) = load_models([str(path)])
    sess = model.session
    assert isinstance(sess, SessionsByBatch) and set(sess.sessions) == {"onnxruntime", "openvino"}  # warmed up
    expected = _cli_predict(capsys, path, files)
    with _client([model], batching=BatchingConfig(max_batch_size=8, max_wait_ms=20)) as c:
        info = c.get("/v1/models").json()["models"][0]
        batch = c.post("/v1/models/split/predict", json={"images": [_b64(f) for f in files] * 2})  # 12: OpenVINO
        one = c.post("/v1/models/split/predict", json={"images": [_b64(files[0])]})  # 1: ONNX Runtime
    assert info["runtime"] == "openvino" and info["runtime_by_batch"] == {"1": "onnxruntime", "8": "openvino"}
    assert [p["top"][0]["class"] for p in batch.json()["predictions"]] == [r["top"][0]["class"] for r in expected] * 2
    assert one.json()["predictions"][0]["top"][0]["class"] == expected[0]["top"][0]["class"]
    # serve --runtime pins every batch to one runtime
    (pinned,) = load_models([str(path)], runtime="onnxruntime")
    from slimship.core.runtime import OrtSession

    assert isinstance(pinned.session, OrtSession) and pinned.info()["runtime_by_batch"] == {"1": "onnxruntime"}
