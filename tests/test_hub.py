"""Published weights by name: download (resume, hash, bounds), offline/manual route, cache,
and the `convzoo weights` listing - against a local HTTP server on 127.0.0.1 only.

The served file is a real third-party checkpoint format: an akamaster-style CIFAR ResNet-20
(tests/_akamaster.py, random weights, `{"state_dict": module.*, "best_prec1"}`), behind a
test-only catalog entry shaped like the real `resnet20_cifar.akamaster_cifar10` ones. Every
success is checked on numbers: the converted weights equal the served ones and the model
built from the catalog name gives the reference implementation's logits.
"""

import hashlib
import io
import json
import os
import socket
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from _akamaster import randomized, save_like_akamaster
from convzoo import create_model
from convzoo.errors import UserError
from convzoo.hub import cached_path, catalog, download_path, pin_path, resolve_weights
from convzoo.weights import read_spec
from helpers import one_line, run

NAME = "resnet20_cifar.test_served"


# ---- the local server -------------------------------------------------------------------------
class Server:
    """Serves `files` (path -> bytes) with Range support; `cut_once` closes the first response
    midway; `status` answers every request with that HTTP error. Logs (path, Range header)."""

    def __init__(self):
        self.files, self.log, self.cut_once, self.status, self.location = {}, [], False, None, None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a server thread

            def do_GET(self):
                outer.log.append((self.path, self.headers.get("Range")))
                if outer.location:
                    self.send_response(302)
                    self.send_header("Location", outer.location)
                    self.end_headers()
                    return
                if outer.status or self.path not in outer.files:
                    self.send_error(outer.status or 404)
                    return
                self._send(outer.files[self.path])

            def _send(self, body):
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if outer.cut_once:
                    outer.cut_once = False
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.stopper = threading.Timer(120, self.httpd.shutdown)  # stops by itself whatever happens

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    s.stopper.start()
    yield s
    s.stopper.cancel()
    s.httpd.shutdown()
    s.httpd.server_close()


# ---- the served checkpoint and its catalog entry -------------------------------------------------
@pytest.fixture(scope="module")
def served():
    ref = randomized(n=3, seed=3)
    buf = io.BytesIO()
    save_like_akamaster(ref, buf)
    return ref, buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVZOO_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def entry(server, served, cache, monkeypatch):
    """A catalog entry for the served file, shaped like the real akamaster entries."""
    body = served[1]
    server.files["/models/resnet20-test.th"] = body
    real = catalog.get("resnet20_cifar.akamaster_cifar10")
    e = replace(
        real,
        name=NAME,
        url=server.url("/models/resnet20-test.th"),
        file="resnet20-test.th",
        hash="sha256:" + hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        size_mib=None,
    )
    monkeypatch.setitem(catalog.entries(), NAME, e)
    return e


def set_entry(monkeypatch, e, **changes):
    e = replace(e, **changes)
    monkeypatch.setitem(catalog.entries(), e.name, e)
    return e


def logits(net):
    torch.manual_seed(1)
    with torch.no_grad():
        return net.eval()(torch.randn(2, 3, 32, 32))


def assert_serves_reference(ref):
    """The model built from the catalog name is the served network, number for number."""
    ours = create_model("resnet20_cifar", weights=NAME)
    state = ours.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(state["fc." + k[7:] if k.startswith("linear.") else k], v)
    assert float((logits(ours) - logits(ref)).abs().max()) <= 1e-5 * max(1.0, float(logits(ref).abs().max()))


def nothing_cached(e):
    folder = os.path.dirname(download_path(e))
    leftovers = [f for f in os.listdir(folder) if not f.endswith(".lock")] if os.path.isdir(folder) else []
    return not os.path.exists(cached_path(e)) and leftovers == []  # no .part, no download


# ---- success, cache, resume --------------------------------------------------------------------------
def test_download_verify_convert_cache(entry, served, server, capsys):
    path = resolve_weights(NAME)
    assert path == cached_path(entry) and os.path.isfile(path)
    err = capsys.readouterr().err
    assert "downloading" in err and entry.url in err and "converting" in err
    spec = read_spec(path)
    assert spec.model_kwargs == {"shortcut_pad": "split"} and spec.labels[:2] == ["airplane", "automobile"]
    assert spec.extra["catalog"] == NAME and spec.converted_from == entry.url
    assert (spec.input_size, spec.mean) == (32, (0.485, 0.456, 0.406))
    assert_serves_reference(served[0])
    n = len(server.log)
    assert resolve_weights(NAME) == path and len(server.log) == n  # second use: no network


def test_resume_after_a_cut(entry, served, server):
    server.cut_once = True
    resolve_weights(NAME, log=lambda s: None)
    assert server.log[0][1] is None
    assert server.log[1][1] == f"bytes={len(served[1]) // 2}-"  # resumed where the cut left it
    assert_serves_reference(served[0])


def test_partial_file_from_an_earlier_run_is_resumed(entry, served, server):
    os.makedirs(os.path.dirname(download_path(entry)))
    with open(download_path(entry) + ".part", "wb") as f:
        f.write(served[1][:1000])
    resolve_weights(NAME, log=lambda s: None)
    assert server.log == [("/models/resnet20-test.th", "bytes=1000-")]
    assert_serves_reference(served[0])


def test_tampered_cached_weights_are_converted_again(entry, served, server):
    """A byte of the cached conversion flipped (a damaged disk, an edit): the next use finds that
    it no longer matches the hash recorded at conversion, deletes it and converts the verified
    download again (no network: the download is still there) - never the tampered numbers."""
    path = resolve_weights(NAME, log=lambda s: None)
    good = open(path, "rb").read()
    bad = bytearray(good)
    bad[-5] ^= 0x10  # inside the last tensor
    with open(path, "wb") as f:
        f.write(bad)
    said = []
    assert resolve_weights(NAME, log=said.append) == path
    assert any("not the" in s and "recorded" in s and "converting it again" in s for s in said), said
    assert open(path, "rb").read() == good
    assert len(server.log) == 1  # converted from the kept download
    assert_serves_reference(served[0])


# ---- refusals: one line, nothing half-written ---------------------------------------------------------
def test_wrong_hash_is_refused_and_deleted(entry, server, monkeypatch):
    e = set_entry(monkeypatch, entry, hash="sha256:" + "0" * 64)
    with pytest.raises(UserError, match="not the published") as err:
        resolve_weights(NAME, log=lambda s: None)
    assert one_line(err.value) and "deleted" in str(err.value)
    assert nothing_cached(e)


def test_no_published_hash_pins_the_first_download(entry, served, server, monkeypatch, capsys):
    """A publisher without a hash (plain http:// entries): the first download's SHA-256 is pinned,
    and a different file served later under the same name is refused and deleted, not converted."""
    e = set_entry(monkeypatch, entry, hash=None)
    resolve_weights(NAME, log=lambda s: None)
    assert "pinned" in capsys.readouterr().err and os.path.isfile(pin_path(e))
    os.remove(cached_path(e))
    os.remove(download_path(e))
    swapped = bytearray(served[1])
    swapped[-5] ^= 0x10
    server.files["/models/resnet20-test.th"] = bytes(swapped)
    with pytest.raises(UserError, match="pinned at its first download") as err:
        resolve_weights(NAME, log=lambda s: None)
    assert one_line(err.value) and "deleted" in str(err.value) and nothing_cached(e)
    server.files["/models/resnet20-test.th"] = served[1]  # the pinned file is accepted again
    resolve_weights(NAME, log=lambda s: None)
    assert_serves_reference(served[0])


@pytest.mark.parametrize("status", [500, 404])
def test_server_error_names_url_and_manual_path(entry, server, status):
    server.status = status
    with pytest.raises(UserError) as err:
        resolve_weights(NAME, log=lambda s: None)
    msg = str(err.value)
    assert (
        one_line(err.value) and f"HTTP {status}" in msg and entry.url in msg and download_path(entry) in msg
    )
    assert nothing_cached(entry)


def test_size_bound(entry, server, monkeypatch):
    e = set_entry(monkeypatch, entry, size_bytes=1000)
    with pytest.raises(UserError, match="limit") as err:
        resolve_weights(NAME, log=lambda s: None)
    assert one_line(err.value) and nothing_cached(e)


def test_redirect_to_a_non_http_url_is_refused(entry, server):
    server.location = "ftp://127.0.0.1/weights.th"  # urllib alone would follow ftp
    with pytest.raises(UserError, match="non-HTTP") as err:
        resolve_weights(NAME, log=lambda s: None)
    assert one_line(err.value) and nothing_cached(entry)


def test_offline_opens_no_socket_then_manual_file_works(entry, served, server, monkeypatch):
    monkeypatch.setenv("CONVZOO_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a socket was opened while offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(UserError, match="offline") as err:
        resolve_weights(NAME)
    assert one_line(err.value) and entry.url in str(err.value) and download_path(entry) in str(err.value)
    assert server.log == []
    # the manual route: the file placed where the message says is verified and converted
    os.makedirs(os.path.dirname(download_path(entry)), exist_ok=True)
    with open(download_path(entry), "wb") as f:
        body = bytearray(served[1])
        body[len(body) // 2] ^= 1
        f.write(body)  # a corrupted copy first: refused, kept for the user to replace
    with pytest.raises(UserError, match="manually placed.*not used") as err:
        resolve_weights(NAME, log=lambda s: None)
    assert one_line(err.value) and not os.path.exists(cached_path(entry))
    with open(download_path(entry), "wb") as f:
        f.write(served[1])
    assert resolve_weights(NAME, log=lambda s: None) == cached_path(entry)
    assert_serves_reference(served[0])
    assert server.log == []


def test_unknown_name_suggests_catalog_names(cache):
    with pytest.raises(UserError, match="did you mean resnet50.tv2_in1k") as err:
        resolve_weights("resnet50.tv2_in1")
    assert one_line(err.value)
    with pytest.raises(UserError, match="not found"):
        create_model("resnet20_cifar", weights="no/such/file.safetensors")


# ---- the catalog's own facts (no network) --------------------------------------------------------------
def test_catalog_covers_the_published_families():
    names = set(catalog.entries())
    for want in (
        "resnet50.tv2_in1k",
        "googlenet_original.bvlc_in1k",
        "caffenet.bvlc_in1k",
        "vgg_d.vgg_in1k",
        "vgg_e.vgg_in1k",
        "resnet152_paper.msra_in1k",
        "nin.caffe_in1k",
        "resnet18.places365",
        "inception_v4.tf_in1k",
        "inception_resnet_v2.tf_in1k",
        "resnet1202_cifar.akamaster_cifar10",
    ):
        assert want in names
    from convzoo import list_models

    registered = set(list_models())
    for e in catalog.entries().values():
        assert e.source in ("torchvision", "timm", "places365", "caffe", "remap")
        assert e.model in registered


def test_torchvision_entries_agree_with_torchvision():
    """Every torchvision entry's URL, hash prefix and preprocessing are torchvision's own."""
    from torchvision.models import get_model_weights

    from convzoo.interop import torchvision as tv_conv

    tv = [e for e in catalog.entries().values() if e.source == "torchvision"]
    assert len(tv) >= 24
    for e in tv:
        urls = {w.url for w in get_model_weights(e.model)}
        assert e.url in urls and e.file == os.path.basename(e.url)
        assert e.hash == "sha256:" + e.file.rsplit("-", 1)[1].split(".")[0]
        spec = tv_conv.weight_spec(e.model, 1000, e.file, lambda s: None)
        got = {k: getattr(spec, k) for k in e.preprocessing}
        assert got == {k: tuple(v) if isinstance(v, list) else v for k, v in e.preprocessing.items()}


# ---- `convzoo weights` ---------------------------------------------------------------------------------
def test_weights_listing(entry, capsys):
    rc, out, _ = run(capsys, "weights", "resnet50.tv")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["name", "source", "top1", "top5", "dataset", "size", "cached"]
    assert any(line.split()[:4] == ["resnet50.tv2_in1k", "torchvision", "80.86", "95.43"] for line in lines)
    rc, out, _ = run(capsys, "weights", NAME, "--json")
    (rec,) = json.loads(out)
    assert rc == 0 and rec["name"] == NAME and rec["cached"] is False
    assert run(capsys, "weights", "--download", NAME)[0] == 0
    rc, out, _ = run(capsys, "weights", NAME, "--json")
    assert rc == 0 and json.loads(out)[0]["cached"] is True
    rc, out, _ = run(capsys, "weights", "--path", NAME)
    assert rc == 0 and cached_path(entry) in out
    rc, _, err = run(capsys, "weights", "no_such_model*")
    assert rc == 2 and "no catalog entry matches 'no_such_model*'" in err and one_line(err)


def test_fine_tuning_starts_from_a_catalog_name(entry, served):
    """`train --weights NAME` goes through training.finetune.prepare_model."""
    from convzoo.recipes import resolve
    from convzoo.training.finetune import prepare_model

    notes = []
    net, _ = prepare_model(resolve("resnet20_cifar", sets=[f"finetune.weights={NAME}"]), 10, notes.append)
    assert torch.equal(net.fc.weight, served[0].linear.weight) and "classifier kept" in notes[0]


def test_two_concurrent_users_download_once(entry, served, server):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_weights(NAME, log=lambda s: None)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [cached_path(entry)] * 2 and len(server.log) == 1
    assert_serves_reference(served[0])


def test_catalog_preprocessing_needs_no_timm(tmp_path, monkeypatch):
    """A timm catalog entry declares its preprocessing, so converting it does not need timm; a
    bare `convert --from timm` without timm still refuses rather than guess."""
    from convzoo.factory import create_model
    from convzoo.interop import convert

    path = tmp_path / "resnet18_timm.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), path)
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(UserError, match="install timm"):
        convert("timm", str(path), "resnet18")
    pre = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "input_size": 224,
        "crop_size": 224,
        "resize_size": 248,
        "interpolation": "bicubic",
    }
    state, spec = convert("timm", str(path), "resnet18", preprocessing=pre)
    assert (spec.mean, spec.resize_size, spec.interpolation) == ((0.5, 0.5, 0.5), 248, "bicubic")
    assert spec.num_classes == 10 and state["fc.weight"].shape == (10, 512)
