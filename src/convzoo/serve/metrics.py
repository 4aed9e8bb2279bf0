"""Prometheus metrics in the text exposition format (version 0.0.4), written here.

Why not prometheus_client: its default registry is process-global, so two apps in one process
(the tests start several) would share counters unless every metric is built on a private
registry; and the format needs only what is below (counters, gauges and cumulative histograms
with labels, ~80 lines). Values are updated from the event loop and the inference threads,
hence the lock.
"""

from __future__ import annotations

import math
import threading

# Seconds: a tiny model answers in milliseconds, ResNet-50 on a loaded 2-core CPU in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    body = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values))
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, registry: Registry, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.lock = registry.lock
        registry.metrics.append(self)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.values: dict[tuple, float] = {}

    def inc(self, *labels, amount: float = 1.0) -> None:
        with self.lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in sorted(self.values.items())
        ]


class Gauge(Counter):
    """A value that goes up and down; `set` or a `read` callback evaluated at scrape time."""

    kind = "gauge"

    def __init__(self, *args, read=None, **kw):
        super().__init__(*args, **kw)
        self.read = read  # () -> {label tuple: value}

    def set(self, *labels, value: float) -> None:
        with self.lock:
            self.values[labels] = value

    def render(self) -> list[str]:
        if self.read is not None:
            for k, v in self.read().items():
                self.set(*k, value=v)
        return super().render()


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, *args, buckets=LATENCY_BUCKETS, **kw):
        super().__init__(*args, **kw)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.values: dict[tuple, tuple[list[int], float]] = {}  # labels -> (cumulative counts, sum)

    def observe(self, *labels, value: float) -> None:
        with self.lock:
            counts, total = self.values.get(labels, ([0] * len(self.buckets), 0.0))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    counts[i] += 1
            self.values[labels] = (counts, total + value)

    def render(self) -> list[str]:
        lines = []
        for k, (counts, total) in sorted(self.values.items()):
            for b, c in zip(self.buckets, counts):
                le = _labels(self.label_names + ("le",), k + (_num(b),))
                lines.append(f"{self.name}_bucket{le} {c}")
            lab = _labels(self.label_names, k)
            lines += [f"{self.name}_sum{lab} {_num(total)}", f"{self.name}_count{lab} {counts[-1]}"]
        return lines


class Registry:
    def __init__(self):
        self.lock = threading.RLock()
        self.metrics: list[_Metric] = []

    def render(self) -> str:
        out: list[str] = []
        with self.lock:  # reentrant: a gauge's `set` inside `render` takes it again
            for m in self.metrics:
                out += m.header() + m.render()
        return "\n".join(out) + "\n"


class ServeMetrics:
    """The metrics `convzoo serve` exports (names in docs/serve.md)."""

    def __init__(self, queue_depths=None):
        self.registry = r = Registry()
        self.requests = Counter(
            r, "convzoo_requests_total", "HTTP requests by route and status code", ("route", "code")
        )
        self.latency = Histogram(
            r,
            "convzoo_request_duration_seconds",
            "Time from request to response of POST /v1/predict",
            ("model",),
        )
        self.images = Counter(r, "convzoo_images_total", "Images classified", ("model",))
        self.batch_size = Histogram(
            r,
            "convzoo_batch_size",
            "Images per forward pass",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.inference = Histogram(
            r, "convzoo_batch_seconds", "Time of one batch in the inference thread", ("model",)
        )
        self.rejected = Counter(
            r, "convzoo_rejected_total", "Images refused with 503 because the queue was full", ("model",)
        )
        self.queue_depth = Gauge(
            r, "convzoo_queue_depth", "Images waiting for a forward pass", ("model",), read=queue_depths
        )

    def render(self) -> str:
        return self.registry.render()
