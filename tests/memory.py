"""Resident memory over many training steps: python -m tests.memory [--steps 300]

Runs each phase's compiled step on a stream of tiny batches (32 px, batch 2) and prints the
resident set size after a warm-up and then every --every steps, so growth shows at a glance."""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from PIL import Image  # noqa: E402

import config as cfg  # noqa: E402
import data_loader  # noqa: E402
import phases  # noqa: E402


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measure(steps=300, warmup=20, every=50, folder=None):
    """{phase: [rss after warm-up, ..., rss at the end]} in MB."""
    folder = folder or tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"{i}.png"))
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=2))
    G, D, _, _, step_opts = phases.build_training(config)
    step_fns = phases.make_steps(G, D, *step_opts, config, np.full(3, 0.5, np.float32))
    batches = iter(data_loader.training_dataset(data_loader.find_images([folder]), config))
    result = {}
    for phase, step in step_fns.items():
        for _ in range(warmup):
            [float(v) for v in step(next(batches)).values()]
        result[phase] = [rss_mb()]
        for k in range(1, steps + 1):
            [float(v) for v in step(next(batches)).values()]
            if k % every == 0 or k == steps:
                result[phase].append(rss_mb())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    for phase, values in measure(args.steps, every=args.every).items():
        print(f"phase {phase}: RSS {' -> '.join(f'{v:.0f}' for v in values)} MB"
              f" ({values[-1] - values[0]:+.0f} MB over {args.steps} steps)")


if __name__ == "__main__":
    main()
