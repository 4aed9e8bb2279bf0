"""The accuracy cost of the fast paths: top-1 agreement of bf16 (convzoo's default) and int8
predictions with fp32 predictions on the 1,000 real ImageNet photos of imagenet-samples.tar.

No trained weights can be downloaded on this machine, so the network is randomly
initialised (seed 0). A random network with its BN statistics at their defaults predicts
nearly one class for everything, which would make agreement trivially high, so the BN
running statistics are first re-estimated on 200 of the photos (a forward pass in train
mode, cumulative average): the fp32 predictions then spread over many classes (the count
is reported). Random networks have small logit margins, so this is a pessimistic estimate
of what trained weights give; margins are reported too.

Images: resize 256 -> center crop 224 (PIL bilinear), normalised; preprocessed once and
cached in /tmp. fp32 logits are cached too (per model), so `--precision bf16` and
`--precision int8` can run as two short invocations.
int8: static PTQ (FX graph mode, x86 backend, per-channel weights, histogram observers)
calibrated on --calib photos; agreement is reported on all photos and on the held-out ones.
`--backend onnxruntime|openvino` measures `convzoo eval/predict/serve --backend B --precision
int8` instead (inference/runtime.py: ONNX Runtime's static QDQ quantization, min/max calibrated on
the first --calib photos).

    CONVZOO_SHARED=/path/to/shared PYTHONPATH=src python benchmarks/bench_bf16_agreement.py --precision bf16
    CONVZOO_SHARED=/path/to/shared PYTHONPATH=src python benchmarks/bench_bf16_agreement.py --precision int8
    CONVZOO_SHARED=/path/to/shared PYTHONPATH=src python benchmarks/bench_bf16_agreement.py --precision int8 \
        --backend onnxruntime --calib 128
"""

import argparse
import tempfile
from pathlib import Path

from _common import MEAN, STD, convzoo_model, sample_files, setup_threads, torchvision_model, write_result

CACHE = Path(tempfile.gettempdir())


def images_224():
    import torch

    path = CACHE / "convzoo-samples-224.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in sample_files()])
    torch.save(x, path)
    return x


def batches(x, bs=50):
    from convzoo.data.fast_decode import normalize_batch

    for i in range(0, len(x), bs):
        yield normalize_batch(x[i : i + bs], MEAN, STD)


def recalibrated(name, x, n=200):
    """convzoo's model with torchvision's seed-0 initialisation loaded (the key names map 1:1),
    so the random weights, and the cached fp32 reference, do not depend on which
    implementation's initialiser ran; BN statistics re-estimated on `n` photos."""
    import torch

    model, source = convzoo_model(name)
    model.load_state_dict(torchvision_model(name).state_dict())
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for b in batches(x[:n]):
            model(b)
    return model.eval(), source


def backend_int8(model, name: str, backend: str, calib):
    """convzoo's --backend B --precision int8 model, calibrated on the photos `calib`."""
    import hashlib

    from convzoo.inference import runtime

    items = list(next(batches(calib, bs=len(calib))))
    key = hashlib.sha256(calib.numpy().tobytes()).hexdigest()
    calibration = runtime.calibration_from_items(items, len(items), f"{len(items)} photos", key)
    return runtime.runtime_model(model, name, backend, "int8", calib.shape[-1], calibration, "bench")


def run(model, x):
    import torch

    with torch.inference_mode():
        return torch.cat([model(b).float() for b in batches(x)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--precision", choices=["bf16", "int8"], default="bf16")
    ap.add_argument("--calib", type=int, default=256, help="int8 calibration photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="torch")
    args = ap.parse_args()
    setup_threads(args.threads)

    import torch

    from convzoo.engine import accel

    x = images_224()
    model, source = recalibrated(args.model, x)
    ref_path = CACHE / f"convzoo-fp32-logits-{args.model}.pt"
    if ref_path.exists():
        ref = torch.load(ref_path, weights_only=True)
    else:
        ref = run(model, x)
        torch.save(ref, ref_path)
    if args.precision == "bf16":
        fast = accel.prepare_for_inference(model, "bf16", channels_last=True)
        held_out = slice(0, len(x))
    elif args.backend == "torch":
        fast = accel.quantize_int8(model, batches(x[: args.calib]))
        held_out = slice(args.calib, len(x))
    else:
        fast = backend_int8(model, args.model, args.backend, x[: args.calib])
        held_out = slice(args.calib, len(x))
    out = run(fast, x)
    agree = (out.argmax(1) == ref.argmax(1)).float()
    top2 = ref.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]) / ref.std(dim=1)
    write_result(
        "agreement",
        args.model,
        args.precision if args.backend == "torch" else f"{args.precision}_{args.backend}",
        {
            "settings": {
                "model": args.model,
                "model_source": source,
                "weights": "torchvision random init (seed 0), "
                "BN statistics re-estimated on 200 photos; trained weights cannot be downloaded here",
                "precision": args.precision,
                "backend": args.backend,
                "images": len(x),
                "preprocess": "resize 256, center crop 224",
                "calibration_images": args.calib if args.precision == "int8" else None,
            },
            "top1_agreement_percent": 100 * agree.mean().item(),
            "top1_agreement_held_out_percent": 100 * agree[held_out].mean().item(),
            "fp32_distinct_predicted_classes": int(ref.argmax(1).unique().numel()),
            "fp32_median_top1_top2_margin_in_logit_std": margin.median().item(),
            "max_abs_logit_error_relative": ((out - ref).abs().max() / ref.abs().max()).item(),
        },
    )


if __name__ == "__main__":
    main()
