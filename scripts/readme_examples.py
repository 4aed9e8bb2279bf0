"""Re-run the README's example commands and print them with their real output, for pasting.

    PYTHONPATH=src python scripts/readme_examples.py --list           # the examples
    PYTHONPATH=src python scripts/readme_examples.py newcomer resume  # run some (in a temp folder)
    PYTHONPATH=src python scripts/readme_examples.py --all            # all of them (minutes)

Every example uses only what a user has (shipped models, `synthetic`, files it makes itself), so
an example that stops working fails here first. Output is shown as a terminal would leave it:
progress bars (carriage-return lines) are dropped; `$ ` marks each command.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

CZ = "python -m convzoo"
RUN = "--recipe demo --workers 0 --batch-size 32"

# name -> (what the README shows it for, [shell commands run in order in one temp folder])
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "list": ("The zoo", [f"{CZ} list 'resnet*'"]),
    "newcomer": (
        "Your own images (docs/data-layouts.md)",
        [
            # a folder of class folders, made from the built-in synthetic images
            "python - <<'EOF'\nfrom convzoo.data.datasets import build_dataset\nimport os\n"
            "ds = build_dataset('synthetic', 'val', size=60)\n"
            "for i in range(60):\n    img, label = ds[i]\n    d = f'photos/{ds.classes[label]}'\n"
            "    os.makedirs(d, exist_ok=True)\n    img.save(f'{d}/{i}.png')\nEOF",
            f"{CZ} train resnet20_cifar --data photos --out runs/photos --val-split 0.2 --epochs 2 {RUN}",
            f"{CZ} eval resnet20_cifar --weights runs/photos/best.safetensors --data photos --workers 0",
            f"{CZ} pack photos --out photo-shards --val-split 0.2 --seed 0",
        ],
    ),
    "resume": (
        "Reliability and safety: kill, then --resume",
        [
            f"CONVZOO_FAULT=kill@epoch=1 {CZ} train resnet20_cifar --data synthetic --out run --epochs 2 "
            f'--limit-train 256 --limit-val 64 {RUN}; echo "exit code $?"',
            f"{CZ} train --resume --out run",
            f"{CZ} train --resume --out run --batch-size 16",
        ],
    ),
    "shards": (
        "Many processes: pack, then torchrun over shards (minutes)",
        [
            f"{CZ} pack synthetic --out syn --shard-size 1000",
            "OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 -m convzoo "
            "train resnet20_cifar --data shards:syn --out run2 --recipe demo --epochs 2 --batch-size 64 "
            "--sync-bn --workers 1 --limit-train 1024 --limit-val 256",
        ],
    ),
}
SLOW = {"shards"}


def clean(text: str) -> str:
    """What a terminal leaves: the last state of each carriage-returned line; no ANSI codes."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(line for line in lines if line.strip())


def run_example(name: str, cwd: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    out = []
    for cmd in EXAMPLES[name][1]:
        shown = cmd if not cmd.startswith("python - <<") else "# (makes photos/<class>/*.png)"
        res = subprocess.run(
            ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600
        )
        out.append(f"$ {shown.replace('python -m convzoo', 'convzoo')}")
        body = clean(res.stderr + res.stdout)
        if body:
            out.append(body)
    return "\n".join(out)


def convzoo_argv(cmd: str) -> list[str] | None:
    """The convzoo arguments of one example command (None when it runs no convzoo command)."""
    words = shlex.split(cmd.split(";")[0]) if "<<" not in cmd else []
    for i in range(len(words) - 1):
        if words[i] in ("-m", "python") and words[i + 1] == "convzoo":
            return words[i + 2 :]
    return None


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "names",
        nargs="*",
        help=f"examples to run ({', '.join(EXAMPLES)}; default: all but {', '.join(sorted(SLOW))})",
    )
    ap.add_argument("--all", action="store_true", help="also the slow examples")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, (what, cmds) in EXAMPLES.items():
            print(f"{name:<10} {what} ({len(cmds)} commands{', slow' if name in SLOW else ''})")
        return 0
    unknown = [n for n in args.names if n not in EXAMPLES]
    if unknown:
        ap.error(f"unknown example(s) {', '.join(unknown)}")
    names = args.names or [n for n in EXAMPLES if args.all or n not in SLOW]
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"convzoo-{name}-") as tmp:
            print(f"## {name}: {EXAMPLES[name][0]}\n```\n{run_example(name, tmp)}\n```\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
