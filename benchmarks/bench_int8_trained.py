"""int8 on trained weights: top-1 agreement of `--backend B --precision int8` with fp32 PyTorch,
image by image, each one's accuracy, and the agreement by fp32's margin between its two highest
logits (where the disagreements are), on a labelled split.

The ImageNet agreement figures (bench_bf16_agreement.py) use random weights, whose logit
margins are tiny: a pessimistic bound. This one takes any trained convzoo weights file and its
dataset, e.g. a `cifar_fast` ResNet-20 on the 10,000 CIFAR-10 test JPEGs, or published
ImageNet weights by name where they can be downloaded. Calibration: a seeded random 128 of the
images of --calibration (default: the training split's folder), never the evaluated split, as
`--calibration DIR` draws them.

    PYTHONPATH=src python benchmarks/bench_int8_trained.py resnet20_cifar --weights RUN/best.safetensors \\
        --data cifar10:DIR --backend onnxruntime
"""

import argparse
import os
import time

from _common import setup_threads, write_result

MARGIN_BANDS = (0.0, 0.05, 0.1, 0.2, 0.5, float("inf"))  # fp32's top-1 minus top-2 logit, in logit std


def logits(model, loader) -> tuple:
    import torch

    out, labels = [], []
    with torch.inference_mode():
        for x, y, _ in loader:  # (images, labels, unreadable skipped)
            out.append(model(x).float())
            labels.append(y)
    return torch.cat(out), torch.cat(labels)


def by_margin(ref, got) -> list[dict]:
    """Agreement within bands of fp32's margin between its two highest logits (in units of each
    image's logit standard deviation): where int8's logit error exceeds that margin the top-1
    can flip, so a network with many small margins agrees less whatever the quantizer."""
    top2 = ref.topk(2, 1).values
    margin = (top2[:, 0] - top2[:, 1]) / ref.std(1)
    agree = ref.argmax(1) == got.argmax(1)
    rows = []
    for lo, hi in zip(MARGIN_BANDS, MARGIN_BANDS[1:]):
        sel = (margin >= lo) & (margin < hi)
        n = int(sel.sum())
        rows.append(
            {
                "margin": [lo, hi],
                "images": n,
                "disagreements": int((~agree[sel]).sum()),
                "agreement_percent": 100 * agree[sel].float().mean().item() if n else None,
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--backend", choices=["onnxruntime", "openvino"], default="onnxruntime")
    ap.add_argument("--calibration", default=None, help="a folder of images (default: DATA's train split)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup_threads(args.threads)

    from convzoo.data.source import open_source
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.engine.loaders import Mapped, make_loader
    from convzoo.factory import create_model
    from convzoo.inference import runtime

    model = create_model(args.model, weights=args.weights).eval()
    spec = model.weight_spec
    source = open_source(args.data)
    transform = eval_transform_from_spec(spec)
    loader = make_loader(Mapped(source.dataset(source.val_split), transform), 256, 0, shuffle=False)
    calibration_dir = args.calibration or os.path.join(source.root, source.train_split or "")
    files = runtime.check_calibration_path(calibration_dir)
    calibration = runtime.calibration_from_files(files, transform, calibration_dir)
    size = spec.crop_size or spec.input_size
    t0 = time.perf_counter()
    int8 = runtime.runtime_model(model, args.model, args.backend, "int8", size, calibration, "bench")
    build_s = time.perf_counter() - t0
    fp32 = runtime.fast_model(model, args.model, "torch", "fp32", False, "cpu", size)[0]
    ref_logits, labels = logits(fp32, loader)
    got_logits, _ = logits(int8, loader)
    ref, got = ref_logits.argmax(1), got_logits.argmax(1)
    error = (got_logits - ref_logits).abs().max(1).values / ref_logits.std(1)
    write_result(
        "int8_trained",
        args.model,
        args.backend,
        {
            "settings": vars(args) | {"calibration_images": calibration.count, "input_size": size},
            "images": len(labels),
            "top1_agreement_percent": 100 * (got == ref).float().mean().item(),
            "fp32_top1_percent": 100 * (ref == labels).float().mean().item(),
            "int8_top1_percent": 100 * (got == labels).float().mean().item(),
            "int8_graph_build_s": round(build_s, 1),
            "int8_logit_error_in_std": {"median": error.median().item(), "p90": error.quantile(0.9).item()},
            "agreement_by_fp32_margin": by_margin(ref_logits, got_logits),
        },
    )


if __name__ == "__main__":
    main()
