"""Inference against what a demanding user would pick instead of convzoo.

The same network, the same random input, the same threads; contenders timed interleaved
(A B C D A B C D ...), medians reported with each one's ratio to the best peer:

  convzoo_default     what `eval`/`predict`/`serve` run by default on a long job (`--backend
                      auto`: the fastest installed runtime in the default precision, e.g. OpenVINO
                      fp32 where bf16 measured slower than fp32; its graph made before the timed
                      rounds)
  convzoo_torch       `--backend torch`: BN folded, the default precision (`accel.precision_choice`:
                      bf16 weights + channels_last where bf16 measured fast, else fp32 NCHW), eager
  convzoo_compiled    the same, torch.compile with frozen weights (compile time reported apart)
  convzoo_ort_int8    `--backend onnxruntime --precision int8`: convzoo's graph, int8 calibrated on
                      128 of the ImageNet photos (inference/runtime.py)
  convzoo_ov_int8     `--backend openvino --precision int8`: NNCF's post-training quantization of
                      convzoo's graph where nncf is installed (else the ONNX Runtime int8 graph)
  torch_bf16_compile  the reference model under bf16 autocast + channels_last + torch.compile
                      (what a user would do by hand; torchvision's model for ResNet-50)
  onnxruntime_fp32    ONNX Runtime, CPU provider, fp32, on the ONNX export of the same network
  openvino_bf16       OpenVINO, CPU, INFERENCE_PRECISION_HINT=bf16, on the same ONNX export
  openvino_int8_nncf  (int8 peer) NNCF 3.x `nncf.quantize` with its defaults on the same export,
                      calibrated on the same 128 photos, run by OpenVINO with its default config
  openvino_int8_nncf_convzoo_graph  the same on convzoo's own graph (the one convzoo_ov_int8
                      quantizes): what differs from convzoo_ov_int8 is then only convzoo's NNCF
                      settings and OpenVINO config

Throughput at batch 32 and latency at batch 1 (p50/p99 per image over many single calls).
A peer that is not installed is skipped with a note (onnxruntime: the `onnx` extra; openvino:
the `openvino` extra). `--skip NAME,...` leaves contenders out (torch_bf16_compile takes about a
minute per batch of 32 on a CPU without bf16 units). The int8 contenders' accuracy cost is
measured apart (benchmarks/bench_bf16_agreement.py --backend ...).

    PYTHONPATH=src python benchmarks/bench_infer_peers.py --model resnet50
    PYTHONPATH=src python benchmarks/bench_infer_peers.py --model googlenet_original
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import setup_threads, write_result

PEERS = ("torch_bf16_compile", "onnxruntime_fp32", "openvino_bf16")  # the float peers
SAME_GRAPH = "openvino_int8_nncf_convzoo_graph"  # the int8 peer on convzoo's own graph


def reference_model(name: str):
    """The network as a user would get it elsewhere: torchvision's where it has it, else convzoo's
    module used plainly (no folding, no cast)."""
    import torch
    import torchvision

    from convzoo.factory import create_model

    torch.manual_seed(0)
    if hasattr(torchvision.models, name):
        return getattr(torchvision.models, name)().eval()
    return create_model(name).eval()


def export_onnx(model, x, folder: Path) -> Path:
    """The graph the peers run: what `convzoo export --format onnx` writes for the network (torch's
    dynamo exporter; LRN as ONNX's LRN op), fp32, dynamic batch."""
    from convzoo.interop.export import write_onnx

    path = folder / "model.onnx"
    write_onnx(model, x.shape[-1], str(path))
    return path


def contenders(name: str, x, threads: int, folder: Path, notes: dict, skip: frozenset = frozenset()) -> dict:
    """name -> a callable running one forward pass on its input (fp32 NCHW numpy or tensor)."""
    import torch

    from convzoo.engine import accel
    from convzoo.factory import create_model

    torch.manual_seed(0)
    ours = create_model(name).eval()
    reference = reference_model(name)
    reference.load_state_dict(ours.state_dict(), strict=False)  # same weights where keys agree
    precision, channels_last = accel.resolve_auto("auto", "auto", "cpu")  # what --backend torch runs
    notes["convzoo_torch_precision"] = f"{precision}, {accel.precision_choice('cpu')[1]}"
    out = {
        "convzoo_default": convzoo_default(ours, name, x.shape[-1], folder, notes),
        "convzoo_torch": accel.prepare_for_inference(ours, precision, channels_last),
        "convzoo_compiled": accel.prepare_for_inference(ours, precision, channels_last, compile=True),
    }
    by_hand = torch.compile(reference.to(memory_format=torch.channels_last))

    def torch_bf16(inp):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return by_hand(inp.contiguous(memory_format=torch.channels_last))

    out["torch_bf16_compile"] = torch_bf16
    backends = [
        b for b, short in (("onnxruntime", "ort"), ("openvino", "ov")) if f"convzoo_{short}_int8" not in skip
    ]
    if backends:  # their graphs take minutes to make: only those not skipped are made
        out.update(convzoo_backends(ours, name, x.shape[-1], folder, notes, backends))
    onnx_path = export_onnx(reference, x, folder)
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        out["onnxruntime_fp32"] = lambda inp: session.run(None, {"input": inp.numpy()})[0]
        notes["onnxruntime"] = ort.__version__
    except ImportError:
        notes["onnxruntime"] = "not installed (pip install convzoo[onnx])"
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
        )
        request = compiled.create_infer_request()
        out["openvino_bf16"] = lambda inp: request.infer({0: inp.numpy()})
        notes["openvino"] = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        if "openvino_int8_nncf" not in skip:
            out.update(nncf_peer(core, onnx_path, name, x.shape[-1], threads, notes, "openvino_int8_nncf"))
        if SAME_GRAPH not in skip:  # the graph convzoo_default made (in the cache `folder`)
            from convzoo.inference import runtime

            ours_graph = Path(runtime.graph_path(ours, name, x.shape[-1]))
            out.update(nncf_peer(core, ours_graph, name, x.shape[-1], threads, notes, SAME_GRAPH))
    except ImportError:
        notes["openvino"] = "not installed (pip install openvino)"
    return out


def convzoo_default(model, name: str, size: int, folder: Path, notes: dict):
    """The model `--backend auto` gives a long job (inference/runtime.py fast_model), its choice noted."""
    import contextlib
    import io
    import os

    from convzoo.inference import runtime

    os.environ["CONVZOO_CACHE"] = str(folder)
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        fast, _, info = runtime.fast_model(
            model,
            name,
            "auto",
            runtime.resolve_backend("auto", None, "cpu"),
            True,
            "cpu",
            size,
            images=None,
            command="bench",
            precision_by_default=True,
        )
    notes["convzoo_default_choice"] = err.getvalue().strip().splitlines()
    notes["convzoo_default_build_s"] = round(time.perf_counter() - t0, 1)
    notes["convzoo_default_backend"] = f"{info['backend']} {info['precision']}"
    return fast


def nncf_peer(core, onnx_path: Path, name: str, size: int, threads: int, notes: dict, key: str) -> dict:
    """OpenVINO int8 as its own quantizer makes it: nncf.quantize with its defaults, calibrated on
    the same 128 photos as convzoo's int8 (one image per calibration item), compiled with
    OpenVINO's default config (threads set)."""
    try:
        import nncf
    except ImportError:
        notes[key] = "nncf not installed (pip install nncf)"
        return {}
    from _common import sample_files
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.inference import runtime
    from convzoo.weights import WeightSpec

    cal = runtime.calibration_from_files(
        sample_files(), eval_transform_from_spec(WeightSpec(name, 1000, input_size=size)), "imagenet-samples"
    )
    items = [b[i : i + 1].numpy() for b in cal.batches() for i in range(len(b))]
    t0 = time.perf_counter()
    quantized = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(items), subset_size=len(items))
    notes[f"{key}_build_s"] = round(time.perf_counter() - t0, 1)
    notes["nncf"] = nncf.__version__
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return {key: lambda inp: request.infer({0: inp.numpy()})}


def convzoo_backends(model, name: str, size: int, folder: Path, notes: dict, backends: list[str]) -> dict:
    """convzoo's own --backend onnxruntime/openvino --precision int8 (inference/runtime.py), its graph
    cache in `folder`, calibrated on 128 of the ImageNet photos (the first, sorted)."""
    import os

    from _common import sample_files
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.inference import runtime
    from convzoo.weights import WeightSpec

    os.environ["CONVZOO_CACHE"] = str(folder)
    out = {}
    try:
        calibration = runtime.calibration_from_files(
            sample_files(),
            eval_transform_from_spec(WeightSpec(name, 1000, input_size=size)),
            "imagenet-samples",
        )
        for backend in backends:
            short = {"onnxruntime": "ort", "openvino": "ov"}[backend]
            runtime.resolve_backend(backend, "int8", "cpu")
            t0 = time.perf_counter()
            fast = runtime.runtime_model(model, name, backend, "int8", size, calibration, "bench")
            notes[f"convzoo_{short}_int8_build_s"] = round(time.perf_counter() - t0, 1)
            out[f"convzoo_{short}_int8"] = fast
    except Exception as e:  # noqa: BLE001 - a missing runtime skips its contenders, with the reason
        notes["convzoo_backends"] = f"skipped: {e}"
    return out


def warm(fns: dict, x, notes: dict) -> None:
    """First calls (compilation, graph optimisation) are reported apart, not timed with the rest."""
    import torch

    with torch.inference_mode():
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            fn(x)
            notes[f"{k}_first_two_calls_s"] = round(time.perf_counter() - t0, 2)


# Between two contenders: ONNX Runtime's and OpenVINO's worker threads keep spinning for a while
# after a call, and took the cores from whichever contender came next (OpenVINO fp32 right after
# ONNX Runtime ran at batch 1 at 0.65x of the same model timed later in the round).
PAUSE_S = 0.2


def interleave(fns: dict, x, rounds: int, pause: float = PAUSE_S) -> dict[str, list[float]]:
    """Each round runs every contender once, after a pause, starting one further along the list
    each round (so no contender always follows the same one)."""
    import torch

    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for r in range(rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(pause)
                t0 = time.perf_counter()
                fns[k](x)
                times[k].append(time.perf_counter() - t0)
    return times


def table(times: dict[str, list[float]], batch: int) -> dict:
    med = {k: statistics.median(v) for k, v in times.items()}
    best_peer = min((med[k] for k in PEERS if k in med), default=None)
    rows = {}
    for k, v in times.items():
        ordered = sorted(v)
        rows[k] = {
            "median_s": med[k],
            "images_per_second": batch / med[k],
            "p50_ms_per_image": 1000 * med[k] / batch,
            "p99_ms_per_image": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / batch,
            "vs_best_peer": (best_peer / med[k]) if best_peer else None,
            "runs": len(v),
        }
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=None, help="default: the model's paper size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds at the batch size")
    ap.add_argument("--latency-rounds", type=int, default=50, help="interleaved rounds at batch 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pause", type=float, default=PAUSE_S, help="seconds idle before each timed call")
    ap.add_argument("--skip", default="", help="contenders to leave out, comma-separated")
    args = ap.parse_args()
    setup_threads(args.threads)
    import torch

    from convzoo.registry import model_info

    size = args.input_size or model_info(args.model).input_size
    x = torch.randn(args.batch_size, 3, size, size)
    x1 = x[:1].clone()
    notes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        skip = frozenset(filter(None, args.skip.split(",")))
        fns = contenders(args.model, x, args.threads, Path(tmp), notes, skip)
        for k in filter(None, args.skip.split(",")):
            fns.pop(k, None)
            notes[k] = "skipped (--skip)"
        warm(fns, x, notes)
        throughput = table(interleave(fns, x, args.rounds, args.pause), args.batch_size)
        warm(fns, x1, notes)  # batch 1 is a new shape for the compiled graphs
        latency = table(interleave(fns, x1, args.latency_rounds, args.pause), 1)
    for title, rows in ((f"batch {args.batch_size}", throughput), ("batch 1", latency)):
        print(f"\n{args.model} {size}x{size}, {title}, {args.threads} threads")
        print(f"{'contender':<20} {'img/s':>8} {'p50 ms/img':>11} {'p99 ms/img':>11} {'vs best peer':>13}")
        for k, r in rows.items():
            ratio = f"{r['vs_best_peer']:.2f}x" if r["vs_best_peer"] else "-"
            print(
                f"{k:<20} {r['images_per_second']:>8.1f} {r['p50_ms_per_image']:>11.2f} "
                f"{r['p99_ms_per_image']:>11.2f} {ratio:>13}"
            )
    write_result(
        "infer_peers",
        args.model,
        f"b{args.batch_size}",
        {
            "settings": vars(args) | {"input_size": size},
            "throughput": throughput,
            "latency_batch1": latency,
            "notes": notes,
        },
    )


if __name__ == "__main__":
    main()
