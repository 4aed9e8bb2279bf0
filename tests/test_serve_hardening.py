"""`convzoo serve` against hostile or careless clients, on one real uvicorn process over loopback
(one start: it is the expensive part): the upload limit on the socket, slow request heads and
bodies time out (and free their connection slots), Host headers are checked, SIGTERM finishes
queued requests and answers idle keep-alive connections, weights' labels reach the terminal
escaped; and the command's numbers are checked before anything is loaded."""

import io
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="convzoo[serve] is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")

import _serve_models
from convzoo import cli
from helpers import one_line

BOUND = 20  # seconds: no client below waits longer for anything


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def trickle(sock: socket.socket, first: bytes, data: bytes, every: float) -> tuple[bytes, float]:
    """Send `first`, then `data` one byte every `every` s until the server answers or closes;
    (reply, seconds)."""
    t0, reply, sent = time.monotonic(), b"", 0
    sock.sendall(first)
    while time.monotonic() - t0 < BOUND:
        if sent < len(data):
            try:
                sock.send(data[sent : sent + 1])
                sent += 1
            except OSError:
                break
        ready, _, _ = select.select([sock], [], [], every)
        if ready:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
    return reply, time.monotonic() - t0


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length (a keep-alive connection stays open after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(v)
        for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        if k.lower() == b"content-length"
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class Output(threading.Thread):
    """The server's combined output, read as it comes (to wait for a line)."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc, self.lines, self.event = proc, [], threading.Condition()
        self.start()

    def run(self):
        for line in self.proc.stdout:
            with self.event:
                self.lines.append(line)
                self.event.notify_all()

    def wait_for(self, text: str, timeout: float = BOUND) -> bool:
        with self.event:
            return self.event.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def text(self) -> str:
        with self.event:
            return "".join(self.lines)


def http_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's head and the start of its body; the reply up to the server closing the connection."""
    reply = b""
    with connect(port) as s:
        s.sendall(head + body)
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def test_real_server_limits_slow_clients_hosts_labels_and_graceful_sigterm(tmp_path):
    import httpx

    run = tmp_path / "runs" / "cats"
    run.mkdir(parents=True)
    labels = ["\x1b[2J\x1b[31mcat\x1b[0m", "dog\r\x07"] + [f"class{i}" for i in range(8)]
    weights = _serve_models.make_weights(run / "best.safetensors", labels=labels)
    port = _serve_models.free_port()
    args = [_serve_models.NAME, "--weights", weights, "--max-connections", "5", "--max-upload-mb", "1"]
    args += ["--header-timeout", "1", "--body-timeout", "2", "--allowed-hosts", "photos.lab.example"]
    args += ["--max-wait-ms", "1500", "--max-batch", "16"]
    proc = _serve_models.start_server(args, port)
    out = Output(proc)
    try:
        # 100 MB announced, 1 KB sent: 413 arrives at once, the server does not wait for the rest
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {100 * 2**20}\r\n\r\n"
        ).encode()
        reply = http_exchange(port, head, b"\xff" * 1024)
        assert reply.startswith(b"HTTP/1.1 413") and b"too large" in reply

        # four connections that never finish their request, and one more fills --max-connections ...
        slow = [connect(port) for _ in range(4)]
        results: dict = {}

        def client(i, sock):
            if i == 0:  # a head, a byte every 0.3 s
                results[i] = trickle(
                    sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a" * 100, 0.3
                )
            elif i == 1:  # a complete head, then a body a byte every 0.3 s
                head = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                results[i] = trickle(sock, head + b"Content-Length: 1000\r\n\r\n", b"\0" * 1000, 0.3)
            else:  # nothing at all
                results[i] = trickle(sock, b"", b"", 0.3)

        threads = [threading.Thread(target=client, args=(i, s)) for i, s in enumerate(slow)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        busy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=BOUND)
        assert busy.status_code == 503  # what slow clients did to everyone before they timed out
        for t in threads:
            t.join(BOUND + 5)
        # ... and are closed by the deadlines: 408 where a request had begun
        (head_reply, head_s), (body_reply, body_s) = results[0], results[1]
        assert head_reply.startswith(b"HTTP/1.1 408") and head_s < BOUND
        assert body_reply.startswith(b"HTTP/1.1 408") and b"--body-timeout" in body_reply and body_s < BOUND
        assert results[2][0] == b"" and results[2][1] < BOUND
        for s in slow:
            s.close()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=BOUND).status_code == 200

        # Host: the bound address and --allowed-hosts answer, another name does not
        assert (
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"host": "photos.lab.example"}).status_code
            == 200
        )
        evil = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"host": "rebind.attacker.example"})
        assert evil.status_code == 400 and "--allowed-hosts" in evil.json()["error"]
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["models"]
        assert models[0]["id"] == _serve_models.NAME  # one model: its name (no :cats needed)
        assert httpx.head(f"http://127.0.0.1:{port}/healthz").status_code == 200

        # SIGTERM: queued requests finish, a keep-alive connection idle at that moment still gets
        # an answer to its next request, and the process exits 0
        keep = connect(port)
        keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(keep).startswith(b"HTTP/1.1 200")
        photo = io.BytesIO()
        Image.new("RGB", (40, 30), (90, 140, 200)).save(photo, "JPEG")
        with ThreadPoolExecutor(3) as pool:
            queued = [
                pool.submit(
                    httpx.post,
                    f"http://127.0.0.1:{port}/v1/predict",
                    content=photo.getvalue(),
                    headers={"content-type": "image/jpeg"},
                    timeout=BOUND,
                )
                for _ in range(3)
            ]
            time.sleep(0.8)  # received and waiting in the batch (1.5 s max wait)
            proc.send_signal(signal.SIGTERM)
            assert out.wait_for("Shutting down")
            keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = read_response(keep)
            assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply.lower(), reply
            assert keep.recv(100) == b""  # then closed, cleanly
            keep.close()
            assert [f.result().status_code for f in queued] == [200] * 3
        assert proc.wait(BOUND) == 0
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(BOUND)
        out.join(5)
    text = out.text()
    assert "Traceback" not in text, text[-3000:]
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x1b[31mcat\\x1b[0m" in text  # the label, escaped, on the start-up lines


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--port", "70000"], "--port 70000 is out of range"),
        (["--port", "0"], "--port 0 is out of range"),
        (["--max-connections", "0"], "--max-connections 0 is out of range"),
        (["--body-timeout", "nan"], "--body-timeout nan is out of range"),
        (["--decode-memory-mb", "1"], "--decode-memory-mb 1 is out of range"),
    ],
)
def test_bad_numbers_are_one_line_before_loading_anything(tmp_path, capsys, flags, words):
    missing = str(tmp_path / "never-read.safetensors")  # checked later: the numbers come first
    code = cli.main(["serve", "resnet18", "--weights", missing, *flags])
    err = capsys.readouterr().err
    assert code == 2 and words in err and one_line(err), err
