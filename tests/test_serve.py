"""`convzoo serve`: the HTTP API through FastAPI's test client, the batcher on its own, and one real
uvicorn process (upload limit on the socket, graceful SIGTERM). Tiny model, real weights files."""

import argparse
import base64
import io
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="convzoo[serve] is not installed")
pytest.importorskip("httpx", reason="httpx (the test client) is not installed")

from fastapi.testclient import TestClient

import _serve_models
from convzoo.errors import UserError
from convzoo.inference.predict import PredictJob, predict
from convzoo.serve.app import ServeConfig, create_app
from convzoo.serve.batcher import Batcher, QueueFull, ShuttingDown
from convzoo.serve.model import ServedModel
from convzoo.weights import read_spec
from helpers import one_line


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Weights files (10 classes; 365 Places classes) and three photos, with the tiny model registered."""
    root = tmp_path_factory.mktemp("serve")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with _serve_models.registered():
        weights = _serve_models.make_weights(root / "cifar.safetensors")
        places = _serve_models.make_weights(root / "places.safetensors", places=True, seed=1)
        photos = []
        for i, (fmt, size) in enumerate([("JPEG", (64, 48)), ("PNG", (40, 70)), ("JPEG", (33, 33))]):
            rng = np.random.RandomState(i)
            img = Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            path = root / f"photo{i}.{fmt.lower()}"
            img.save(path, fmt)
            photos.append(str(path))
        yield argparse.Namespace(root=root, weights=weights, places=places, photos=photos)
    torch.set_num_threads(threads)


def local(app, **kw) -> TestClient:
    """A test client that, like a browser on this machine, sends `Host: localhost`."""
    return TestClient(app, base_url="http://localhost", **kw)


def make_app(env, **config):
    models = [
        ServedModel(_serve_models.NAME, env.weights),
        ServedModel(_serve_models.NAME, env.places, id="places"),
    ]
    return create_app(models, ServeConfig(**config))


@pytest.fixture(scope="module")
def client(env):
    with local(make_app(env)) as c:
        yield c


def raw(client, data: bytes, ctype="image/jpeg", query=""):
    return client.post(f"/v1/predict{query}", content=data, headers={"content-type": ctype})


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def assert_same(served: dict, expected: dict):
    """Same classes in the same order, probabilities equal up to fp32 rounding (batch composition)."""
    got, want = served["predictions"], expected["predictions"]
    assert [p["index"] for p in got] == [p["index"] for p in want]
    assert [p["label"] for p in got] == [p["label"] for p in want]
    np.testing.assert_allclose(
        [p["probability"] for p in got], [p["probability"] for p in want], rtol=1e-5, atol=1e-7
    )
    assert ("indoor_outdoor" in served) == ("indoor_outdoor" in expected)
    if "indoor_outdoor" in expected:
        assert served["indoor_outdoor"]["vote"] == expected["indoor_outdoor"]["vote"]
        score = expected["indoor_outdoor"]["outdoor_score"]
        assert served["indoor_outdoor"]["outdoor_score"] == pytest.approx(score)


# ---- predictions -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["weights", "places"])
def test_predict_equals_convzoo_predict(env, client, which):
    weights = getattr(env, which)
    expected = predict(PredictJob(_serve_models.NAME, weights, tuple(env.photos), topk=5))
    query = "?model=places" if which == "places" else ""
    for path, want in zip(env.photos, expected):
        body = raw(client, read(path), query=query).json()
        assert body["model"] == ("places" if which == "places" else _serve_models.NAME)
        assert_same(body["results"][0], want)
    if which == "places":
        assert "indoor_outdoor" in expected[0]  # the Places weights do get the vote


def test_multipart_several_files_and_topk(env, client):
    expected = predict(PredictJob(_serve_models.NAME, env.weights, tuple(env.photos), topk=3))
    files = [("image", (os.path.basename(p), read(p), "application/octet-stream")) for p in env.photos]
    r = client.post("/v1/predict?topk=3", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["image"] for x in results] == [os.path.basename(p) for p in env.photos]
    for got, want in zip(results, expected):
        assert len(got["predictions"]) == 3
        assert_same(got, want)


def test_cam_equals_predict_cam_file(env, client, tmp_path):
    predict(PredictJob(_serve_models.NAME, env.weights, tuple(env.photos[:1]), cam_dir=str(tmp_path)))
    saved = np.asarray(Image.open(tmp_path / "photo0_cam.png"))
    body = raw(client, read(env.photos[0]), query="?cam=true").json()["results"][0]
    head, data = body["cam"].split(",", 1)
    assert head == "data:image/png;base64"
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    assert served.shape == saved.shape and min(saved.shape[:2]) == 224  # small photos scaled up to be legible
    below_caption = slice(40, None)  # predict writes the class name on top
    assert np.abs(served[below_caption].astype(int) - saved[below_caption].astype(int)).max() <= 1
    assert "cam" not in raw(client, read(env.photos[0])).json()["results"][0]  # only when asked


# ---- bad input -----------------------------------------------------------------------------------
def bad_cases(env):
    jpeg = read(env.photos[0])

    def body(data, ctype="image/jpeg"):
        return dict(content=data, headers={"content-type": ctype})

    return {
        "not an image": (body(b"hello, I am text"), 422, "not an image"),
        "truncated": (body(jpeg[: len(jpeg) // 2]), 422, "truncated"),
        "bomb": (body(_serve_models.bomb_png(), "image/png"), 422, "decompression bomb"),
        "thin": (body(_serve_models.thin_png(), "image/png"), 422, "aspect ratio"),
        "too large": (body(b"\xff" * (2 * 2**20)), 413, "too large"),
        "content type": (body(jpeg, "application/x-www-form-urlencoded"), 415, "content type"),
        "no content type": (body(jpeg, ""), 415, "content type"),
        "empty": (body(b""), 400, "empty"),
        "json body": (dict(json={"image": "x"}), 415, "content type"),
    }


@pytest.fixture(scope="module")
def small_limit_client(env):
    with local(make_app(env, max_upload_bytes=2**20)) as c:
        yield c


@pytest.mark.parametrize(
    "case",
    [
        "not an image",
        "truncated",
        "bomb",
        "thin",
        "too large",
        "content type",
        "no content type",
        "empty",
        "json body",
    ],
)
def test_bad_input_is_a_4xx_json_error_and_the_next_request_works(env, small_limit_client, case):
    kwargs, status, words = bad_cases(env)[case]
    r = small_limit_client.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert words in r.json()["error"].lower()
    good = raw(small_limit_client, read(env.photos[0]))
    assert good.status_code == 200 and len(good.json()["results"][0]["predictions"]) == 5


def test_a_bad_file_in_a_form_is_reported_and_the_rest_classified(env, client):
    """Like `convzoo predict`: one result per file, an error for the bad ones, 200 for the request."""
    expected = predict(PredictJob(_serve_models.NAME, env.weights, tuple(env.photos[:2]), topk=5))
    files = [
        ("image", ("ok.jpg", read(env.photos[0]), "image/jpeg")),
        ("image", ("broken.jpg", b"junk", "image/jpeg")),
        ("image", ("empty.jpg", b"", "image/jpeg")),
        ("image", ("bomb.png", _serve_models.bomb_png(), "image/png")),
        ("image", ("ok.png", read(env.photos[1]), "image/png")),
    ]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["image"] for x in results] == ["ok.jpg", "broken.jpg", "empty.jpg", "bomb.png", "ok.png"]
    assert_same(results[0], expected[0])
    assert_same(results[4], expected[1])
    assert (
        results[1]["status"] == 422
        and "broken.jpg" in results[1]["error"]
        and "predictions" not in results[1]
    )
    assert results[2]["status"] == 400 and "empty" in results[2]["error"]
    assert results[3]["status"] == 422 and "bomb" in results[3]["error"]
    # one image: its error is the request's
    r = client.post("/v1/predict", files=[("image", ("broken.jpg", b"junk", "image/jpeg"))])
    assert r.status_code == 422 and r.json()["image"] == "broken.jpg" and "broken.jpg" in r.json()["error"]
    r = client.post("/v1/predict", data={"note": "no file here"}, files={"x": ("", b"", "text/plain")})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "query,status,words",
    [
        ("?model=resnet9000", 404, "not served"),
        ("?topk=0", 422, "topk"),
        ("?topk=many", 422, "topk"),
        ("?cam=perhaps", 422, "cam"),
    ],
)
def test_bad_parameters(env, client, query, status, words):
    r = raw(client, read(env.photos[0]), query=query)
    assert r.status_code == status and words in r.json()["error"]


def test_a_bug_is_a_json_500_and_the_server_lives_on(env, monkeypatch):
    app = make_app(env)
    model = app.state.server.models[_serve_models.NAME]
    probe = model.probe
    monkeypatch.setattr(
        model, "probe", lambda data, name, *a: 1 / 0 if data.startswith(b"boom") else probe(data, name, *a)
    )
    with local(app, raise_server_exceptions=False) as c:
        r = raw(c, b"boom")
        assert r.status_code == 500 and r.json() == {"error": "internal error (ZeroDivisionError)"}
        assert raw(c, read(env.photos[0])).status_code == 200


def test_chunked_upload_over_the_limit_is_refused(env, small_limit_client):
    chunks = (b"\0" * 65536 for _ in range(40))  # 2.5 MB, no Content-Length
    r = small_limit_client.post("/v1/predict", content=chunks, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "too large" in r.json()["error"]


# ---- decode memory ---------------------------------------------------------------------------------
def png_bytes(size, mode="RGB", alpha_edge=False) -> bytes:
    """A smooth image (compresses to a few KB at any size): gradients, optionally a transparent frame."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "RGBA":
        a = np.full((h, w), 255, np.uint8)
        if alpha_edge:
            a[: h // 5], a[:, : w // 5] = 0, 0  # transparent (black underneath): composited white
        img = Image.fromarray(np.dstack([rgb, a]), "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_pixel_cap_and_decode_memory_refuse_in_one_line(env):
    png = png_bytes((1500, 1000))
    with local(make_app(env, max_image_pixels=1_000_000)) as c:
        r = raw(c, png, ctype="image/png")
        assert r.status_code == 413 and "1500x1000 = 1.5 MP" in r.json()["error"]
        assert "--max-image-mp" in r.json()["error"]
        assert raw(c, read(env.photos[0])).status_code == 200
    with local(make_app(env, decode_budget=4_000_000)) as c:
        r = raw(c, png, ctype="image/png")
        assert r.status_code == 413 and "--decode-memory-mb" in r.json()["error"]
        assert raw(c, read(env.photos[0])).status_code == 200  # small images still pass


@pytest.mark.parametrize("kind", ["png-alpha", "jpeg"])
def test_large_images_decoded_at_reduced_size_answer_like_predict(env, tmp_path, monkeypatch, kind):
    """JPEGs are decoded at reduced size as predict decodes them (draft); other formats above
    EXACT_PIXELS are reduced by an integer factor after decoding, alpha premultiplied: the answer
    stays predict's up to resampling noise."""
    from convzoo.data.images import load_image
    from convzoo.serve import decode

    path = tmp_path / ("big.png" if kind == "png-alpha" else "big.jpg")
    if kind == "png-alpha":
        path.write_bytes(png_bytes((480, 360), "RGBA", alpha_edge=True))
    else:
        Image.open(io.BytesIO(png_bytes((480, 360)))).save(path, "JPEG", quality=95)
    monkeypatch.setattr(decode, "EXACT_PIXELS", 1000)  # 480x360 counts as large here
    model = ServedModel(_serve_models.NAME, env.weights)
    p = model.probe(path.read_bytes(), path.name)
    if kind == "png-alpha":
        assert p.factor == 360 // (2 * 36) and p.image.mode == "RGBA"  # 5: shorter side 72 = 2 x 36
    else:  # drafted at 1/8 (60x45, still at least the 36 px resize), as convzoo predict decodes it
        assert p.image.size == load_image(str(path), draft_size=36).size == (60, 45)
    p.close()
    want = predict(PredictJob(_serve_models.NAME, env.weights, (str(path),), topk=10))[0]["predictions"]
    with local(create_app([model])) as c:
        got = raw(c, path.read_bytes(), ctype="image/png", query="?topk=10")
    got = {q["index"]: q["probability"] for q in got.json()["results"][0]["predictions"]}
    assert got.keys() == {q["index"] for q in want}
    np.testing.assert_allclose([got[q["index"]] for q in want], [q["probability"] for q in want], atol=0.01)


def test_decode_budget_waits_first_come_first_served():
    import asyncio

    from convzoo.serve.decode import DecodeBudget

    async def scenario():
        budget, order, peak = DecodeBudget(10), [], [0]

        async def job(name, cost, hold):
            async with budget.hold(cost):
                order.append(name)
                peak[0] = max(peak[0], budget.used)
                await asyncio.sleep(hold)

        await asyncio.gather(job("a", 6, 0.05), job("b", 6, 0.01), job("c", 3, 0))
        return order, peak[0], budget.used

    order, peak, left = asyncio.run(scenario())
    # b must wait for a; c would fit beside a but does not overtake b, which came first
    assert order == ["a", "b", "c"] and peak <= 10 and left == 0


# ---- queue, batching, metrics -------------------------------------------------------------------
def test_full_queue_answers_503_with_retry_after(env):
    app = make_app(env, queue_size=2, max_batch=1)
    server = app.state.server
    model = server.models[_serve_models.NAME]
    release, started = threading.Event(), threading.Event()
    run_batch = model.run_batch

    def held(jobs):
        started.set()
        release.wait(30)
        return run_batch(jobs)

    server.batchers[model.id].run_batch = held
    with local(app) as c:
        job = model.decode(read(env.photos[0]), "x")
        from convzoo.serve.model import Job

        waiting = [server.batchers[model.id].submit(Job(job, 5, False))]
        assert started.wait(30)  # the thread holds one; two more fill the queue
        waiting += [server.batchers[model.id].submit(Job(job, 5, False)) for _ in range(2)]
        r = raw(c, read(env.photos[0]))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "queue is full" in r.json()["error"]
        assert 'convzoo_rejected_total{model="serve_test"} 1' in c.get("/metrics").text
        assert 'convzoo_queue_depth{model="serve_test"} 2' in c.get("/metrics").text
        release.set()
        assert all(len(f.result(30)["predictions"]) == 5 for f in waiting)
        assert raw(c, read(env.photos[0])).status_code == 200


def test_batcher_gathers_concurrent_items_into_one_batch():
    sizes, entered, gate = [], threading.Event(), threading.Event()

    def run(items):
        if not entered.is_set():
            entered.set()
            gate.wait(30)  # hold the first batch while the others queue up
        sizes.append(len(items))
        return [i * 10 for i in items]

    b = Batcher(run, max_batch=4, max_wait=0.2, queue_size=10).start()
    futures = [b.submit(0)]
    assert entered.wait(10)  # the first batch (alone after max_wait) is running
    futures += [b.submit(i) for i in range(1, 7)]
    gate.set()
    assert [f.result(10) for f in futures] == [i * 10 for i in range(7)]
    assert sizes == [1, 4, 2]  # max_batch caps the second; the rest follow
    b.close(10)
    with pytest.raises(ShuttingDown):
        b.submit(1)


def test_batcher_bounded_queue_and_drain_on_close():
    entered, gate = threading.Event(), threading.Event()
    b = Batcher(
        lambda items: (entered.set(), gate.wait(30), items)[2], max_batch=1, max_wait=0, queue_size=2
    ).start()
    first = b.submit("a")
    assert entered.wait(10)  # "a" is in the forward pass, the queue is empty
    queued = [b.submit("b"), b.submit("c")]
    with pytest.raises(QueueFull):
        b.submit("d")
    closer = threading.Thread(target=b.close, args=(30,))
    closer.start()
    gate.set()
    closer.join(30)
    assert [f.result(0) for f in [first, *queued]] == ["a", "b", "c"]  # close() finished the queue


def test_batcher_error_reaches_every_waiter_and_the_thread_lives_on():
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    b = Batcher(run, max_batch=8, max_wait=0.1, queue_size=8).start()
    bad = [b.submit(i) for i in range(3)]
    for f in bad:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(10)
    assert b.submit(7).result(10) == 7
    b.close(10)


def test_concurrent_requests_share_forward_passes(env):
    with local(make_app(env, max_batch=8, max_wait=0.3)) as c:
        data = read(env.photos[0])
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: raw(c, data).status_code, range(6)))
        assert codes == [200] * 6
        text = c.get("/metrics").text
    m = parse_metrics(text)
    batches = m['convzoo_batch_size_count{model="serve_test"}']
    assert m['convzoo_images_total{model="serve_test"}'] == 6
    assert batches < 6, f"6 concurrent requests took {batches} forward passes"


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample line of the Prometheus text format, checked against its grammar."""
    label = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
    sample = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*(\{{{label}(,{label})*\}})?) (-?[0-9.e+-]+|\+Inf|NaN)$")
    out = {}
    for line in text.strip().splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[m.group(1)] = float(m.group(4))
    return out


def test_metrics_count_requests_latency_and_batches(env):
    with local(make_app(env)) as c:
        for _ in range(3):
            assert raw(c, read(env.photos[1]), ctype="image/png").status_code == 200
        assert raw(c, b"junk").status_code == 422
        text = c.get("/metrics").text
    assert text.count("# TYPE convzoo_request_duration_seconds histogram") == 1
    m = parse_metrics(text)
    assert m['convzoo_requests_total{route="/v1/predict",code="200"}'] == 3
    assert m['convzoo_requests_total{route="/v1/predict",code="422"}'] == 1
    assert m['convzoo_request_duration_seconds_count{model="serve_test"}'] == 3
    assert m['convzoo_request_duration_seconds_bucket{model="serve_test",le="+Inf"}'] == 3
    assert m['convzoo_batch_size_count{model="serve_test"}'] == 3
    assert m['convzoo_batch_size_sum{model="serve_test"}'] == 3
    assert m['convzoo_queue_depth{model="places"}'] == 0


# ---- models, health, page, OpenAPI ---------------------------------------------------------------
def test_models_health_and_summary(env, client, monkeypatch):
    from convzoo.analysis.chart import Point
    from convzoo.serve import model as served_model

    # two points instead of profiling every registered model (~20 s): the chart code is analysis/chart.py's
    points = [
        Point("resnet18", 11_689_512, 1_814_073_344, 69.8, "t"),
        Point("vgg16", 138_357_544, 15_470_264_320, 71.6, "t"),
    ]
    monkeypatch.setattr(served_model, "_chart_points", lambda: points)
    models = client.get("/v1/models").json()["models"]
    assert [m["id"] for m in models] == [_serve_models.NAME, "places"]
    assert models[0]["spec"] == json.loads(read_spec(env.weights).to_json())
    assert models[0]["preprocessing"]["resize_size"] == read_spec(env.weights).resize_size == 36
    assert models[1]["places365"] and not models[0]["places365"]
    assert models[0]["published_top1"] is None
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    summary = client.get(f"/v1/models/{_serve_models.NAME}/summary").json()
    assert summary["params"] == sum(p.numel() for p in _serve_models.ConvBNNet(10).parameters())
    assert summary["layers"][-1]["receptive_field"] is None  # the classifier sees the whole image
    chart = client.get(f"/v1/models/{_serve_models.NAME}/chart.png")
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")


def test_page_and_static_files_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        external = r"(src|href)=[\"']?(https?:)?//|url\((https?:)?//|fetch\([\"'`]https?:"
        assert not re.search(external, text), name


def test_host_header_is_checked_and_every_response_has_the_security_headers(env, client):
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        r = client.get("/healthz", headers={"host": host})
        assert r.status_code == 200, host
    # a DNS-rebinding page reaches the server under its own name
    r = client.get("/v1/models", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and "--allowed-hosts" in r.json()["error"]
    with local(make_app(env, allowed_hosts=("127.0.0.1", "*.lab.example", "photos.local"))) as c:
        assert c.get("/healthz", headers={"host": "gpu1.lab.example"}).status_code == 200
        assert c.get("/healthz", headers={"host": "photos.local:8000"}).status_code == 200
        assert c.get("/healthz", headers={"host": "lab.example.evil"}).status_code == 400
    for path in ("/", "/static/index.html", "/static/app.js", "/v1/models", "/healthz", "/nowhere"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "default-src 'self'" in r.headers["content-security-policy"], path
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert client.head("/readyz").status_code == 200


def test_openapi_describes_predict(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(body)
    params = {p["name"] for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert params == {"model", "topk", "cam"}
    assert {"/v1/models", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


# ---- the command -----------------------------------------------------------------------------------
def parse(argv):
    from convzoo.commands import serve

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    return p.parse_args(argv)


def test_model_and_weights_pairs():
    from convzoo.serve.launch import ServeJob, model_ids

    job = ServeJob(
        models=("resnet18", "googlenet", "resnet18"),
        weights=("a.safetensors", "b.safetensors", "places/c.safetensors"),
    )
    got = job.pairs
    assert got == [
        ("resnet18", "a.safetensors"),
        ("googlenet", "b.safetensors"),
        ("resnet18", "places/c.safetensors"),
    ]
    assert model_ids(got) == job.ids == ["resnet18:a", "googlenet", "resnet18:c"]
    by_name = [("resnet18", "resnet18.imagenet1k"), ("resnet18", "resnet18.places365")]  # catalog names
    assert model_ids(by_name) == ["resnet18:resnet18.imagenet1k", "resnet18:resnet18.places365"]
    runs = [("resnet18", "runs/a/best.safetensors"), ("resnet18", "runs/b/best.safetensors")]
    assert model_ids(runs) == ["resnet18:a", "resnet18:b"]  # run files: named by their run folder
    assert model_ids(runs, ["cats", "dogs"]) == ["cats", "dogs"]
    with pytest.raises(UserError, match="--name"):
        model_ids([("resnet18", "a.safetensors"), ("resnet18", "other/a.safetensors")])
    with pytest.raises(UserError, match="one --name per model"):
        model_ids(runs, ["cats"])
    with pytest.raises(UserError, match="letters, digits"):
        model_ids(runs, ["cats", "d/o g"])


def test_the_command_builds_its_job_from_the_flags_in_order(monkeypatch):
    """The positional MODEL, then each --model, pair with --weights in order; the flags reach the
    job unchanged, and a bad pairing is one line before anything is loaded."""
    from convzoo.commands import serve
    from convzoo.serve import launch

    jobs = []
    monkeypatch.setattr(launch, "launch", jobs.append)
    argv = ["resnet18", "--weights", "a", "--model", "googlenet", "--weights", "b", "--name", "x"]
    serve.run(parse([*argv, "--name", "y", "--allowed-hosts", "a.org,b.org", "--port", "8080"]))
    (job,) = jobs
    assert job.pairs == [("resnet18", "a"), ("googlenet", "b")] and job.ids == ["x", "y"]
    assert job.port == 8080 and job.hosts[-2:] == ("a.org", "b.org")
    with pytest.raises(UserError, match="one --weights per model"):
        serve.run(parse(["resnet18", "--weights", "a", "--weights", "b"]))
    with pytest.raises(UserError, match="name a model"):
        serve.run(parse(["--weights", "a"]))
    with pytest.raises(UserError, match="two models would be served as resnet18:a"):
        serve.run(parse(["resnet18", "--weights", "a", "--model", "resnet18", "--weights", "x/a"]))
    with pytest.raises(UserError, match="--precision int8 needs --calibration"):
        serve.run(parse(["resnet18", "--weights", "a", "--backend", "onnxruntime", "--precision", "int8"]))
    with pytest.raises(UserError, match="--calibration applies to --precision int8"):
        serve.run(parse(["resnet18", "--weights", "a", "--calibration", "photos"]))
    assert len(jobs) == 1


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    from convzoo.commands import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install convzoo\[serve\]") as e:
        serve.run(parse(["resnet18", "--weights", "x.safetensors"]))
    assert one_line(e.value)


def test_bad_weights_is_a_user_error(env, tmp_path):
    from convzoo.serve.launch import ServeJob, build_app

    job = ServeJob(models=(_serve_models.NAME,), weights=(str(tmp_path / "missing.safetensors"),))
    with _serve_models.registered(), pytest.raises(UserError, match="not found"):
        build_app(job)


# The real uvicorn process (upload limit on the socket, slow clients, graceful SIGTERM) is tested
# in tests/test_serve_hardening.py, with one server start for all of it.
