"""Where training runs: the tf.distribute strategy, XLA, the precision and the CPU's features.

Nothing here is about the method; every function answers what this machine (or cluster) can do
with a configuration, or sets TensorFlow up to do it.
"""
import json
import os

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import tensorflow as tf

from config import MIXED, ConfigError


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# x86's AVX-512 BF16 and AMX, ARM's BF16 ("Features" in an ARM /proc/cpuinfo)
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpuinfo_path():
    """Where the CPU's flags are read: /proc/cpuinfo, or the file GLCIC_CPUINFO names."""
    return os.environ.get("GLCIC_CPUINFO") or "/proc/cpuinfo"


def bfloat16_flags(path=None):
    """The flags of BFLOAT16_FLAGS that the CPU has (in /proc/cpuinfo's "flags" or "Features"
    lines): empty when it computes bfloat16 only by emulation."""
    flags = set()
    try:
        with open(path or cpuinfo_path()) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        return []
    return [flag for flag in BFLOAT16_FLAGS if flag in flags]


def cpu_has_bfloat16(path=None):
    """True when the CPU computes bfloat16 natively (AVX-512 BF16, AMX or ARM BF16)."""
    return bool(bfloat16_flags(path))


def resolve_precision(requested, gpu=None, path=None):
    """(float32, bfloat16 or float16; why) for --precision `requested`. auto: float16 on a GPU,
    bfloat16 on a CPU that computes it natively, float32 on other CPUs."""
    gpu = has_gpu() if gpu is None else gpu
    if requested == MIXED:
        return ("float16", "--mixed-precision on a GPU") if gpu else (
            "bfloat16", "--mixed-precision on a CPU")
    if requested != "auto":
        return requested, f"--precision {requested}"
    if gpu:
        return "float16", "auto: a GPU computes float16 natively"
    flags = bfloat16_flags(path)
    if flags:
        return "bfloat16", f"auto: this CPU computes bfloat16 natively ({', '.join(flags)})"
    return "float32", "auto: this CPU has no native bfloat16"


def device_settings(config):
    """(jit_compile, Keras dtype policy) for this machine: XLA and precision as asked."""
    gpu = has_gpu()
    jit_compile = config.xla == "on" or (config.xla == "auto" and gpu)
    return jit_compile, POLICIES[resolve_precision(config.precision, gpu)[0]]


def precision_warning(precision, gpu=None):
    """A warning when `precision` is emulated on this machine (much slower than float32)."""
    gpu = has_gpu() if gpu is None else gpu
    if precision == "bfloat16" and not gpu and not cpu_has_bfloat16():
        return (f"warning: --precision bfloat16: this CPU has no bfloat16 instructions"
                f" ({', '.join(BFLOAT16_FLAGS)}), so bfloat16 is emulated and much slower than"
                " float32 here")
    if precision == "float16" and not gpu:
        return ("warning: --precision float16: a CPU computes float16 by emulation, much slower"
                " than float32")
    return None


def split_cpu(count):
    """Show the CPU as `count` logical devices (to try --strategy mirrored without GPUs)."""
    if count < 1:
        raise ConfigError(f"--cpu-devices: expected at least 1, got {count}")
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def tf_config_workers():
    """How many tasks (chief and workers) TF_CONFIG names; 0 when it is not set."""
    text = os.environ.get("TF_CONFIG", "")
    try:
        cluster = json.loads(text).get("cluster", {}) if text.strip() else {}
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG: expected JSON with a \"cluster\" and a \"task\" ({error})")


def make_strategy(name):
    """The tf.distribute strategy for --strategy; create it before any other TensorFlow work."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = ("multiworker" if tf_config_workers() > 1 else
                "mirrored" if len(gpus) > 1 else "default")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Every GPU; without GPUs, every logical CPU device (see --cpu-devices).
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(None if gpus else cpus)
    if not tf_config_workers():
        raise ConfigError("--strategy multiworker: TF_CONFIG is not set; set it on every"
                          " machine as in docs/distributed.md")
    return tf.distribute.MultiWorkerMirroredStrategy()


def strategy_name(strategy):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "default"


def worker(strategy):
    """(task name, is chief) of this process: the chief writes checkpoints and summaries."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, True
    chief = resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())
    return f"{resolver.task_type}{resolver.task_id}", chief


def check_strategy(config, strategy):
    """ConfigError for settings `strategy` cannot run (checked before anything is written)."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(f"--batch-size: expected a multiple of the {replicas} replicas of"
                          f" --strategy {config.strategy}, got {config.batch_size}")
    share = config.batch_size // replicas
    if share % config.accumulate:
        raise ConfigError(f"--accumulate: expected a divisor of the {share} images that each of"
                          f" the {replicas} replicas of --strategy {config.strategy} computes,"
                          f" got {config.accumulate}")
    if replicas > 1 and device_settings(config)[0] and not all(
            "GPU" in device.upper() for device in strategy.extended.worker_devices):
        # TensorFlow: "Collectives are not yet implemented for CPU devices when compiling with
        # XLA"; on several CPU devices it fails on the first step.
        raise ConfigError(f"--xla on: XLA cannot compile the all-reduces between the CPU devices"
                          f" of --strategy {config.strategy} ({replicas} replicas); use --xla off"
                          f" (XLA is slower on a CPU anyway)")


def describe(config, strategy, why=""):
    """One line: the device, precision (and `why`), XLA and how the batch is split (printed at
    start)."""
    jit_compile, policy = device_settings(config)
    replicas = strategy.num_replicas_in_sync
    task = worker(strategy)[0]
    precision = resolve_precision(config.precision)[0] + (f" ({why})" if why else "")
    return (f"Compute: {'GPU' if has_gpu() else 'CPU'}, {precision}, XLA"
            f" {'on' if jit_compile else 'off'} (--xla {config.xla}); strategy"
            f" {strategy_name(strategy)}, {replicas} replica(s), {config.batch_size // replicas}"
            f" images each" + (f"; this is {task}" if task else ""))


def any_worker(strategy):
    """flag -> whether any worker's flag is set. Workers of a multi-worker run stop (and save)
    together when any one of them is asked to; this costs one tiny all-reduce per step."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool

    @tf.function
    def any_set(flag):
        votes = strategy.run(lambda: tf.cast(flag, tf.int32))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None) > 0
    return lambda flag: bool(any_set(tf.constant(flag)))
