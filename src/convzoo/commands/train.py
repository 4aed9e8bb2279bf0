"""`convzoo train`: train a model with its paper's recipe into a run folder."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from ..errors import UserError
from ._common import DEVICE_HELP, JSON_HELP, VAL_SPLIT_NAME_HELP, WORKERS_HELP, deprecated_alias, print_json

if TYPE_CHECKING:
    from ..recipes.config import RunConfig

HELP = "train a model with its paper's recipe into a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help="model name (default with --resume: the run's)")
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="synthetic, a folder, or KIND:PATH (docs/data-layouts.md); required, except with --resume "
        "(default: the run's)",
    )
    p.add_argument("--out", required=True, help="run folder (weights, checkpoint, metrics, plots)")
    from ..recipes import recipe_names

    p.add_argument(
        "--recipe",
        default=None,
        help=f"shipped recipe ({', '.join(recipe_names())}) or a YAML file (default: the family's)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs to train; the recipe's lr schedule is scaled to them (default: the recipe's)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per step, per process (default: the recipe's)"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="base learning rate, = --set optim.lr (default: the recipe's)"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=None,
        help="default auto: bf16 (+channels_last) on AMX/AVX512-BF16 CPUs and GPUs, else fp32",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory layout (default: the recipe's; auto = on with bf16/fp16)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: the recipe's; auto = where the run's saved network "
        "time repays compiling, said on stderr)",
    )
    p.add_argument("--workers", type=int, default=None, help=WORKERS_HELP + " (default: the recipe's, 2)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of weights, data order and augmentation (default: 0)"
    )
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for the network (default: OMP_NUM_THREADS, else one per core); "
        "1 is often fastest on a busy machine",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly (model and --data come from the run folder)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its checkpoint, weights and metrics are deleted)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="fine-tune: start from these convzoo weights or a catalog name (default: from scratch)",
    )
    p.add_argument(
        "--freeze",
        default=None,
        metavar="STAGE",
        help="fine-tune: freeze up to this paper stage (default: train all)",
    )
    p.add_argument(
        "--head-lr-mult",
        type=float,
        default=None,
        help="fine-tune: lr multiplier of the head (default: the recipe's, 1.0)",
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=None,
        help="single class-folder tree: stratified seeded validation fraction (default 0.1)",
    )
    p.add_argument("--val-split-name", default=None, metavar="NAME", help=VAL_SPLIT_NAME_HELP)
    p.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="a seeded random subset of N training images (= --set data.max_train_images=N; default: all)",
    )
    p.add_argument(
        "--limit-val",
        type=int,
        default=None,
        metavar="N",
        help="a seeded random subset of N validation images (= --set data.max_val_images=N; default: all)",
    )
    # `--limit` is a deprecated spelling of --limit-val here: in eval and features it limits evaluation
    p.add_argument(
        "--limit", dest="limit_val", type=int, action=deprecated_alias("--limit-val"), help=argparse.SUPPRESS
    )
    p.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch norm statistics over all torchrun processes (default: the recipe's, off)",
    )
    p.add_argument(
        "--accum-steps",
        type=int,
        default=None,
        help="batches per optimizer step, gradient accumulation (default: the recipe's, 1)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=None,
        help="also write checkpoint.pt every N minutes inside an epoch (default 10; 0: every step)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=None,
        metavar="N",
        help="validate after every N epochs and after the last (default 1; may change on --resume)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP + "; the run's summary.json")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe setting, dotted keys: --set optim.lr=0.05 (repeatable; default: none)",
    )


def run(args: argparse.Namespace) -> None:
    import os

    import torch

    from ..recipes import parse_set, resolve
    from ..registry import canonical_name
    from ..training.checkpoint import CHECKPOINT, load_checkpoint
    from ..training.resilience import resume_config
    from ..training.train import fit

    for flag, n in (("--limit-train", args.limit_train), ("--limit-val", args.limit_val)):
        if n is not None and n < 1:
            raise UserError(f"{flag} must be >= 1, got {n}")
    flags = _flags(args)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)  # not a run setting: a resume may use other threads
    notes: list[str] = []
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite replaces it: choose one")
    if args.resume:
        cfg = resume_config(
            load_checkpoint(os.path.join(args.out, CHECKPOINT)),
            canonical_name(args.model) if args.model else None,
            args.data,
            {**flags, "recipe": args.recipe, **parse_set(args.sets)},
        )
    else:
        if args.model is None or args.data is None:
            raise UserError("train needs a MODEL and --data (both optional only with --resume)")
        model = canonical_name(args.model)
        cfg = resolve(model, args.recipe, flags, args.sets, data_spec=args.data)
        if args.freeze and not args.weights:
            raise UserError(
                f"--freeze {args.freeze} without --weights would freeze randomly initialised "
                f"layers: give the pretrained --weights to fine-tune from"
            )
        cfg, note = _fit_schedule(cfg, args)
        notes += note
        if cfg.finetune.weights:
            cfg, note = _weights_preprocessing(cfg, args)
            notes += note
    summary = fit(cfg, args.out, resume=args.resume, overwrite=args.overwrite, notes=tuple(notes))
    if args.json:
        from ..engine.distributed import is_main

        if is_main():
            print_json(summary)


def _flags(args: argparse.Namespace) -> dict:
    """The run settings the options give, as a partial config (None: not given)."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "workers": args.workers,
        "seed": args.seed,
        "device": args.device,
        "optim": {"lr": args.lr},
        "checkpoint_minutes": args.checkpoint_minutes,
        "val_every": args.val_every,
        "sync_bn": args.sync_bn,
        "accum_steps": args.accum_steps,
        "data": {
            "val_split": args.val_split,
            "val_split_name": args.val_split_name,
            "max_train_images": args.limit_train,
            "max_val_images": args.limit_val,
        },
        "finetune": {"weights": args.weights, "freeze": args.freeze, "head_lr_mult": args.head_lr_mult},
    }


def _fit_schedule(cfg: RunConfig, args: argparse.Namespace) -> tuple[RunConfig, list[str]]:
    """The recipe's schedule over this run's length: its epoch numbers (written for the recipe's
    own `epochs`, or `schedule.epochs`) scaled to --epochs, said once; what --set gives is kept."""
    from ..recipes import parse_set, resolve
    from ..training.optim import fit_to_run

    length = cfg.schedule.epochs or resolve(cfg.model, cfg.recipe).epochs
    given = parse_set(args.sets).get("schedule")
    fixed = frozenset(given) if isinstance(given, dict) else frozenset()
    schedule, note = fit_to_run(cfg.schedule, cfg.epochs, length, fixed)
    return dataclasses.replace(cfg, schedule=schedule), [note] if note else []


def _weights_preprocessing(cfg: RunConfig, args: argparse.Namespace) -> tuple[RunConfig, list[str]]:
    """Fine-tuning normalises the images as the weights were trained (their WeightSpec's mean and
    std), not as the recipe would from scratch: features learned on other statistics start off
    shifted. A --set data.mean / data.std wins."""
    from ..hub import resolve_weights
    from ..recipes import parse_set
    from ..weights import read_spec

    assert cfg.finetune.weights is not None  # (only called when fine-tuning)
    spec = read_spec(resolve_weights(cfg.finetune.weights))  # a catalog name: fetched here, once
    given = parse_set(args.sets).get("data")
    given = given if isinstance(given, dict) else {}
    recipe = {"mean": cfg.data.mean, "std": cfg.data.std}
    weights = {"mean": tuple(float(x) for x in spec.mean), "std": tuple(float(x) for x in spec.std)}
    changed = {
        key: weights[key]
        for key in ("mean", "std")
        if key not in given and tuple(float(x) for x in recipe[key]) != weights[key]
    }
    if not changed:
        return cfg, []
    shown = ", ".join(f"{key} {list(value)}" for key, value in changed.items())
    note = f"fine-tuning: images normalised as the weights were trained ({shown})"
    data = dataclasses.replace(
        cfg.data, mean=changed.get("mean", cfg.data.mean), std=changed.get("std", cfg.data.std)
    )
    return dataclasses.replace(cfg, data=data), [note]
