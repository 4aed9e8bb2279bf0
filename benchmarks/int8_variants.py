"""How int8 graphs should be made: top-1 agreement with fp32 of each quantization setting
(inference/runtime.py `Int8Settings`) on trained weights and a labelled split.

Each variant is an int8 graph of the same fp32 graph, calibrated on the same 128 training images
(seeded random sample, as the commands draw them), run on every image of
the validation split; the fp32 reference is the PyTorch model. `--backend onnxruntime`: ONNX
Runtime's quantizer; `--backend openvino`: NNCF's, run by OpenVINO. The commands use
`Int8Settings()`; this script is where that choice was measured (ONNX Runtime's on a CPU without
VNNI, where `reduce_range` matters; NNCF's on an AVX-512 VNNI CPU).

    PYTHONPATH=src python benchmarks/int8_variants.py resnet20_cifar --weights RUN/best.safetensors \\
        --data cifar10:DIR [--backend openvino]
"""

import argparse
import os
import tempfile

from _common import setup_threads, write_result

ORT_VARIANTS = {
    "default (ends fp32, 8-bit weights, MinMax)": {},
    "reduce_range (7-bit weights), ends int8": {"keep_ends_fp32": False, "reduce_range": True},
    "8-bit weights, ends int8": {"keep_ends_fp32": False},
    "reduce_range, ends fp32": {"reduce_range": True},
    "ends fp32, Entropy calibration": {"calibrate_method": "Entropy"},
    "ends fp32, Percentile calibration": {"calibrate_method": "Percentile"},
}
EVERY_LAYER = {"nncf_first_layer_float_below": 0.0}
NNCF_VARIANTS = {
    "default (first conv float under 1 % of MACs)": {},
    "every layer int8 (NNCF's placement)": EVERY_LAYER,
    "NNCF's own defaults (+ 7-bit first layer)": EVERY_LAYER | {"overflow_fix": "FIRST_LAYER"},
    "first conv in float, whatever its share": {"nncf_first_layer_float_below": 1.0},
    "MIXED preset (asymmetric activations)": {"preset": "MIXED"},
    "full bias correction": {"fast_bias_correction": False},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--backend", choices=["onnxruntime", "openvino"], default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup_threads(args.threads)

    import torch

    from convzoo.data.source import open_source
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.engine.loaders import Mapped, make_loader
    from convzoo.factory import create_model
    from convzoo.inference import runtime

    model = create_model(args.model, weights=args.weights).eval()
    spec = model.weight_spec
    size = spec.crop_size or spec.input_size
    source = open_source(args.data)
    transform = eval_transform_from_spec(spec)
    images, labels = [], []
    for x, y, _ in make_loader(Mapped(source.dataset(source.val_split), transform), 500, 0, shuffle=False):
        images.append(x)
        labels.append(y)
    x_all, y_all = torch.cat(images), torch.cat(labels)
    with torch.inference_mode():
        ref = torch.cat([model(b) for b in x_all.split(500)]).argmax(1)
    train_dir = os.path.join(source.root, source.train_split or "")
    calibration = runtime.calibration_from_files(
        runtime.check_calibration_path(train_dir), transform, train_dir
    )
    make = runtime.int8_graph if args.backend == "onnxruntime" else runtime.nncf_int8_graph
    variants = ORT_VARIANTS if args.backend == "onnxruntime" else NNCF_VARIANTS
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONVZOO_CACHE"] = tmp
        fp32_graph, _ = runtime.onnx_graph(model, args.model, size, print)
        for name, options in variants.items():
            graph = make(fp32_graph, calibration, print, runtime.Int8Settings(**options))
            infer = runtime.RuntimeModel(
                runtime.session(args.backend, graph, args.threads, "int8"), args.backend, "int8", graph
            )
            got = torch.cat([infer(b) for b in x_all.split(500)]).argmax(1)
            results[name] = {
                "settings": options,
                "top1_agreement_percent": 100 * (got == ref).float().mean().item(),
                "int8_top1_percent": 100 * (got == y_all).float().mean().item(),
            }
            print(f"{name:<45} agreement {results[name]['top1_agreement_percent']:.2f} %", flush=True)
    write_result(
        "int8_variants",
        args.model,
        args.backend,
        {
            "settings": vars(args) | {"calibration_images": calibration.count, "input_size": size},
            "images": len(y_all),
            "fp32_top1_percent": 100 * (ref == y_all).float().mean().item(),
            "variants": results,
        },
    )


if __name__ == "__main__":
    main()
