"""ResNet-50 training step, batch 32 at 224x224, 2 threads: convzoo's `train` defaults vs what a
user would write by hand with torchvision.

Goals: convzoo's training step >= 1.2x the best peer; convzoo training ResNet-50 at
batch 32 on the CPU needs no more peak memory than torchvision eager fp32.

Every contender runs the same SGD step (lr 0.1, momentum 0.9, weight decay 1e-4, cross-entropy;
zero_grad -> forward -> backward -> step; `inference.bench.make_train_step`) on the same batch:
  tv_eager_fp32             torchvision resnet50, fp32, NCHW, eager (the plain baseline)
  tv_bf16_cl_compiled       torchvision + bf16 autocast + channels_last + torch.compile: the peer
                            to beat (fast where the CPU has native bf16: AMX/AVX512-BF16)
  tv_fp32_cl_compiled       torchvision + fp32 + channels_last + torch.compile: the fair peer on a
                            CPU without native bf16 (there bf16 is emulated, and slow)
  convzoo_default           what `convzoo train` does: the resolved resnet recipe (base.yaml:
                            precision auto, channels_last auto, compile auto) made concrete by
                            `accel.resolve_auto` and, for a run over ImageNet-1k,
                            `accel.compile_decision`; the model through `accel.prepare_for_training`
  convzoo_default_compiled  the same with compile: true (`--compile`; the same as the default
                            where auto compiles)
  convzoo_channels_last     (only when named in --contenders) the default with channels_last: true
                            (`--set channels_last=true`): whether NHWC pays in fp32 too

Speed: all contenders live in one process and are timed interleaved (A B C D E A B C D E ...),
`--rounds` rounds after one untimed warm-up step each; the median step is reported. The first
call of a compiled step (compilation + one step) is timed apart as compile_seconds.

Peak memory: one process's resident high-water mark mixes the contenders, so each contender's
is measured in a fresh subprocess of this script (`--peak-of NAME`) that builds it, runs the
compiling/first step and `--memory-steps` more steps, and reports the peak RSS (VmHWM) over the
whole run (model built, compiled, stepped: what a training run needs, `peak_mib`), and over the
later steps only (high-water mark reset through /proc/self/clear_refs after the first step,
`steps_peak_mib`), with the RSS before the model was built (torch and its libraries,
`rss_before_model_mib`, the same for everyone). Those subprocesses run after the timing, one at a
time; their compilations reuse torch inductor's on-disk cache from the timed run.

Runtime on 2 cores of an AVX2-only EPYC: about 25-35 minutes (three ResNet-50 training-step
compilations of a few minutes each, done twice; emulated bf16 steps of ~10+ s).

    PYTHONPATH=src python benchmarks/bench_train_peers.py [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import convzoo_model, setup_threads, torchvision_model, write_result

IMAGENET_TRAIN = 1_281_167  # ImageNet-1k's training images: what the resnet recipe is for
CONTENDERS = (
    "tv_eager_fp32",
    "tv_bf16_cl_compiled",
    "tv_fp32_cl_compiled",
    "convzoo_default",
    "convzoo_default_compiled",
    "convzoo_channels_last",
)
DEFAULT_CONTENDERS = CONTENDERS[:5]
PEERS = ("tv_bf16_cl_compiled", "tv_fp32_cl_compiled")
BASELINE = "tv_eager_fp32"
CONVZOO = ("convzoo_default", "convzoo_default_compiled", "convzoo_channels_last")


def build(name: str, args) -> tuple:
    """(step function, description) of contender `name`, on a fresh model and the seeded batch."""
    import torch

    from convzoo import recipes
    from convzoo.engine import accel
    from convzoo.inference.bench import make_train_step

    torch.manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    if name.startswith("tv_"):
        precision = "bf16" if "bf16" in name else "fp32"
        channels_last = compile = name != BASELINE
        model, source = torchvision_model(args.model), "torchvision"
    else:  # exactly what training/train.py resolves for `convzoo train MODEL` on this CPU
        cfg = recipes.resolve(args.model, flags={"device": "cpu"})
        precision, channels_last = accel.resolve_auto(cfg.precision, cfg.channels_last, "cpu")
        channels_last = channels_last or name == "convzoo_channels_last"
        model, source = convzoo_model(args.model)
        if cfg.compile == "auto":  # as train decides it for a run of the recipe over ImageNet-1k
            cfg_compile, _ = accel.compile_decision(
                model, args.input_size, IMAGENET_TRAIN * cfg.epochs, precision, training=True
            )
        else:
            cfg_compile = bool(cfg.compile)
        compile = name == "convzoo_default_compiled" or cfg_compile
    model = accel.prepare_for_training(model, channels_last, compile)
    x = accel.to_channels_last(x) if channels_last else x
    step = make_train_step(model, x, y, precision)
    return step, {"model_source": source, "precision": precision, "channels_last": channels_last,
                  "compiled": compile}  # fmt: skip


def peak_of(name: str, args) -> dict:
    """Runs in a fresh process: this contender's peak memory (see the module docstring)."""
    from convzoo.inference.bench import PeakMemory

    memory = PeakMemory("cpu").start()
    before = memory.current_mib()
    step, _ = build(name, args)
    step()  # compiles where compiled
    whole_mib, kind = memory.read()
    memory.start()
    for _ in range(args.memory_steps):
        step()
    steps_mib, _ = memory.read()
    return {
        "peak_mib": max(whole_mib, steps_mib),
        "steps_peak_mib": steps_mib,
        "rss_before_model_mib": before,
        "kind": kind,
        "memory_steps": args.memory_steps,
    }


def measure_peaks(names, args) -> dict:
    """Each contender's peak_of, in its own subprocess of this script (same settings)."""
    peaks = {}
    for name in names:
        cmd = [sys.executable, __file__, "--peak-of", name, *_settings_argv(args)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=os.environ.copy())
        if out.returncode != 0:
            sys.exit(f"--peak-of {name} failed:\n{out.stderr[-2000:]}")
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: peak {peaks[name]['peak_mib']:.0f} MiB", file=sys.stderr)
    return peaks


def _settings_argv(args) -> list[str]:
    return [
        f"--model={args.model}",
        f"--batch-size={args.batch_size}",
        f"--input-size={args.input_size}",
        f"--threads={args.threads}",
        f"--memory-steps={args.memory_steps}",
    ]


def time_contenders(names, args) -> tuple[dict, dict, dict]:
    """(step times, compile seconds, descriptions): compiled steps' first call timed apart, then
    every contender interleaved."""
    from convzoo.inference.bench import interleaved

    steps, compile_s, described = {}, {}, {}
    for name in names:
        steps[name], described[name] = build(name, args)
        if described[name]["compiled"]:
            t0 = time.perf_counter()
            steps[name]()
            compile_s[name] = time.perf_counter() - t0
            print(f"{name}: compiled in {compile_s[name]:.0f} s", file=sys.stderr)
    return interleaved(steps, rounds=args.rounds, warmup=1), compile_s, described


def summarize(times, compile_s, described, peaks, batch: int) -> dict:
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    peers = [p for p in PEERS if p in ips]
    best_peer = max(peers, key=ips.__getitem__) if peers else None
    rows = {}
    for k, v in times.items():
        rows[k] = {
            **described[k],
            "median_s": statistics.median(v),
            "images_per_second": ips[k],
            "ratio_to_best_peer": ips[k] / ips[best_peer] if best_peer else None,
            "ratio_to_tv_eager_fp32": ips[k] / ips[BASELINE] if BASELINE in ips else None,
            "compile_seconds": compile_s.get(k),
            "runs": len(v),
            **({"memory": peaks[k]} if k in peaks else {}),
        }
    return {"best_peer": best_peer, "contenders": rows, "goals": goals(rows, best_peer)}


def goals(rows: dict, best_peer: str | None) -> dict:
    """The two goals above, for each convzoo contender measured."""
    out = {}
    base_peak = rows.get(BASELINE, {}).get("memory", {}).get("peak_mib")
    for k in CONVZOO:
        if k not in rows:
            continue
        ratio = rows[k]["ratio_to_best_peer"]
        peak = rows[k].get("memory", {}).get("peak_mib")
        out[k] = {
            "speed_ratio_to_best_peer": ratio,
            "speed_goal_1.2x_met": None if ratio is None else ratio >= 1.2,
            "peak_mib_vs_tv_eager_fp32": None if peak is None or base_peak is None else peak - base_peak,
            "memory_goal_met": None if peak is None or base_peak is None else peak <= base_peak,
        }
    return out


def print_table(summary: dict) -> None:
    print(f"{'contender':26} {'img/s':>7} {'ratio':>6} {'compile s':>9} {'peak MiB':>8}", file=sys.stderr)
    for k, r in summary["contenders"].items():
        compile_s = "" if r["compile_seconds"] is None else f"{r['compile_seconds']:.0f}"
        peak = r.get("memory", {}).get("peak_mib")
        print(
            f"{k:26} {r['images_per_second']:7.2f} {r['ratio_to_best_peer'] or 0:6.2f} {compile_s:>9} "
            f"{'' if peak is None else f'{peak:.0f}':>8}",
            file=sys.stderr,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-steps", type=int, default=2, help="steps after the first, per peak subprocess")
    ap.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help="comma-separated subset")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--peak-of", choices=CONTENDERS, help=argparse.SUPPRESS)  # the subprocess's job
    args = ap.parse_args()
    setup_threads(args.threads)
    if args.peak_of:
        return print(json.dumps(peak_of(args.peak_of, args)))
    names = [n for n in args.contenders.split(",") if n]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        sys.exit(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
    times, compile_s, described = time_contenders(names, args)
    peaks = {} if args.no_memory else measure_peaks(names, args)
    summary = summarize(times, compile_s, described, peaks, args.batch_size)
    print_table(summary)
    write_result(
        "train_peers",
        args.model,
        f"b{args.batch_size}",
        {
            "settings": {
                **{k: v for k, v in vars(args).items() if k not in ("peak_of", "no_memory")},
                "optimizer": "SGD lr 0.1 momentum 0.9 wd 1e-4, cross-entropy",
                "memory": "fresh subprocess per contender; peak RSS (VmHWM), clear_refs reset",
            },
            **summary,
            "times_s": times,
        },
    )


if __name__ == "__main__":
    main()
