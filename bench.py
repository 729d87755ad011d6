"""Measure training and inference speed against this machine's compute ceiling.

    python bench.py                                   # cpu preset: 128 px, local 64, batch 8
    python bench.py --preset paper --batch-size 16 --xla on --mixed-precision     # on a GPU
    python bench.py --steps 2 --warmup 1 --json bench.json
    python bench.py --steps 5 --pytorch --rounds 2    # side by side with pytorch_port.py

One line per figure: images/s of each training phase and of inference, the GFLOP/s each
achieves (from the analytic FLOP count in model.py; a backward pass counts as two forward
passes) and its fraction of the machine's measured float32 matmul GFLOP/s, the images/s the
input pipeline delivers on its own (on the photos, and on large photos as they are and after
prepare.py), and the peak resident memory. Every compiled function is traced and run --warmup
times before the clock starts.

Then inference by engine: images/s and milliseconds per call of the float32 completion network
as complete.py runs it, by TensorFlow (tf) and by ONNX Runtime (onnx, the same weights converted
by engine.py), at each --inference-sizes and --inference-batches: --warmup untimed calls, then
timed ones until --min-seconds have passed (two at least).

--pytorch times pytorch_port.py's networks and steps on the same work, each figure right after
glcic's, in NCHW and channels-last layouts, and prints both side by side (the faster layout for
PyTorch, the faster engine for glcic's inference). --rounds N repeats all of it N times: this
machine's run-to-run noise is about 15 %, so one round alone does not settle a comparison.

--profile DIR traces --steps more steps of each phase with TensorFlow's profiler into
DIR/phase1 ... (TensorBoard's profile plugin shows them: pip install tensorboard-plugin-profile)
and prints, per phase, the op types that took the most time.
"""
import argparse
import collections
import functools
import glob
import os
import re
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
from model import build_completion_network, completion_flops, discriminator_flops

MATMUL_SIZES = (2048, 4096)
LARGE_PHOTO = (2000, 3000)  # 6 megapixels, as a phone or camera takes them
ENGINES = ("tf", "onnx")
LAYOUTS = ("nchw", "channels_last")  # of the PyTorch tensors
LAYOUT_NAMES = {"nchw": "NCHW", "channels_last": "channels_last"}
PYTORCH_MISSING = "--pytorch: PyTorch is not installed (pip install torch==2.13.0)"
LABELS = {"phase1": "phase 1 (completion update)", "phase2": "phase 2 (discriminator update)",
          "phase3": "phase 3 (joint update)", "inference": "inference (completion forward)"}


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


def fetch(results):
    """The results of a call (TensorFlow or PyTorch tensors, NumPy arrays) as NumPy arrays, so
    that its work is done when the clock reads."""
    return tf.nest.map_structure(np.asarray, results)


def call(function, times):
    for _ in range(times):
        fetch(function())


def time_calls(function, warmup, steps):
    """(mean seconds per call, resident memory growth in bytes) over `steps` calls after
    `warmup` untimed ones."""
    call(function, warmup)
    before, start = resident_bytes(), time.perf_counter()
    call(function, steps)
    return (time.perf_counter() - start) / steps, resident_bytes() - before


def time_until(function, warmup, min_seconds):
    """Mean seconds per call after `warmup` untimed calls, over timed calls until min_seconds
    have passed, and two calls at least."""
    call(function, warmup)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        fetch(function())
        calls += 1
    return (time.perf_counter() - start) / calls


OP_EVENT = re.compile(r"^[^\s:]+:([A-Za-z_][A-Za-z0-9_]*)$")  # "scope/name:OpType"
CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
            "StatelessIf"}  # their time is their ops' time


def profile_ops(function, folder, calls):
    """Trace `calls` calls of `function` with TensorFlow's profiler into `folder`: (seconds per
    call, {op type: seconds per call}, largest first), from the op executions on the host's
    threads. Ops that run at the same time on different threads each count in full, so the op
    times add up to more than the wall time."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    pattern = os.path.join(folder, "**", "*.xplane.pb")
    earlier = set(glob.glob(pattern, recursive=True))
    tf.profiler.experimental.start(folder)
    try:
        start = time.perf_counter()
        call(function, calls)
        seconds = (time.perf_counter() - start) / calls
    finally:
        tf.profiler.experimental.stop()
    times = collections.Counter()
    for path in set(glob.glob(pattern, recursive=True)) - earlier:
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:"):
                continue
            for line in plane.lines:
                for event in line.events:
                    match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                    if match and match.group(1) not in CALL_OPS:
                        times[match.group(1)] += event.duration_ps * 1e-12 / calls
    return seconds, dict(times.most_common())


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


def inference_input(size, batch, mean_pixel):
    """The completion network's input for `batch` random size x size images, each with a
    centred square hole of half the side."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    masks = np.zeros((batch, size, size, 1), np.float32)
    masks[:, size // 4:size * 3 // 4, size // 4:size * 3 // 4] = 1.0
    return utils.completion_input(images, masks, tf.constant(mean_pixel, tf.float32)).numpy()


def inference_engines(network, engines, folder):
    """{engine: function of an input array}: the Keras network as complete.py calls it, and its
    ONNX conversion (written to `folder`) run by ONNX Runtime; and why ONNX was skipped, if it
    was ("" if not)."""
    import engine
    functions, skipped = {}, ""
    if "tf" in engines:
        functions["tf"] = engine.forward(network)
    if "onnx" in engines:
        ready, skipped = engine.available()
        if ready:
            path = os.path.join(folder, "completion_network.onnx")
            engine.to_onnx(network, path)
            functions["onnx"] = engine.OnnxNetwork(path)
    return functions, skipped


def pytorch_training(config, G, D, batch, mean_pixel):
    """{"phase1": {layout: step}, ...}: pytorch_port.py's three steps in each layout, from the
    weights of G and D, on `batch`."""
    import pytorch_port
    functions = {f"phase{p}": {} for p in (1, 2, 3)}
    for layout in LAYOUTS:
        channels_last = layout == "channels_last"
        port_G, port_D, g_opt, d_opt = pytorch_port.build_training(config, mean_pixel,
                                                                   channels_last)
        pytorch_port.copy_from_keras(port_G, G)
        pytorch_port.copy_from_keras(port_D, D)
        steps = pytorch_port.make_steps(port_G, port_D, g_opt, d_opt, config)
        port_batch = pytorch_port.from_keras_batch(batch, channels_last)
        for p, step in steps.items():
            functions[f"phase{p}"][layout] = functools.partial(step, port_batch)
    return functions


def pytorch_inference(network, config, mean_pixel):
    """{"pytorch_<layout>": function of an input array}: pytorch_port.py's completion network
    with the weights of `network`, NHWC arrays in and out as the other engines."""
    import torch
    import pytorch_port
    functions = {}
    for layout in LAYOUTS:
        channels_last = layout == "channels_last"
        port = pytorch_port.CompletionNetwork(config.width_divisor, mean_pixel)
        pytorch_port.copy_from_keras(port, network)
        port.eval()
        if channels_last:
            port = port.to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def complete(x, port=port, channels_last=channels_last):
            return pytorch_port.to_nhwc(port(pytorch_port.to_nchw(x, channels_last)))
        functions[f"pytorch_{layout}"] = complete
    return functions


def measure_round(config, training, engines, inputs, steps, warmup, min_seconds):
    """One round: each training function in turn (glcic's, then PyTorch's in each layout, phase
    by phase), then each engine in turn at each size and batch. Returns (figures, resident
    memory growth of each of glcic's functions)."""
    figures, growth = {}, {}
    for name, functions in training.items():
        seconds, growth[name] = time_calls(functions["glcic"], warmup, steps)
        figures[f"{name}_images_per_second"] = config.batch_size / seconds
        for layout in LAYOUTS:
            if layout in functions:
                seconds, _ = time_calls(functions[layout], warmup, steps)
                figures[f"pytorch_{name}_{layout}_images_per_second"] = config.batch_size / seconds
    for (size, batch), x in inputs.items():
        for engine, function in engines.items():
            seconds = time_until(functools.partial(function, x), warmup, min_seconds)
            key = f"inference_{engine}_{size}px_batch{batch}"
            figures[f"{key}_images_per_second"] = batch / seconds
            figures[f"{key}_ms_per_call"] = 1000 * seconds
    return figures, growth


def faster_layout(figures, key):
    """(layout, images/s) of the faster PyTorch layout; `key` names the figure with {}."""
    return max(((layout, figures[key.format(layout)]) for layout in LAYOUTS),
               key=lambda pair: pair[1])


def derive(figures, config, peak, inputs, pytorch):
    """Add a round's GFLOP/s, fractions of the matmul peak and ratios to its figures."""
    for name, flops in phase_flops(config).items():
        gflops = figures[f"{name}_images_per_second"] * flops / 1e9
        figures[f"{name}_gflops"] = gflops
        figures[f"{name}_fraction_of_matmul_peak"] = gflops / peak
    for size, batch in inputs:
        at = f"{size}px_batch{batch}"
        glcic = {engine: figures[f"inference_{engine}_{at}_images_per_second"]
                 for engine in ENGINES if f"inference_{engine}_{at}_images_per_second" in figures}
        if len(glcic) == 2:
            figures[f"inference_onnx_{at}_over_tf"] = glcic["onnx"] / glcic["tf"]
        if pytorch:
            layout, rate = faster_layout(figures, f"inference_pytorch_{{}}_{at}_images_per_second")
            figures.update({f"inference_pytorch_{at}_images_per_second": rate,
                            f"inference_pytorch_{at}_layout": layout})
        if pytorch and glcic:
            engine = max(glcic, key=glcic.get)
            figures.update({f"inference_{at}_glcic_engine": engine,
                            f"inference_{at}_glcic_over_pytorch": glcic[engine] / rate})
    for phase in ("phase1", "phase2", "phase3") if pytorch else ():
        layout, rate = faster_layout(figures, f"pytorch_{phase}_{{}}_images_per_second")
        figures.update({f"pytorch_{phase}_images_per_second": rate,
                        f"pytorch_{phase}_layout": layout,
                        f"{phase}_over_pytorch": figures[f"{phase}_images_per_second"] / rate})
    return figures


def run(config, files, steps, warmup, sizes=(128, 256, 512), batches=(1, 8), engines=ENGINES,
        min_seconds=3.0, rounds=1, pytorch=False, profile=None):
    """All figures: (settings, figures of the first round and of the machine, figures of each
    round)."""
    jit_compile, policy = devices.device_settings(config)
    mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    batch = next(iter(data_loader.training_dataset(files, config)))
    G, D, _, _, step_opts = train.build_training(config, policy, mean_pixel=mean_pixel)
    steps_by_phase = train.make_steps(G, D, *step_opts, config, mean_pixel, jit_compile)
    inputs = utils.completion_input(batch["image"], batch["mask"], tf.constant(mean_pixel))
    infer = tf.function(lambda x: G(x, training=False), jit_compile=jit_compile)
    # complete.py's network: float32 whatever the training precision
    network = build_completion_network(width_divisor=config.width_divisor, mean_pixel=mean_pixel)
    network.set_weights(G.get_weights())

    training = {f"phase{p}": {"glcic": functools.partial(step, batch)}
                for p, step in steps_by_phase.items()}
    training["inference"] = {"glcic": functools.partial(infer, inputs)}
    examples = {(size, n): inference_input(size, n, mean_pixel) for size in sizes for n in batches}
    with tempfile.TemporaryDirectory() as folder:
        functions, onnx_skipped = inference_engines(network, engines, folder)
        if pytorch:
            for name, by_layout in pytorch_training(config, G, D, batch, mean_pixel).items():
                training[name].update(by_layout)
            functions.update(pytorch_inference(network, config, mean_pixel))
        measured = [measure_round(config, training, functions, examples, steps, warmup,
                                  min_seconds) for _ in range(rounds)]
    traces = {f"phase{p}": step.experimental_get_tracing_count()
              for p, step in steps_by_phase.items()}
    profiles = {f"phase{p}": profile_ops(functools.partial(step, batch),
                                         os.path.join(profile, f"phase{p}"), steps)
                for p, step in steps_by_phase.items()} if profile else {}
    pipeline = pipeline_images_per_second(files, config, warmup, max(10, 2 * steps))
    large, large_prepared = large_photo_pipelines(config, max(2, steps // 4))
    peak = matmul_gflops()

    each_round = [derive(figures, config, peak, examples, pytorch) for figures, _ in measured]
    figures = dict(each_round[0])
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
        resident_growth_mib=max(measured[0][1].values()) / 2 ** 20,
    )
    for name, (seconds, ops) in profiles.items():
        figures[f"{name}_profiled_seconds_per_step"] = seconds
        figures[f"{name}_op_seconds_per_step"] = ops
    settings = dict(image_size=config.image_size, local_size=config.local_size,
                    batch_size=config.batch_size, steps=steps, warmup=warmup,
                    xla=jit_compile, precision=policy or "float32",
                    device="GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                    onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                    tensorflow=tf.__version__, traces=traces,
                    inference_sizes=list(sizes), inference_batches=list(batches),
                    engines=[e for e in engines if e in functions], onnx_skipped=onnx_skipped,
                    min_seconds=min_seconds, rounds=rounds,
                    pytorch=pytorch_version() if pytorch else None, profile=profile)
    return settings, figures, each_round


def pytorch_version():
    import torch
    return torch.__version__


def phase_lines(f):
    return [f"{label:32s} {f[key + '_images_per_second']:8.2f} images/s"
            f" {f[key + '_gflops']:8.1f} GFLOP/s"
            f" {100 * f[key + '_fraction_of_matmul_peak']:5.0f} % of matmul peak"
            for key, label in LABELS.items()]


def inference_lines(settings, f):
    """One line per engine, size and batch; ONNX's with its ratio to TensorFlow."""
    lines = []
    if settings["onnx_skipped"]:
        lines.append(f"inference onnx: skipped, {settings['onnx_skipped']}")
    for size in settings["inference_sizes"]:
        for batch in settings["inference_batches"]:
            at = f"{size}px_batch{batch}"
            for engine in settings["engines"]:
                key = f"inference_{engine}_{at}"
                line = (f"{f'inference {engine}, {size} px, batch {batch}':32s}"
                        f" {f[key + '_images_per_second']:8.2f} images/s"
                        f" {f[key + '_ms_per_call']:8.1f} ms per call")
                if f"{key}_over_tf" in f:
                    line += f" {f[key + '_over_tf']:8.2f} x tf"
                lines.append(line)
    return lines


def side_by_side(settings, f):
    """glcic's figures against PyTorch's: images/s of each, and their ratio."""
    def cell(key, width=10):
        return f"{f[key]:{width}.2f}" if key in f else f"{'-':>{width}s}"

    lines = [f"side by side with PyTorch {settings['pytorch']} (float32), images/s; the ratio takes"
             " glcic's faster engine:",
             f"{'figure':32s} {'glcic TF':>10s} {'glcic ONNX':>10s} {'PyTorch':>10s}"
             f" {'layout':14s} {'glcic/PyTorch':>13s}"]
    rows = [(LABELS[p], f"{p}_images_per_second", "-", f"pytorch_{p}", f"{p}_over_pytorch")
            for p in ("phase1", "phase2", "phase3")]
    for size in settings["inference_sizes"]:
        for batch in settings["inference_batches"]:
            at = f"{size}px_batch{batch}"
            rows.append((f"inference {size} px, batch {batch}",
                         f"inference_tf_{at}_images_per_second",
                         f"inference_onnx_{at}_images_per_second", f"inference_pytorch_{at}",
                         f"inference_{at}_glcic_over_pytorch"))
    for label, tf_key, onnx_key, pytorch_key, ratio in rows:
        lines.append(f"{label:32s} {cell(tf_key)} {cell(onnx_key)}"
                     f" {cell(pytorch_key + '_images_per_second')}"
                     f" {LAYOUT_NAMES[f[pytorch_key + '_layout']]:14s} {cell(ratio, 13)}")
    return lines


def round_lines(settings, f):
    """What each round measures: the training phases, inference by engine, and PyTorch."""
    lines = inference_lines(settings, f)
    return lines + (side_by_side(settings, f) if settings["pytorch"] else [])


def report(settings, figures, rounds=()):
    f = figures
    lines = [f"glcic bench: {settings['image_size']} px, local {settings['local_size']}, batch"
             f" {settings['batch_size']}, {settings['device']}, {settings['precision']}, XLA"
             f" {'on' if settings['xla'] else 'off'}, {settings['steps']} timed steps after"
             f" {settings['warmup']} warm-up"]
    if len(rounds) > 1:
        lines.append(f"round 1 of {len(rounds)}:")
    lines += phase_lines(f)
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
    lines += round_lines(settings, f)
    for k, later in enumerate(rounds[1:], 2):
        lines += [f"round {k} of {len(rounds)}:", *phase_lines(later),
                  *round_lines(settings, later)]
    return "\n".join(lines + profile_lines(settings, f))


def profile_lines(settings, f, top=6):
    if not settings.get("profile"):
        return []
    lines = [f"profile in {settings['profile']}/: seconds per step of the op types that took the"
             " most (ops that ran at the same time each count in full)"]
    for phase in ("phase1", "phase2", "phase3"):
        ops = f[f"{phase}_op_seconds_per_step"]
        lines.append(f"  {LABELS[phase]}: {f[f'{phase}_profiled_seconds_per_step']:.3f} s per"
                     f" step, ops {sum(ops.values()):.3f} s")
        lines += [f"    {name:44s} {seconds:8.3f} s" for name, seconds in list(ops.items())[:top]]
    return lines


def comma_list(check, expected, convert=int):
    """An argparse type: comma-separated values, each passing `check`."""
    def parse(text):
        try:
            values = [convert(v) for v in text.split(",")]
        except ValueError:
            values = []
        if not values or not all(check(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return values
    return parse


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
    parser.add_argument("--inference-sizes", default="128,256,512", metavar="S,S,...",
                        type=comma_list(cfg.multiple_of_4, "comma-separated multiples of 4"),
                        help="image sides of the inference figures by engine"
                             " (default: 128,256,512)")
    parser.add_argument("--inference-batches", default="1,8", metavar="N,N,...",
                        type=comma_list(lambda v: v >= 1, "comma-separated positive numbers"),
                        help="batch sizes of the inference figures by engine (default: 1,8)")
    parser.add_argument("--engines", default=",".join(ENGINES), metavar="E,E,...",
                        type=comma_list(lambda v: v in ENGINES, "a comma-separated list of"
                                        f" {', '.join(ENGINES)}", convert=str),
                        help="engines of the inference figures: tf (the Keras network, as"
                             " complete.py calls it), onnx (ONNX Runtime; skipped when it is not"
                             " installed) (default: tf,onnx)")
    parser.add_argument("--min-seconds", type=float, default=3.0, metavar="S",
                        help="time each inference figure over at least S seconds, and two calls"
                             " (default: 3)")
    parser.add_argument("--pytorch", action="store_true",
                        help="also time pytorch_port.py's networks and steps on the same work,"
                             " alternating with glcic's, and print both side by side")
    parser.add_argument("--profile", metavar="DIR",
                        help="also trace --steps steps of each phase with TensorFlow's profiler"
                             " into DIR and print the op types that took the most time")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="repeat every timed figure N times, reporting each round; with"
                             " this machine's noise, comparisons want 2 (default: 1)")
    return parser


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    steps, warmup, json_path = args.pop("steps"), args.pop("warmup"), args.pop("json")
    options = dict(sizes=args.pop("inference_sizes"), batches=args.pop("inference_batches"),
                   engines=args.pop("engines"), min_seconds=args.pop("min_seconds"),
                   rounds=args.pop("rounds"), pytorch=args.pop("pytorch"),
                   profile=args.pop("profile"))
    try:
        if steps < 1:
            raise cfg.ConfigError(f"--steps: expected at least 1, got {steps}")
        if warmup < 1:
            raise cfg.ConfigError(f"--warmup: expected at least 1 (the tracing call), got {warmup}")
        if options["rounds"] < 1:
            raise cfg.ConfigError(f"--rounds: expected at least 1, got {options['rounds']}")
        if not options["min_seconds"] >= 0:
            raise cfg.ConfigError(f"--min-seconds: expected a non-negative number, got"
                                  f" {options['min_seconds']}")
        if options["pytorch"]:
            check_pytorch()
        if options["profile"]:
            utils.output_folder(options["profile"], "--profile")
        if "local_size" in args:  # holes as in the presets: 3/4 to all of the local patch
            args.update(hole_min=args["local_size"] * 3 // 4, hole_max=args["local_size"])
        config = cfg.resolve(cfg.preset_config(args["preset"]), args)
        files = data_loader.photo_files(config.data_dir)
    except utils.UserError as error:
        return utils.print_error(error)
    warning = devices.precision_warning(devices.device_settings(config)[1])
    if warning:
        print(warning, file=sys.stderr)
    settings, figures, rounds = run(config, files, steps, warmup, **options)
    print(report(settings, figures, rounds))
    if json_path:
        utils.write_json(json_path, {"settings": settings, "figures": figures, "rounds": rounds})
    return 0


def check_pytorch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise utils.UserError(PYTORCH_MISSING) from None


if __name__ == "__main__":
    sys.exit(main())
