"""Predictor throughput on this machine: images/s at batch 1 and 16, with and without
preprocessing (resize + normalise), plus the heatmap's cost.

Prints figures only; nothing here asserts on time. Usage:

    .venv/bin/python bench/model_throughput.py [--checkpoint C] [--seconds 5] [--threads N]
"""

from __future__ import annotations

import os

# as the models package does (see models/__init__.py), before this script imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.predictor import Predictor


def _rate(fn: Callable[[], object], images_per_call: int, seconds: float) -> float:
    fn()  # warm-up: first calls allocate
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * images_per_call / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--camera-size", type=int, default=256, help="side of the input images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    predictor = Predictor.from_checkpoint(args.checkpoint)
    rng = np.random.default_rng(0)
    s = args.camera_size
    images = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(16)]
    print(f"model {predictor.version}, input {predictor.input_size}px, camera images {s}x{s}")
    print(
        f"os.cpu_count()={os.cpu_count()}  torch threads={torch.get_num_threads()}  "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews figures)"
    )
    print(f"{'batch':>5}  {'with preprocessing':>20}  {'model only':>12}  {'with heatmap':>14}")
    for batch in (1, 16):
        chunk = images[:batch]
        x = predictor.preprocess(chunk)
        full = _rate(lambda c=chunk: predictor.predict(c), batch, args.seconds)
        model = _rate(lambda x=x: predictor.predict_tensor(x), batch, args.seconds)
        heat = _rate(lambda c=chunk: predictor.predict(c, heatmap=True), batch, args.seconds)
        print(f"{batch:>5}  {full:>14.1f} img/s  {model:>6.1f} img/s  {heat:>8.1f} img/s")


if __name__ == "__main__":
    main()
