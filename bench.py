"""Measure training and inference speed against this machine's compute ceiling.

    python bench.py                                   # cpu preset: 128 px, local 64, batch 8
    python bench.py --preset paper --batch-size 16 --xla on --mixed-precision     # on a GPU
    python bench.py --steps 2 --warmup 1 --json bench.json

One line per figure: images/s of each training phase and of inference, the GFLOP/s each
achieves (from the analytic FLOP count in model.py; a backward pass counts as two forward
passes) and its fraction of the machine's measured float32 matmul GFLOP/s, the images/s the
input pipeline delivers on its own (on the photos, and on large photos as they are and after
prepare.py), and the peak resident memory. Every compiled function is traced and run --warmup
times before the clock starts.
"""
import os
import resource
import sys
import tempfile
import time

import numpy as np
import runtime  # noqa: F401  (settings TensorFlow reads at import)
import tensorflow as tf
from PIL import Image

import config as cfg
import data_loader
import devices
import prepare
import train
import utils
from model import completion_flops, discriminator_flops

MATMUL_SIZES = (2048, 4096)
LARGE_PHOTO = (2000, 3000)  # 6 megapixels, as a phone or camera takes them


def phase_flops(config):
    """FLOPs per image of each measured function: training phases 1-3 and inference.

    Phase 2 runs the completion network forward and updates the discriminator on a real and a
    completed image; phase 3 adds the completion network's backward pass and one more
    discriminator forward and backward for the adversarial gradient."""
    g = completion_flops(config.image_size)
    d = discriminator_flops(config.image_size, config.local_size)
    return {"phase1": 3 * g, "phase2": g + 2 * 3 * d, "phase3": 3 * g + 3 * 3 * d,
            "inference": g}


def matmul_gflops(sizes=MATMUL_SIZES, repeats=4):
    """Best float32 GFLOP/s of TensorFlow's matmul over large square matrices."""
    best = 0.0
    for n in sizes:
        a = tf.random.uniform((n, n))
        b = tf.random.uniform((n, n))
        matmul = tf.function(tf.matmul)
        matmul(a, b).numpy()
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_calls(function, warmup, steps):
    """(mean seconds per call, resident memory growth in bytes) over `steps` calls after
    `warmup` untimed ones. Each call's results are fetched, so its work is done when the clock
    reads."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), function())
    before, start = resident_bytes(), time.perf_counter()
    for _ in range(steps):
        tf.nest.map_structure(lambda t: t.numpy(), function())
    return (time.perf_counter() - start) / steps, resident_bytes() - before


def pipeline_images_per_second(files, config, warmup, batches):
    stream = iter(data_loader.training_dataset(files, config))
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * config.batch_size / (time.perf_counter() - start)


def large_photo_pipelines(config, batches):
    """Images/s of the input pipeline on 6-megapixel photos (half PNG, half JPEG): as they are,
    and shrunk by prepare.py."""
    rng = np.random.default_rng(0)
    height, width = LARGE_PHOTO
    with tempfile.TemporaryDirectory() as folder:
        originals = []
        for i in range(4):
            # Smooth random colours, so that PNG and JPEG compress as photos do.
            small = rng.integers(0, 256, (height // 50, width // 50, 3), np.uint8)
            photo = Image.fromarray(small).resize((width, height), Image.BICUBIC)
            originals.append(os.path.join(folder, f"photo{i}.{'png' if i % 2 else 'jpg'}"))
            photo.save(originals[-1], quality=90)
        shrunk = [path + ".prepared.png" for path in originals]
        for job in zip(originals, shrunk, [config.image_size * 3 // 2] * len(originals)):
            prepare.shrink(job)
        return (pipeline_images_per_second(originals, config, 1, batches),
                pipeline_images_per_second(shrunk, config, 1, batches))


def run(config, files, steps, warmup):
    """All figures, as a dict."""
    jit_compile, policy = devices.device_settings(config)
    mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    batch = next(iter(data_loader.training_dataset(files, config)))
    G, D, _, _, step_opts = train.build_training(config, policy, mean_pixel=mean_pixel)
    steps_by_phase = train.make_steps(G, D, *step_opts, config, mean_pixel, jit_compile)
    inputs = utils.completion_input(batch["image"], batch["mask"], tf.constant(mean_pixel))
    infer = tf.function(lambda x: G(x, training=False), jit_compile=jit_compile)

    figures, growth = {}, {}
    functions = {"phase1": lambda: steps_by_phase[1](batch),
                 "phase2": lambda: steps_by_phase[2](batch),
                 "phase3": lambda: steps_by_phase[3](batch),
                 "inference": lambda: infer(inputs)}
    for name, function in functions.items():
        seconds, growth[name] = time_calls(function, warmup, steps)
        figures[f"{name}_images_per_second"] = config.batch_size / seconds
    traces = {f"phase{p}": step.experimental_get_tracing_count()
              for p, step in steps_by_phase.items()}
    pipeline = pipeline_images_per_second(files, config, warmup, max(10, 2 * steps))
    large, large_prepared = large_photo_pipelines(config, max(2, steps // 4))
    peak = matmul_gflops()

    for name, flops in phase_flops(config).items():
        gflops = figures[f"{name}_images_per_second"] * flops / 1e9
        figures[f"{name}_gflops"] = gflops
        figures[f"{name}_fraction_of_matmul_peak"] = gflops / peak
    fastest = max(figures[f"phase{p}_images_per_second"] for p in (1, 2, 3))
    figures.update(
        pipeline_images_per_second=pipeline,
        pipeline_over_fastest_phase=pipeline / fastest,
        pipeline_large_photos_images_per_second=large,
        pipeline_large_photos_over_fastest_phase=large / fastest,
        pipeline_large_prepared_images_per_second=large_prepared,
        pipeline_large_prepared_over_fastest_phase=large_prepared / fastest,
        matmul_peak_gflops=peak,
        peak_resident_mib=peak_resident_bytes() / 2 ** 20,
        resident_growth_mib=max(growth.values()) / 2 ** 20,
    )
    settings = dict(image_size=config.image_size, local_size=config.local_size,
                    batch_size=config.batch_size, steps=steps, warmup=warmup,
                    xla=jit_compile, precision=policy or "float32",
                    device="GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                    onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                    tensorflow=tf.__version__, traces=traces)
    return settings, figures


def report(settings, figures):
    f = figures
    lines = [f"glcic bench: {settings['image_size']} px, local {settings['local_size']}, batch"
             f" {settings['batch_size']}, {settings['device']}, {settings['precision']}, XLA"
             f" {'on' if settings['xla'] else 'off'}, {settings['steps']} timed steps after"
             f" {settings['warmup']} warm-up"]
    names = {"phase1": "phase 1 (completion update)", "phase2": "phase 2 (discriminator update)",
             "phase3": "phase 3 (joint update)", "inference": "inference (completion forward)"}
    for key, label in names.items():
        lines.append(f"{label:32s} {f[key + '_images_per_second']:8.2f} images/s"
                     f" {f[key + '_gflops']:8.1f} GFLOP/s"
                     f" {100 * f[key + '_fraction_of_matmul_peak']:5.0f} % of matmul peak")
    lines += [
        f"{'input pipeline alone':32s} {f['pipeline_images_per_second']:8.2f} images/s"
        f" {f['pipeline_over_fastest_phase']:8.1f} x the fastest phase",
        f"{'  on 6-megapixel photos':32s} {f['pipeline_large_photos_images_per_second']:8.2f}"
        f" images/s {f['pipeline_large_photos_over_fastest_phase']:8.1f} x the fastest phase",
        f"{'  the same after prepare.py':32s}"
        f" {f['pipeline_large_prepared_images_per_second']:8.2f} images/s"
        f" {f['pipeline_large_prepared_over_fastest_phase']:8.1f} x the fastest phase",
        f"{'float32 matmul peak':32s} {f['matmul_peak_gflops']:8.1f} GFLOP/s",
        f"{'peak resident memory':32s} {f['peak_resident_mib']:8.0f} MiB"
        f" {f['resident_growth_mib']:+8.1f} MiB at most over one function's timed calls",
    ]
    return "\n".join(lines)


def build_parser():
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=cfg.PRESETS, default="cpu",
                        help="sizes to measure at (default: cpu, 128 px, local 64, batch 8)")
    for name in ("image_size", "local_size", "batch_size"):
        cfg.add_flag(parser, name, help=f"overrides the preset's {cfg.flag(name)}")
    parser.add_argument("--steps", type=int, default=20, metavar="N",
                        help="timed calls of each function (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, metavar="N",
                        help="untimed calls first, including the tracing one (default: 3)")
    cfg.add_flag(parser, "xla")
    cfg.add_flag(parser, "mixed_precision")
    cfg.add_flag(parser, "data_dir",
                 help="photos for the batch and the input pipeline (default: data/)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    return parser


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    steps, warmup, json_path = args.pop("steps"), args.pop("warmup"), args.pop("json")
    try:
        if steps < 1:
            raise cfg.ConfigError(f"--steps: expected at least 1, got {steps}")
        if warmup < 1:
            raise cfg.ConfigError(f"--warmup: expected at least 1 (the tracing call), got {warmup}")
        if "local_size" in args:  # holes as in the presets: 3/4 to all of the local patch
            args.update(hole_min=args["local_size"] * 3 // 4, hole_max=args["local_size"])
        config = cfg.resolve(cfg.preset_config(args["preset"]), args)
        files = data_loader.photo_files(config.data_dir)
    except utils.UserError as error:
        return utils.print_error(error)
    warning = devices.precision_warning(devices.device_settings(config)[1])
    if warning:
        print(warning, file=sys.stderr)
    settings, figures = run(config, files, steps, warmup)
    print(report(settings, figures))
    if json_path:
        utils.write_json(json_path, {"settings": settings, "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
