"""Model throughput on this machine, torch against the serving runtime (ONNX Runtime), on the
same weights at the same batch, in one run: images/s at batch 1 and 16 with and without
preprocessing (resize + normalise), their ratio, the parity figure (max absolute difference
of calibrated probabilities on the parity images, ``models/onnx_export.py``), and the
heatmap's cost (the heatmap runs in torch under either runtime).

Prints figures only; nothing here asserts on time. Other work on the machine skews the
figures (the load average is printed): each figure is the best of `--rounds` short rounds,
the runtimes taking turns, so both see the same load. Usage:

    .venv/bin/python bench/model_throughput.py [--checkpoint C] [--seconds 5] [--rounds 5]
        [--threads N] [--onnx-threads N]
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
import onnxruntime as ort
import torch

from models import DEFAULT_WEIGHTS
from models.onnx_export import check_parity, parity_images
from models.onnx_predictor import OnnxPredictor, default_intra_op_threads
from models.runtime import load_predictor


def _rate(fn: Callable[[], object], images_per_call: int, seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * images_per_call / (time.perf_counter() - start)


def _best_rates(
    fns: dict[str, Callable[[], object]], images_per_call: int, seconds: float, rounds: int
) -> dict[str, float]:
    """Each function's best rate over `rounds` short rounds, the functions taking turns:
    other work on the machine only ever slows a round, so the best round is the closest to
    the machine's own figure, and taking turns gives every function the same chances."""
    for fn in fns.values():
        fn()  # warm-up: first calls allocate
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best[name], _rate(fn, images_per_call, seconds / rounds))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="best of this many, in turns")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--onnx-threads", type=int, default=None, help="ONNX Runtime intra-op threads "
        "(default: the service's, one per core)",
    )  # fmt: skip
    parser.add_argument("--camera-size", type=int, default=256, help="side of the input images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    served = load_predictor(args.checkpoint, runtime="onnx", intra_op_threads=args.onnx_threads)
    if not isinstance(served, OnnxPredictor):
        raise SystemExit("the ONNX export of this checkpoint was refused (see the log): torch only")
    reference = served.torch_predictor  # the same loaded weights, in torch
    rng = np.random.default_rng(0)
    s = args.camera_size
    images = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(16)]
    print(f"model {served.version}, input {served.input_size}px, camera images {s}x{s}")
    print(
        f"os.cpu_count()={os.cpu_count()}  torch threads={torch.get_num_threads()}  "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}  onnxruntime {ort.__version__} "
        f"intra-op threads={args.onnx_threads or default_intra_op_threads()} (no spinning)"
    )
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews figures)"
    )
    parity_set, source = parity_images()
    parity = check_parity(reference, served, parity_set, images_source=source)
    print(
        f"parity: max |p_onnx - p_torch| = {parity.max_abs_diff:.2e} (limit {parity.tolerance:g},"
        f" {'accepted' if parity.accepted else 'REFUSED'}), embedding "
        f"{parity.max_abs_diff_embedding:.2e}, on {parity.images}"
    )
    print(
        f"{'batch':>5}  {'':>8}  {'with preprocessing':>18}  {'model only':>12}  "
        f"{'with heatmap (torch)':>20}"
    )
    for batch in (1, 16):
        chunk = images[:batch]
        x = reference.preprocess(chunk)
        r = _best_rates(
            {
                "torch_full": lambda c=chunk: reference.predict(c),
                "onnx_full": lambda c=chunk: served.predict(c),
                "torch_model": lambda x=x: reference.predict_tensor(x),
                "onnx_model": lambda x=x: served.predict_tensor(x),
                "heat": lambda c=chunk: served.predict(c, heatmap=True),
            },
            batch,
            args.seconds,
            args.rounds,
        )
        t_full, t_model, o_full, o_model = (
            r["torch_full"], r["torch_model"], r["onnx_full"], r["onnx_model"]
        )  # fmt: skip
        heat = r["heat"]
        print(f"{batch:>5}  {'torch':>8}  {t_full:>12.1f} img/s  {t_model:>6.1f} img/s  "
              f"{heat:>14.1f} img/s")  # fmt: skip
        print(f"{batch:>5}  {'onnx':>8}  {o_full:>12.1f} img/s  {o_model:>6.1f} img/s")
        print(f"{batch:>5}  {'ratio':>8}  {o_full / t_full:>12.2f} x      "
              f"{o_model / t_model:>6.2f} x")  # fmt: skip


if __name__ == "__main__":
    main()
