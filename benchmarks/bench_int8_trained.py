"""int8 on trained weights: top-1 agreement of `--backend B --precision int8` with fp32 PyTorch,
image by image, and each one's accuracy, on a labelled split.

The ImageNet agreement figures (bench_bf16_agreement.py) use random weights, whose logit
margins are tiny: a pessimistic bound. This one takes any trained convzoo weights file and its
dataset, e.g. a `cifar_fast` ResNet-20 on the 10,000 CIFAR-10 test JPEGs, or published
ImageNet weights by name where they can be downloaded. Calibration: the first 128 (sorted)
images of --calibration (default: the training split's folder), never the evaluated split.

    PYTHONPATH=src python benchmarks/bench_int8_trained.py resnet20_cifar --weights RUN/best.safetensors \\
        --data cifar10:DIR --backend onnxruntime
"""

import argparse
import os
import time

from _common import setup_threads, write_result


def predictions(model, loader) -> tuple:
    import torch

    preds, labels = [], []
    with torch.inference_mode():
        for x, y, _ in loader:  # (images, labels, unreadable skipped)
            preds.append(model(x).float().argmax(1))
            labels.append(y)
    return torch.cat(preds), torch.cat(labels)


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
    ref, labels = predictions(fp32, loader)
    got, _ = predictions(int8, loader)
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
        },
    )


if __name__ == "__main__":
    main()
