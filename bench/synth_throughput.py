"""Synthetic data throughput: images per second of ``inspect-app data generate``.

Prints wall-clock and CPU time per image, for rendering alone and for rendering plus PNG
encoding (what ``generate_dataset`` does per image). On a shared machine wall time exceeds CPU
time; the CPU figure is the generator's own cost.

    .venv/bin/python bench/synth_throughput.py [--n 300]
"""

from __future__ import annotations

import argparse
import time

import cv2

from data.synth import SynthConfig, class_schedule, image_seeds, render_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="images to render")
    args = parser.parse_args()
    classes = class_schedule(args.n, 0, SynthConfig().class_mix)
    seeds = image_seeds(args.n, 0)
    render_sample(seeds[0], classes[0])  # first call builds the noise table

    wall, cpu = time.perf_counter(), time.process_time()
    images = [render_sample(s, c).image for s, c in zip(seeds, classes, strict=True)]
    render_wall, render_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    sizes = [len(cv2.imencode(".png", image)[1]) for image in images]
    png_wall, png_cpu = time.perf_counter() - wall, time.process_time() - cpu

    n = args.n
    print(f"images: {n} (256x256 BGR, default SynthConfig)")
    print(
        f"render:        {1e3 * render_wall / n:6.2f} ms/img wall, {1e3 * render_cpu / n:6.2f} CPU"
    )
    print(f"png encode:    {1e3 * png_wall / n:6.2f} ms/img wall, {1e3 * png_cpu / n:6.2f} CPU")
    total_wall, total_cpu = render_wall + png_wall, render_cpu + png_cpu
    print(
        f"render + png:  {n / total_wall:6.1f} images/s wall, {n / total_cpu:6.1f} per CPU-second"
    )
    print(f"png size:      {sum(sizes) / n / 1024:6.1f} KiB/img")


if __name__ == "__main__":
    main()
