"""Measure training and inference speed against this machine's compute ceiling.

    python bench.py                                   # cpu preset: 128 px, local 64, batch 8
    python bench.py --preset paper --batch-size 16 --xla on     # on a GPU: float32 and float16
    python bench.py --steps 2 --warmup 1 --json bench.json
    python bench.py --steps 5 --pytorch --rounds 2    # side by side with pytorch_port.py

Every figure in float32 and, beside it, in --precision (auto: bfloat16 on a CPU that computes it
natively, float16 on a GPU; on other CPUs float32 alone), from the same weights. One line per
figure and precision: images/s of each training phase and of inference, the GFLOP/s each
achieves (from the analytic FLOP count in model.py; a backward pass counts as two forward
passes) and its fraction of the machine's measured matmul GFLOP/s in that precision, the
images/s the input pipeline delivers on its own (on the photos, and on large photos as they are
and after prepare.py), the matmul peak of each precision, and the peak resident memory. Every
compiled function is traced and run --warmup times before the clock starts.

Then inference by engine: images/s and milliseconds per call of the completion network as
complete.py runs it, by TensorFlow in float32 (tf) and in the reduced precision (tf bfloat16:
batch norms folded, the weights in that precision), and by ONNX Runtime in float32 (onnx, the
same weights converted by engine.py), at each --inference-sizes and --inference-batches:
--warmup untimed calls, then timed ones until --min-seconds have passed (two at least). The
engine complete.py chooses by default is marked.

--pytorch times pytorch_port.py's networks and steps on the same work, each figure right after
glcic's, in NCHW and channels-last layouts, in float32 and under PyTorch's own CPU autocast to
the reduced precision, and prints them side by side (PyTorch's faster layout; glcic as train.py
and complete.py run by default). --rounds N repeats all of it N times: this machine's
run-to-run noise is about 15 %, so one round alone does not settle a comparison.

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
import threading
import time

import cv2
import numpy as np
import runtime  # noqa: F401  (settings TensorFlow reads at import)
import tensorflow as tf
from PIL import Image

import config as cfg
import data_loader
import devices
import prepare
import phases
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
    g = completion_flops(config.image_size, upsampling=config.upsampling)
    d = discriminator_flops(config.image_size, config.local_size)
    return {"phase1": 3 * g, "phase2": g + 2 * 3 * d, "phase3": 3 * g + 3 * 3 * d,
            "inference": g}


def matmul_gflops(sizes=MATMUL_SIZES, repeats=4, dtype=tf.float32):
    """Best GFLOP/s of TensorFlow's matmul over large square matrices of `dtype`."""
    best = 0.0
    for n in sizes:
        a = tf.cast(tf.random.uniform((n, n)), dtype)
        b = tf.cast(tf.random.uniform((n, n)), dtype)
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


def engine_networks(network, engines, folder, reduced):
    """{engine: network as complete.py runs it}: the Keras network in float32 ("tf") and,
    unless `reduced` is float32, its folded copy in that precision ("tf_bfloat16"); and its
    ONNX conversion (written to `folder`) for ONNX Runtime. Also why ONNX was skipped, if it
    was ("" if not)."""
    import engine
    networks, skipped = {}, ""
    if "tf" in engines:
        networks["tf"] = network
        if reduced != "float32":
            networks[f"tf_{reduced}"] = engine.folded(network, reduced)
    if "onnx" in engines:
        ready, skipped = engine.available()
        if ready:
            path = os.path.join(folder, "completion_network.onnx")
            engine.to_onnx(network, path)
            networks["onnx"] = engine.OnnxNetwork(path)
    return networks, skipped


def inference_engines(network, engines, folder, reduced):
    """{engine: function of an input array} of engine_networks(), and why ONNX was skipped."""
    import engine
    networks, skipped = engine_networks(network, engines, folder, reduced)
    functions = {}
    for name, net in networks.items():
        if name == "tf":
            functions[name] = engine.forward(net)
        elif name == "onnx":
            functions[name] = net
        else:  # the folded copy, kept alive by the function
            functions[name] = lambda x, net=net: engine.forward(net)(x)
    return functions, skipped


LARGE_PHOTO = (3000, 4000)  # 12 megapixels
LARGE_HOLES = {"one 600 px hole": [(1200, 1700, 600, 600)],
               "five holes": [(400, 500, 600, 450), (300, 2800, 250, 300), (2100, 600, 150, 120),
                              (2200, 3000, 400, 500), (1500, 1900, 60, 80)]}


def peak_during(function):
    """(seconds, the largest growth of resident memory while `function` ran, in bytes),
    resident memory read every 5 ms."""
    before, peak, done = resident_bytes(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes() - before)
            time.sleep(0.005)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    return seconds, max(peak[0], resident_bytes() - before)


def large_photo_figures(networks, mean_pixel, trained_hole, repeats=3):
    """complete.py's completion of a 12-megapixel photo (--scale auto, the files' reading and
    writing apart) with each engine, for each of LARGE_HOLES: the best seconds of `repeats`
    after a warm-up, and the peak growth of resident memory."""
    import complete
    rng = np.random.default_rng(0)
    photo = cv2.resize(rng.integers(0, 256, (LARGE_PHOTO[0] // 50, LARGE_PHOTO[1] // 50, 3),
                                    dtype=np.uint8), LARGE_PHOTO[::-1],
                       interpolation=cv2.INTER_CUBIC)
    figures = {}
    for label, boxes in LARGE_HOLES.items():
        hole = np.zeros(LARGE_PHOTO, bool)
        for y, x, h, w in boxes:
            hole[y:y + h, x:x + w] = True
        key = "large_" + label.split()[0]
        for name, network in networks.items():
            def run():
                return complete.complete(network, photo, hole, mean_pixel, scale="auto",
                                         trained_hole=trained_hole)
            run()
            measured = [peak_during(run) for _ in range(repeats)]
            figures[f"{key}_{name}_seconds"] = min(s for s, _ in measured)
            figures[f"{key}_{name}_peak_mib"] = max(m for _, m in measured) / 2 ** 20
    return figures


def pytorch_training(config, G, D, batch, mean_pixel, reduced):
    """{"pytorch_phase1_<layout>[_<reduced>]": step, ...}: pytorch_port.py's three steps in each
    layout, from the weights of G and D, on `batch`, in float32 and (unless `reduced` is
    float32) with PyTorch's CPU autocast to `reduced`."""
    import pytorch_port
    functions = {}
    for layout in LAYOUTS:
        channels_last = layout == "channels_last"
        for precision in dict.fromkeys(("float32", reduced)):
            port_G, port_D, g_opt, d_opt = pytorch_port.build_training(config, mean_pixel,
                                                                       channels_last)
            pytorch_port.copy_from_keras(port_G, G)
            pytorch_port.copy_from_keras(port_D, D)
            steps = pytorch_port.make_steps(port_G, port_D, g_opt, d_opt, config,
                                            autocast_to=None if precision == "float32"
                                            else precision)
            port_batch = pytorch_port.from_keras_batch(batch, channels_last)
            for p, step in steps.items():
                functions[f"pytorch_phase{p}_{layout}{suffix(precision)}"] = functools.partial(
                    step, port_batch)
    return functions


def pytorch_inference(network, config, mean_pixel, reduced):
    """{"pytorch_<layout>[_<reduced>]": function of an input array}: pytorch_port.py's
    completion network with the weights of `network`, NHWC arrays in and out as the other
    engines, in float32 and (unless `reduced` is float32) with autocast to `reduced`."""
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
        for precision in dict.fromkeys(("float32", reduced)):
            @torch.inference_mode()
            def complete(x, port=port, channels_last=channels_last, precision=precision):
                with pytorch_port.autocast(None if precision == "float32" else precision):
                    y = port(pytorch_port.to_nchw(x, channels_last))
                return pytorch_port.to_nhwc(y.float())
            functions[f"pytorch_{layout}{suffix(precision)}"] = complete
    return functions


def suffix(precision):
    """What figure names add for a precision: "" for float32, "_bfloat16" for bfloat16."""
    return "" if precision == "float32" else f"_{precision}"


def measure_round(config, training, engines, inputs, steps, warmup, min_seconds):
    """One round: each training function in turn (glcic's in each precision, then PyTorch's in
    each layout and precision, phase by phase), then each engine in turn at each size and
    batch. Returns (figures, resident memory growth of each of glcic's functions)."""
    figures, growth = {}, {}
    for name, function in training.items():
        seconds, grew = time_calls(function, warmup, steps)
        figures[f"{name}_images_per_second"] = config.batch_size / seconds
        if not name.startswith("pytorch"):
            growth[name] = grew
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


def derive(figures, config, peaks, inputs, pytorch, default):
    """Add a round's GFLOP/s, fractions of the matmul peak (of each precision), and glcic's
    default (`default`: the precision and engine complete.py and train.py choose) over
    PyTorch's faster layout, in float32 and in each reduced precision measured."""
    for name, flops in phase_flops(config).items():
        for precision, peak in peaks.items():
            key = name + suffix(precision)
            gflops = figures[f"{key}_images_per_second"] * flops / 1e9
            figures[f"{key}_gflops"] = gflops
            figures[f"{key}_fraction_of_matmul_peak"] = gflops / peak
    for size, batch in inputs:
        at = f"{size}px_batch{batch}"
        if "tf" in default["engines"] and "onnx" in default["engines"]:
            figures[f"inference_onnx_{at}_over_tf"] = (
                figures[f"inference_onnx_{at}_images_per_second"]
                / figures[f"inference_tf_{at}_images_per_second"])
        float32 = [figures[f"inference_{e}_{at}_images_per_second"] for e in ("tf", "onnx")
                   if e in default["engines"]]
        if float32:  # the faster float32 engine's
            figures[f"inference_float32_{at}_images_per_second"] = max(float32)
        if default["engine"] in default["engines"]:
            figures[f"inference_{at}_glcic_images_per_second"] = figures[
                f"inference_{default['engine']}_{at}_images_per_second"]
    for precision in peaks if pytorch else ():
        for name in ("phase1", "phase2", "phase3"):
            layout, rate = faster_layout(figures, f"pytorch_{name}_{{}}{suffix(precision)}"
                                                  "_images_per_second")
            key = f"pytorch_{name}{suffix(precision)}"
            glcic = figures[f"{name}{suffix(default['precision'])}_images_per_second"]
            figures.update({f"{key}_images_per_second": rate, f"{key}_layout": layout,
                            f"{name}_over_{key}": glcic / rate})
        for size, batch in inputs:
            at = f"{size}px_batch{batch}"
            layout, rate = faster_layout(figures, f"inference_pytorch_{{}}{suffix(precision)}"
                                                  f"_{at}_images_per_second")
            key = f"inference_pytorch{suffix(precision)}_{at}"
            figures.update({f"{key}_images_per_second": rate, f"{key}_layout": layout})
            if f"inference_{at}_glcic_images_per_second" in figures:
                figures[f"inference_{at}_glcic_over_pytorch{suffix(precision)}"] = (
                    figures[f"inference_{at}_glcic_images_per_second"] / rate)
    return figures


def training_steps(config, batch, inputs, precisions, mean_pixel, jit_compile):
    """({"phase1[_<precision>]": step on `batch`, ..., "inference[_<precision>]": ...}, the
    traced steps {precision: {phase: step}}, the float32 networks {"G": ..., "D": ...}): each
    precision's own networks and steps, from the same weights as float32's."""
    training, traced, networks = {}, {}, {}
    for p in precisions:
        G, D, _, _, step_opts = phases.build_training(config, devices.POLICIES[p],
                                                     mean_pixel=mean_pixel)
        if networks:  # the same weights as float32's
            G.set_weights(networks["G"].get_weights())
            D.set_weights(networks["D"].get_weights())
        networks = networks or {"G": G, "D": D}
        traced[p] = phases.make_steps(G, D, *step_opts, config, mean_pixel, jit_compile)
        infer = tf.function(lambda x, G=G: G(x, training=False), jit_compile=jit_compile)
        for name, step in [*((f"phase{k}", functools.partial(s, batch))
                             for k, s in traced[p].items()),
                           ("inference", functools.partial(infer, inputs))]:
            training[name + suffix(p)] = step
    return training, traced, networks


def run(config, files, steps, warmup, precision="auto", sizes=(128, 256, 512), batches=(1, 8),
        engines=ENGINES, min_seconds=3.0, rounds=1, pytorch=False, profile=None):
    """All figures: (settings, figures of the first round and of the machine, figures of each
    round). Every figure is measured in float32 and, when `precision` resolves to another
    (auto: bfloat16 on a CPU that computes it natively), in that one too, from the same
    weights."""
    import engine
    # Each precision traces its own steps: TensorFlow's warning about many traces of the same
    # step function is expected here.
    tf.get_logger().setLevel("ERROR")
    jit_compile, _ = devices.device_settings(config)
    reduced, why = devices.resolve_precision(precision)
    precisions = list(dict.fromkeys(("float32", reduced)))
    default_engine, default_precision, _ = engine.choose(None, precision)
    mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    batch = next(iter(data_loader.training_dataset(files, config)))
    inputs = utils.completion_input(batch["image"], batch["mask"], tf.constant(mean_pixel))
    training, traced, networks = training_steps(config, batch, inputs, precisions, mean_pixel,
                                                jit_compile)
    G, D = networks["G"], networks["D"]
    # complete.py's network: float32 weights whatever the training precision
    network = build_completion_network(width_divisor=config.width_divisor, mean_pixel=mean_pixel,
                                       upsampling=config.upsampling)
    network.set_weights(G.get_weights())
    examples = {(size, n): inference_input(size, n, mean_pixel) for size in sizes for n in batches}
    with tempfile.TemporaryDirectory() as folder:
        functions, onnx_skipped = inference_engines(network, engines, folder, reduced)
        if pytorch:
            training.update(pytorch_training(config, G, D, batch, mean_pixel, reduced))
            functions.update(pytorch_inference(network, config, mean_pixel, reduced))
        # phase by phase: glcic's and PyTorch's figures of a phase one right after the other
        order = [name for phase in ("phase1", "phase2", "phase3", "inference")
                 for name in training if name == phase or name.startswith(phase + "_")
                 or name.startswith(f"pytorch_{phase}_")]
        training = {name: training[name] for name in order}
        measured = [measure_round(config, training, functions, examples, steps, warmup,
                                  min_seconds) for _ in range(rounds)]
    traces = {f"phase{k}{suffix(p)}": step.experimental_get_tracing_count()
              for p, steps_by_phase in traced.items() for k, step in steps_by_phase.items()}
    profiles = {f"phase{k}{suffix(p)}": profile_ops(
        functools.partial(step, batch), os.path.join(profile, f"phase{k}{suffix(p)}"), steps)
        for p, steps_by_phase in traced.items()
        for k, step in steps_by_phase.items()} if profile else {}
    pipeline = pipeline_images_per_second(files, config, warmup, max(10, 2 * steps))
    large, large_prepared = large_photo_pipelines(config, max(2, steps // 4))
    peaks = {p: matmul_gflops(dtype=p) for p in precisions}

    default = dict(precision=reduced, engine=f"{default_engine}{suffix(default_precision)}",
                   engines=list(functions))
    each_round = [derive(figures, config, peaks, examples, pytorch, default)
                  for figures, _ in measured]
    figures = dict(each_round[0])
    fastest = max(figures[f"phase{k}{suffix(p)}_images_per_second"]
                  for k in (1, 2, 3) for p in precisions)
    figures.update(
        pipeline_images_per_second=pipeline,
        pipeline_over_fastest_phase=pipeline / fastest,
        pipeline_large_photos_images_per_second=large,
        pipeline_large_photos_over_fastest_phase=large / fastest,
        pipeline_large_prepared_images_per_second=large_prepared,
        pipeline_large_prepared_over_fastest_phase=large_prepared / fastest,
        peak_resident_mib=peak_resident_bytes() / 2 ** 20,
        resident_growth_mib=max(measured[0][1].values()) / 2 ** 20,
        **{f"matmul_peak{suffix(p)}_gflops": peak for p, peak in peaks.items()},
    )
    for name, (seconds, ops) in profiles.items():
        figures[f"{name}_profiled_seconds_per_step"] = seconds
        figures[f"{name}_op_seconds_per_step"] = ops
    settings = run_settings(config, steps, warmup, jit_compile, (reduced, why), precisions,
                            default, functions, onnx_skipped, (sizes, batches), min_seconds,
                            rounds, pytorch, profile, traces)
    return settings, figures, each_round


def run_settings(config, steps, warmup, jit_compile, precision, precisions, default, functions,
                 onnx_skipped, inference, min_seconds, rounds, pytorch, profile, traces):
    """What a run measured with, on what: the settings part of bench.py's output."""
    (reduced, why), (sizes, batches) = precision, inference
    return dict(image_size=config.image_size, local_size=config.local_size,
                batch_size=config.batch_size, steps=steps, warmup=warmup,
                xla=jit_compile, precision=reduced, precision_why=why,
                precisions=precisions, default_engine=default["engine"],
                device="GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                cpu=cpu_name(), bfloat16_flags=devices.bfloat16_flags(),
                onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                tensorflow=tf.__version__, traces=traces,
                inference_sizes=list(sizes), inference_batches=list(batches),
                engines=[e for e in functions if not e.startswith("pytorch")],
                onnx_skipped=onnx_skipped, min_seconds=min_seconds, rounds=rounds,
                pytorch=pytorch_version() if pytorch else None, profile=profile)


def large_photo_run(config, files, precision="auto", engines=ENGINES, repeats=3):
    """bench.py --large-photo: (settings, figures) of large_photo_figures() with each engine
    of complete.py (float32 and, where it differs, `precision`), the preset's network."""
    import complete
    reduced, why = devices.resolve_precision(precision)
    mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    network = build_completion_network(width_divisor=config.width_divisor,
                                       mean_pixel=mean_pixel, upsampling=config.upsampling)
    with tempfile.TemporaryDirectory() as folder:
        networks, skipped = engine_networks(network, engines, folder, reduced)
        figures = large_photo_figures(networks, mean_pixel, complete.trained_hole_size(config),
                                      repeats)
    settings = dict(photo=f"{LARGE_PHOTO[1]}x{LARGE_PHOTO[0]}", holes=LARGE_HOLES,
                    trained_hole=complete.trained_hole_size(config), engines=list(networks),
                    precision=reduced, precision_why=why, onnx_skipped=skipped,
                    width_divisor=config.width_divisor, cpu=cpu_name(), repeats=repeats,
                    peak_resident_mib=peak_resident_bytes() / 2 ** 20)
    return settings, figures


def large_photo_report(settings, figures):
    lines = [f"glcic bench --large-photo: complete.py --scale auto on a {settings['photo']}"
             f" photo (12 megapixels), the network aiming at {settings['trained_hole']:g} px"
             f" holes, {settings['cpu'] or 'this CPU'}; best of {settings['repeats']}, the"
             " files' reading and writing apart; memory: the largest growth of resident memory"
             " during a completion"]
    for label in LARGE_HOLES:
        key = "large_" + label.split()[0]
        for name in settings["engines"]:
            lines.append(f"{label + ', ' + engine_label(name):40s}"
                         f" {figures[f'{key}_{name}_seconds']:8.3f} s"
                         f" {figures[f'{key}_{name}_peak_mib']:8.0f} MiB")
    return "\n".join(lines)


def cpu_name():
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        with open(devices.cpuinfo_path()) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return ""


def pytorch_version():
    import torch
    return torch.__version__


def phase_lines(settings, f):
    """One line per phase and precision: images/s, GFLOP/s and the fraction of that precision's
    matmul peak, and a reduced precision's speed over float32's."""
    lines = []
    for key, label in LABELS.items():
        for precision in settings["precisions"]:
            name = key + suffix(precision)
            line = (f"{label:32s} {precision:9s}{f[name + '_images_per_second']:8.2f} images/s"
                    f" {f[name + '_gflops']:8.1f} GFLOP/s"
                    f" {100 * f[name + '_fraction_of_matmul_peak']:5.0f} % of matmul peak")
            if precision != "float32":
                line += (f" {f[name + '_images_per_second'] / f[key + '_images_per_second']:6.2f}"
                         " x float32")
            lines.append(line)
    return lines


def engine_label(name):
    """"tf_bfloat16" -> "tf bfloat16"."""
    return name.replace("_", " ")


def inference_lines(settings, f):
    """One line per engine, size and batch; ONNX's with its ratio to TensorFlow's float32, and
    the engine complete.py runs marked."""
    lines = []
    if settings["onnx_skipped"]:
        lines.append(f"inference onnx: skipped, {settings['onnx_skipped']}")
    for size in settings["inference_sizes"]:
        for batch in settings["inference_batches"]:
            at = f"{size}px_batch{batch}"
            for engine in settings["engines"]:
                key = f"inference_{engine}_{at}"
                line = (f"{f'inference {engine_label(engine)}, {size} px, batch {batch}':41s}"
                        f" {f[key + '_images_per_second']:8.2f} images/s"
                        f" {f[key + '_ms_per_call']:8.1f} ms per call")
                tf_rate = f.get(f"inference_tf_{at}_images_per_second")
                if engine != "tf" and tf_rate:
                    line += f" {f[key + '_images_per_second'] / tf_rate:6.2f} x tf"
                if engine == settings["default_engine"]:
                    line += "  (complete.py's)"
                lines.append(line)
    return lines


def side_by_side(settings, f):
    """glcic's figures against PyTorch's, in float32 and the reduced precision: images/s of
    each, and glcic's default (train.py's precision, complete.py's engine) over each of
    PyTorch's."""
    reduced = settings["precision"]

    def cell(key, width=9):
        return f"{f[key]:{width}.2f}" if key in f else f"{'-':>{width}s}"

    low = reduced if reduced != "float32" else "bfloat16"
    short = {"bfloat16": "bf16", "float16": "f16"}[low]
    lines = [f"side by side with PyTorch {settings['pytorch']}, images/s (PyTorch's faster"
             f" layout; PyTorch {low} is its CPU autocast); glcic = {reduced} training and"
             f" complete.py's engine ({engine_label(settings['default_engine'])}):",
             f"{'figure':32s} {'glcic f32':>9s} {'glcic ' + short:>9s} {'PT f32':>9s}"
             f" {'PT ' + short:>9s} {'glcic/PT f32':>12s} {'glcic/PT ' + short:>13s}"]
    rows = [(LABELS[p], f"{p}_images_per_second", f"{p}_{low}_images_per_second",
             f"pytorch_{p}_images_per_second", f"pytorch_{p}_{low}_images_per_second",
             f"{p}_over_pytorch_{p}", f"{p}_over_pytorch_{p}_{low}") for p in
            ("phase1", "phase2", "phase3")]
    for size in settings["inference_sizes"]:
        for batch in settings["inference_batches"]:
            at = f"{size}px_batch{batch}"
            rows.append((f"inference {size} px, batch {batch}",
                         f"inference_float32_{at}_images_per_second",
                         f"inference_tf_{low}_{at}_images_per_second",
                         f"inference_pytorch_{at}_images_per_second",
                         f"inference_pytorch_{low}_{at}_images_per_second",
                         f"inference_{at}_glcic_over_pytorch",
                         f"inference_{at}_glcic_over_pytorch_{low}"))
    for label, *keys, over32, overlow in rows:
        lines.append(f"{label:32s} " + " ".join(cell(key) for key in keys)
                     + f" {cell(over32, 12)} {cell(overlow, 13)}")
    return lines


def round_lines(settings, f):
    """What each round measures: the training phases, inference by engine, and PyTorch."""
    lines = inference_lines(settings, f)
    return lines + (side_by_side(settings, f) if settings["pytorch"] else [])


def report(settings, figures, rounds=()):
    f = figures
    lines = [f"glcic bench: {settings['image_size']} px, local {settings['local_size']}, batch"
             f" {settings['batch_size']}, {settings['device']}"
             + (f" ({settings['cpu']})" if settings.get("cpu") else "")
             + f", {' and '.join(settings['precisions'])}, XLA"
             f" {'on' if settings['xla'] else 'off'}, {settings['steps']} timed steps after"
             f" {settings['warmup']} warm-up",
             f"precision {settings['precision']} ({settings['precision_why']}); complete.py's"
             f" engine: {engine_label(settings['default_engine'])}"]
    if len(rounds) > 1:
        lines.append(f"round 1 of {len(rounds)}:")
    lines += phase_lines(settings, f)
    lines += [
        f"{'input pipeline alone':32s} {f['pipeline_images_per_second']:8.2f} images/s"
        f" {f['pipeline_over_fastest_phase']:8.1f} x the fastest phase",
        f"{'  on 6-megapixel photos':32s} {f['pipeline_large_photos_images_per_second']:8.2f}"
        f" images/s {f['pipeline_large_photos_over_fastest_phase']:8.1f} x the fastest phase",
        f"{'  the same after prepare.py':32s}"
        f" {f['pipeline_large_prepared_images_per_second']:8.2f} images/s"
        f" {f['pipeline_large_prepared_over_fastest_phase']:8.1f} x the fastest phase",
    ]
    for precision in settings["precisions"]:
        peak = f[f"matmul_peak{suffix(precision)}_gflops"]
        line = f"{precision + ' matmul peak':32s} {peak:8.1f} GFLOP/s"
        if precision != "float32":
            line += f" {peak / f['matmul_peak_gflops']:8.2f} x float32"
        lines.append(line)
    lines.append(f"{'peak resident memory':32s} {f['peak_resident_mib']:8.0f} MiB"
                 f" {f['resident_growth_mib']:+8.1f} MiB at most over one function's timed calls")
    lines += round_lines(settings, f)
    for k, later in enumerate(rounds[1:], 2):
        lines += [f"round {k} of {len(rounds)}:", *phase_lines(settings, later),
                  *round_lines(settings, later)]
    return "\n".join(lines + profile_lines(settings, f))


def profile_lines(settings, f, top=6):
    if not settings.get("profile"):
        return []
    lines = [f"profile in {settings['profile']}/: seconds per step of the op types that took the"
             " most (ops that ran at the same time each count in full)"]
    for phase in ("phase1", "phase2", "phase3"):
        for precision in settings["precisions"]:
            name = phase + suffix(precision)
            ops = f[f"{name}_op_seconds_per_step"]
            lines.append(f"  {LABELS[phase]}, {precision}:"
                         f" {f[f'{name}_profiled_seconds_per_step']:.3f} s per step, ops"
                         f" {sum(ops.values()):.3f} s")
            lines += [f"    {op:44s} {seconds:8.3f} s" for op, seconds in list(ops.items())[:top]]
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
    cfg.add_flag(parser, "precision",
                 help="the precision measured beside float32: auto (bfloat16 on a CPU that"
                      " computes it natively, float16 on a GPU; nothing more on other CPUs),"
                      " bfloat16 or float16 (default: auto)")
    cfg.add_mixed_precision(parser)
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
    parser.add_argument("--large-photo", action="store_true",
                        help="instead: time complete.py --scale auto on a 12-megapixel photo with"
                             " one 600 px hole and with five holes, with each engine, and its"
                             " peak memory")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="repeat every timed figure N times, reporting each round; with"
                             " this machine's noise, comparisons want 2 (default: 1)")
    return parser


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    steps, warmup, json_path = args.pop("steps"), args.pop("warmup"), args.pop("json")
    large_photo = args.pop("large_photo")
    options = dict(precision=args.pop("precision", "auto"), sizes=args.pop("inference_sizes"),
                   batches=args.pop("inference_batches"),
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
    warning = devices.precision_warning(devices.resolve_precision(options["precision"])[0])
    if warning:
        print(warning, file=sys.stderr)
    if large_photo:
        settings, figures = large_photo_run(config, files, options["precision"],
                                            options["engines"])
        print(large_photo_report(settings, figures))
        if json_path:
            utils.write_json(json_path, {"settings": settings, "figures": figures})
        return 0
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
