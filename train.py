"""Train the completion network and the context discriminator in the paper's three phases.

Phase 1, iterations [0, Tc):       completion network alone, reconstruction loss.
Phase 2, iterations [Tc, Tc + Td): context discriminator alone, completion network frozen.
Phase 3, iterations [Tc + Td, T):  both; per iteration one discriminator and one completion
                                   network update, the latter on reconstruction + alpha * GAN.

    python train.py                          # default photos, cpu preset without a GPU
    python train.py --data-dir PHOTOS --session mine --preset quick
Running the same command again resumes; --fresh starts over (the old session is moved aside).
"""
import csv
import json
import errno
import fcntl
import glob
import os
import shutil
import signal
import socket
import sys
import time

import numpy as np

import runtime  # noqa: E402,F401  (settings TensorFlow reads at import)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm

import config as cfg
import data_loader
import utils
from model import build_completion_network, build_context_discriminator

PHASE_NAMES = {1: "phase 1 completion", 2: "phase 2 discriminator", 3: "phase 3 joint"}
HISTORY_FIELDS = ["iteration", "phase", "reconstruction", "discriminator", "adversarial",
                  "d_real", "d_completed", "images_per_second"]


MAX_ROLLBACKS = 3


class SessionError(ValueError):
    """A session on disk conflicts with the command; the message names the setting."""


class SaveError(RuntimeError):
    """A checkpoint could not be written (disk full, folder not writable)."""


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Losses (all from logits)

# Each loss is a mean over the global batch: per-example values summed and divided by the
# global batch size (tf.nn.compute_average_loss), so with the batch split over N devices the
# devices' losses, and gradients, add up to exactly the single-device ones.

def reconstruction_loss(images, outputs, masks, kind, global_batch=None):
    """Paper: || M_c * (C(x, M_c) - x) ||^2, averaged over pixels; l1 is the alternative."""
    diff = masks * (outputs - images)
    per_example = tf.reduce_mean(tf.square(diff) if kind == "mse" else tf.abs(diff), [1, 2, 3])
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def bce(logits, label, global_batch=None):
    labels = tf.fill(tf.shape(logits), float(label))
    per_example = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def discriminator_loss(real_logits, fake_logits, global_batch=None):
    """Cross-entropy: real (x, random local patch) -> 1, completed (patch around hole) -> 0."""
    return bce(real_logits, 1.0, global_batch) + bce(fake_logits, 0.0, global_batch)


def adversarial_loss(fake_logits, global_batch=None):
    """Non-saturating form of the paper's GAN term: -log D(completed)."""
    return bce(fake_logits, 1.0, global_batch)


def make_optimizer(config):
    if config.optimizer == "adadelta":
        return tf.keras.optimizers.Adadelta(learning_rate=config.learning_rate)
    return tf.keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=0.5)


# ---------------------------------------------------------------------------------------------
# One compiled step per phase

def device_settings(config):
    """(jit_compile, Keras dtype policy) for this machine: XLA and mixed precision as asked."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    jit_compile = config.xla == "on" or (config.xla == "auto" and gpu)
    policy = None
    if config.mixed_precision:
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
    return jit_compile, policy


def cpu_has_bfloat16():
    """True when the CPU computes bfloat16 natively (AVX-512 BF16, AMX or ARM BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def precision_warning(policy):
    if policy == "mixed_bfloat16" and not cpu_has_bfloat16():
        return ("warning: --mixed-precision: this CPU has no bfloat16 instructions (avx512_bf16"
                " or amx_bf16), so bfloat16 is emulated and much slower than float32 here")
    return None


def scaled(optimizer, loss):
    """float16 needs its loss scaled against underflow; the optimizer unscales the gradients."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def build_training(config, policy=None, synchronized=False):
    """The two networks and their optimizers, built (so checkpoints restore at once).

    Returns G, D, the two optimizers to checkpoint, and the two the steps apply: the same
    ones, or with float16 their loss-scaling wrappers (the checkpoint stays the same).
    synchronized: batch-norm statistics over the global batch (several replicas)."""
    G = build_completion_network(policy, synchronized)
    D = build_context_discriminator(config.image_size, config.local_size, policy, synchronized)
    g_opt, d_opt = make_optimizer(config), make_optimizer(config)
    step_opts = (g_opt, d_opt)
    if policy == "mixed_float16":
        step_opts = tuple(keras.optimizers.LossScaleOptimizer(o) for o in step_opts)
    for optimizer, network in zip(step_opts, (G, D)):
        optimizer.build(network.trainable_variables)
    return G, D, g_opt, d_opt, step_opts


def tf_config_workers():
    """How many tasks (chief and workers) TF_CONFIG names; 0 when it is not set."""
    text = os.environ.get("TF_CONFIG", "")
    try:
        cluster = json.loads(text).get("cluster", {}) if text.strip() else {}
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, AttributeError) as error:
        raise cfg.ConfigError(f"TF_CONFIG: expected JSON with a \"cluster\" and a \"task\""
                              f" ({error})")


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
        raise cfg.ConfigError("--strategy multiworker: TF_CONFIG is not set; set it on every"
                              " machine as in the README's 'Training on several GPUs or"
                              " machines'")
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


def split_cpu(count):
    """Show the CPU as `count` logical devices (to try --strategy mirrored without GPUs)."""
    if count < 1:
        raise cfg.ConfigError(f"--cpu-devices: expected at least 1, got {count}")
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def stop_agreement(strategy):
    """flag -> whether any worker's flag is set. Workers of a multi-worker run stop (and save)
    together when any one of them is asked to; this costs one tiny all-reduce per step."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool

    @tf.function
    def any_set(flag):
        votes = strategy.run(lambda: tf.cast(flag, tf.int32))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None) > 0
    return lambda flag: bool(any_set(tf.constant(flag)))


def make_steps(G, D, g_opt, d_opt, config, mean_pixel, jit_compile=False, strategy=None):
    """One compiled function per phase: batch -> dict of float32 metrics over the global batch.

    Each runs its per-replica step on every replica of `strategy` (default: the current one)
    and sums the replicas' shares of the losses. The per-replica step is traced once (all
    shapes are fixed) and, with jit_compile, compiled by XLA. With float16, g_opt and d_opt are
    keras.optimizers.LossScaleOptimizer wrappers."""
    strategy = strategy or tf.distribute.get_strategy()
    mean_pixel = tf.constant(mean_pixel, tf.float32)
    L, B = config.local_size, config.batch_size

    def discriminate(images, patches_at):
        return D([images, utils.crop_patches(images, patches_at, L)], training=True)

    def share_of_mean(values):
        return tf.nn.compute_average_loss(values[:, 0], global_batch_size=B)

    def discriminator_update(batch, completed):
        with tf.GradientTape() as tape:
            real = discriminate(batch["image"], batch["local_real"])
            fake = discriminate(completed, batch["local_fake"])
            loss = discriminator_loss(real, fake, B)
            scaled_loss = scaled(d_opt, loss)
        d_opt.apply_gradients(zip(tape.gradient(scaled_loss, D.trainable_variables),
                                  D.trainable_variables))
        return {"discriminator": loss, "d_real": share_of_mean(tf.sigmoid(real)),
                "d_completed": share_of_mean(tf.sigmoid(fake))}

    def completion_step(batch):
        images, masks = batch["image"], batch["mask"]
        with tf.GradientTape() as tape:
            outputs = G(utils.completion_input(images, masks, mean_pixel), training=True)
            loss = reconstruction_loss(images, outputs, masks, config.recon_loss, B)
            scaled_loss = scaled(g_opt, loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled_loss, G.trainable_variables),
                                  G.trainable_variables))
        return {"reconstruction": loss}

    def discriminator_step(batch):
        images, masks = batch["image"], batch["mask"]
        outputs = G(utils.completion_input(images, masks, mean_pixel), training=False)
        return discriminator_update(batch, utils.blend(images, outputs, masks))

    def joint_step(batch):
        images, masks = batch["image"], batch["mask"]
        with tf.GradientTape() as tape:
            outputs = G(utils.completion_input(images, masks, mean_pixel), training=True)
            completed = utils.blend(images, outputs, masks)
            recon = reconstruction_loss(images, outputs, masks, config.recon_loss, B)
            with tape.stop_recording():
                metrics = discriminator_update(batch, tf.stop_gradient(completed))
            # The same completion, judged by the just-updated discriminator.
            adv = adversarial_loss(discriminate(completed, batch["local_fake"]), B)
            loss = recon + config.alpha * adv
            scaled_loss = scaled(g_opt, loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled_loss, G.trainable_variables),
                                  G.trainable_variables))
        return dict(metrics, reconstruction=recon, adversarial=adv)

    def distributed(step):
        per_replica = tf.function(step, jit_compile=jit_compile)

        @tf.function
        def run(batch):
            shares = strategy.run(per_replica, args=(batch,))
            return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for name, value in shares.items()}
        return run

    completion_step, discriminator_step, joint_step = map(
        distributed, (completion_step, discriminator_step, joint_step))
    return {1: completion_step, 2: discriminator_step, 3: joint_step}


# ---------------------------------------------------------------------------------------------
# Sessions: saved_sessions/NAME, logs/NAME, results/NAME

def session_dirs(name):
    return {kind: os.path.join(kind, name) for kind in ("saved_sessions", "logs", "results")}


def move_aside(name):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in session_dirs(name).values():
        if os.path.exists(path):
            os.rename(path, f"{path}.old-{stamp}")
            print(f"Moved the old {path} aside to {path}.old-{stamp}")


def load_session(path, overrides):
    """The saved configuration with this command's flags applied; conflicts are errors."""
    try:
        saved = utils.read_json(path)
        stored = cfg.Config.from_dict(saved["config"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SessionError(f"{path}: unreadable session file ({error}); use --fresh to start over")
    config = cfg.resolve(stored, overrides)
    changes = cfg.differences(stored, config)
    for name, old, new in changes:
        if name in cfg.ARCHITECTURE_SETTINGS:
            raise SessionError(
                f"{cfg.flag(name)} {new} conflicts with session '{stored.session}', which was"
                f" trained with {cfg.flag(name)} {old}; drop the flag, or use --fresh or another"
                " --session")
    for name, old, new in changes:
        print(f"Changed on resume: {cfg.flag(name)} {old} -> {new}")
    return config, saved


def new_config(overrides):
    if "preset" in overrides:
        return cfg.resolve(cfg.preset_config(overrides["preset"]), overrides)
    if tf.config.list_physical_devices("GPU"):
        print("GPU visible: using the paper preset (choose with --preset paper|cpu|quick)")
        return cfg.resolve(cfg.preset_config("paper"), overrides)
    config = cfg.resolve(cfg.preset_config("cpu"), overrides)
    print(f"No GPU visible: using the cpu preset ({config.image_size} px, batch"
          f" {config.batch_size}, {config.total_iters} iterations; choose with --preset"
          " paper|cpu|quick)")
    return config


def photo_files(config):
    folders = config.data_dir or [data_loader.DEFAULT_DATA_DIR]
    if not config.data_dir:
        try:
            return data_loader.find_images(folders)
        except data_loader.DataError:
            count = data_loader.install_default_photos()
            print(f"Copied {count} default photos into {folders[0]}/photos (see data/README.md)")
    return data_loader.find_images(folders)


def lock_session(name):
    """Hold saved_sessions/NAME.lock while training: a second train.py on the same session stops
    at once. The operating system releases the lock when the process ends, even by kill -9."""
    os.makedirs("saved_sessions", exist_ok=True)
    handle = open(os.path.join("saved_sessions", f"{name}.lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SessionError(f"--session {name}: already being trained by {owner}; wait for it to"
                           " finish or stop it (Ctrl-C), or choose another --session")
    handle.seek(0)
    handle.truncate()
    handle.write(f"train.py (pid {os.getpid()} on {socket.gethostname()})")
    handle.flush()
    return handle


def resolve_session(overrides, fresh):
    """The configuration: the saved session's with the flags applied, or a new one; and the
    saved session file's contents ({} for a new session)."""
    session_file = os.path.join(session_dirs(overrides.get("session", "default"))
                                ["saved_sessions"], "session.json")
    if os.path.exists(session_file) and not fresh:
        return load_session(session_file, overrides)
    return new_config(overrides), {}


def prepare_session(config, saved, fresh, chief=True):
    """The photos, the mean pixel and the validation files; the chief also takes the session's
    lock, moves an old session aside (--fresh) and writes session.json."""
    name = config.session
    session_file = os.path.join(session_dirs(name)["saved_sessions"], "session.json")
    files = photo_files(config)
    if "mean_pixel" in saved:
        mean_pixel = np.asarray(saved["mean_pixel"], np.float32)
    else:  # also checks, before anything is written, that some photo decodes
        mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    lock = lock_session(name) if chief else None
    if fresh and chief:
        move_aside(name)
    print(f"Preset {config.preset}: {config.image_size} px, local {config.local_size},"
          f" holes {config.hole_min}-{config.hole_max} ({config.hole_shape}), batch {config.batch_size},"
          f" phases {config.tc} / {config.td} / {config.total_iters - config.tc - config.td}"
          f" iterations, {config.optimizer} lr {config.learning_rate}, alpha {config.alpha}")
    if config.val_dir:
        train_files, val_files = files, data_loader.find_images([config.val_dir], "--val-dir")
    else:
        train_files, val_files = data_loader.split_validation(files, config.seed)
    print(f"Photos: {len(train_files)} for training, {len(val_files)} for validation;"
          f" mean pixel {np.round(mean_pixel, 4).tolist()}")
    if chief:
        utils.write_json(session_file, {"config": cfg.dataclasses.asdict(config),
                                        "mean_pixel": mean_pixel.tolist()})
    return train_files, val_files, mean_pixel, lock


# ---------------------------------------------------------------------------------------------
# Checkpoints

class Checkpoints:
    """Rolling checkpoints (the newest 3) plus one kept at the end of every phase.

    A checkpoint is whole or ignored: TensorFlow writes the files first and the `checkpoint`
    index last (atomically); a save that fails has its files removed, and a restore skips
    damaged checkpoints for the next older one."""

    def __init__(self, checkpoint, directory, scratch=None):
        """scratch: where a non-chief worker writes its copy, deleted after every save (every
        worker of a multi-worker run takes part in a save; only the chief's copy is kept)."""
        self.checkpoint, self.directory, self.scratch = checkpoint, directory, scratch
        self.rolling = tf.train.CheckpointManager(
            checkpoint, os.path.join(scratch or directory, "checkpoints"), max_to_keep=3)
        self.phase_ends = tf.train.CheckpointManager(
            checkpoint, os.path.join(scratch or directory, "phase_ends"), max_to_keep=None)

    def latest(self):
        return utils.latest_checkpoint(self.directory)

    def candidates(self):
        found = glob.glob(os.path.join(self.directory, "checkpoints", "ckpt-*.index"))
        found += glob.glob(os.path.join(self.directory, "phase_ends", "ckpt-*.index"))
        paths = [p[:-len(".index")] for p in found if "_temp" not in p]
        return sorted(paths, key=utils.checkpoint_number, reverse=True)

    def restore(self):
        """Restore the newest checkpoint that reads back whole; None if there is none yet."""
        for partial in glob.glob(os.path.join(self.directory, "*", "ckpt-*_temp*")):
            shutil.rmtree(partial, ignore_errors=True)  # left by a save that was killed
        candidates = self.candidates()
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_nontrivial_match()
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:
                reason = str(error).strip().splitlines()[0][:160]
                print(f"warning: skipping damaged checkpoint {path} ({reason})", file=sys.stderr)
        if candidates:
            raise SessionError(f"--session {os.path.basename(self.directory)}: every checkpoint in"
                               f" {self.directory} is damaged; use --fresh to start over")
        return None

    def save(self, iteration, phase_end=False):
        manager = self.phase_ends if phase_end else self.rolling
        try:
            path = manager.save(checkpoint_number=iteration)
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)
            return path
        except (OSError, tf.errors.OpError) as error:
            for path in glob.glob(os.path.join(manager.directory, f"ckpt-{iteration}[._]*")):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
            raise SaveError(f"could not write checkpoint {iteration} to {manager.directory}"
                            f" ({reason}); the previous checkpoint {self.latest()} is intact")


# ---------------------------------------------------------------------------------------------
# Summaries: TensorBoard, results/ grids and loss curves

class Reporter:
    """Scalars, graphs and sample grids for TensorBoard, results/ and losses.csv. Only the chief
    writes (chief=False: the other workers of a multi-worker run keep quiet)."""

    def __init__(self, config, dirs, G, val_batch, mean_pixel, start, chief=True):
        self.config, self.G, self.chief = config, G, chief
        self.results = dirs["results"]
        self.writer = (tf.summary.create_file_writer(dirs["logs"]) if chief
                       else tf.summary.create_noop_writer())
        self.val = {k: tf.constant(v) for k, v in val_batch.items()}
        self.mean_pixel = tf.constant(mean_pixel)
        self.history_path = os.path.join(self.results, "losses.csv")
        self.history, self.traced = self.read_history() if chief else [], set()
        self.rewind(start)

    def rewind(self, iteration):
        """Forget what was recorded after `iteration` (a killed run's tail, or a rollback)."""
        self.history = [row for row in self.history if int(row["iteration"]) <= iteration]
        self.new_interval()

    def new_interval(self):
        self.pending, self.clock, self.images = [], time.perf_counter(), 0

    def read_history(self):
        if not os.path.exists(self.history_path):
            return []
        with open(self.history_path, newline="") as f:
            return list(csv.DictReader(f))

    def step(self, phase, step_fn, batch, iteration):
        """Run one step (exporting its graph the first time) and record its metrics."""
        if phase not in self.traced:
            self.traced.add(phase)
            tf.summary.trace_on(graph=True, profiler=False)
            metrics = step_fn(batch)
            with self.writer.as_default():
                tf.summary.trace_export(name=f"phase{phase}_step", step=iteration)
        else:
            metrics = step_fn(batch)
        metrics = {k: float(v) for k, v in metrics.items()}
        for name, value in metrics.items():
            if not np.isfinite(value):
                raise FloatingPointError(f"{name} loss is {value} at iteration {iteration}")
        self.pending.append(metrics)
        self.images += self.config.batch_size
        return metrics

    def scalars(self, phase, iteration):
        elapsed = time.perf_counter() - self.clock
        rate = self.images / elapsed if elapsed > 0 else 0.0
        means = {k: float(np.mean([m[k] for m in self.pending])) for k in self.pending[0]}
        with self.writer.as_default(step=iteration):
            tf.summary.scalar("phase", phase)
            tf.summary.scalar("speed/images_per_second", rate)
            for name in ("reconstruction", "discriminator", "adversarial"):
                if name in means:
                    tf.summary.scalar(f"loss/{name}", means[name])
            if "d_real" in means:
                tf.summary.scalar("discriminator/real", means["d_real"])
                tf.summary.scalar("discriminator/completed", means["d_completed"])
        self.history.append(dict({k: "" for k in HISTORY_FIELDS}, iteration=iteration,
                                 phase=phase, images_per_second=round(rate, 3),
                                 **{k: round(v, 6) for k, v in means.items()}))
        self.new_interval()
        return rate

    def samples(self, phase, iteration):
        if not self.chief:
            return
        outputs = self.G(utils.completion_input(self.val["image"], self.val["mask"],
                                                self.mean_pixel), training=False)
        grid = utils.sample_grid(self.val["image"], self.val["mask"], outputs, self.mean_pixel)
        with self.writer.as_default(step=iteration):
            tf.summary.image("samples/masked_input | output | completed | ground_truth",
                             grid[None], step=iteration)
        self.writer.flush()
        utils.save_png(os.path.join(self.results, f"phase{phase}_iter{iteration:07d}.png"), grid)
        self.save_history()

    def save_history(self):
        if not self.chief:
            return
        os.makedirs(self.results, exist_ok=True)
        with open(self.history_path + ".tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(self.history_path + ".tmp", self.history_path)
        plot_losses(self.history, self.results)


def plot_losses(history, folder):
    """results/NAME/losses_phaseP.png: the curves of each phase that has started."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {1: ["reconstruction"], 2: ["discriminator", "d_real", "d_completed"],
              3: ["reconstruction", "adversarial", "discriminator", "d_real", "d_completed"]}
    for phase, names in curves.items():
        rows = [r for r in history if int(r["phase"]) == phase]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], names):
            ax.plot([int(r["iteration"]) for r in rows], [float(r[name]) for r in rows])
            ax.set_title(name.replace("_", " "))
            ax.set_xlabel("iteration")
        fig.suptitle(PHASE_NAMES[phase])
        fig.tight_layout()
        fig.savefig(os.path.join(folder, f"losses_phase{phase}.png"), dpi=80)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The loop

class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to save and exit after the current step."""

    def __init__(self):
        self.signal = None
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


def check_strategy(config, strategy):
    """ConfigError for settings `strategy` cannot run (checked before anything is written)."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise cfg.ConfigError(f"--batch-size: expected a multiple of the {replicas} replicas of"
                              f" --strategy {config.strategy}, got {config.batch_size}")
    if replicas > 1 and device_settings(config)[0] and not all(
            "GPU" in device.upper() for device in strategy.extended.worker_devices):
        # TensorFlow: "Collectives are not yet implemented for CPU devices when compiling with
        # XLA"; on several CPU devices it fails on the first step.
        raise cfg.ConfigError(f"--xla on: XLA cannot compile the all-reduces between the CPU"
                              f" devices of --strategy {config.strategy} ({replicas} replicas);"
                              f" use --xla off (XLA is slower on a CPU anyway)")


def train(config, train_files, val_files, mean_pixel, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    check_strategy(config, strategy)
    task, chief = worker(strategy)
    dirs = session_dirs(config.session)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    jit_compile, policy = device_settings(config)
    warning = precision_warning(policy)
    if warning:
        print(warning, file=sys.stderr)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"Compute: {device}, {policy or 'float32'}, XLA {'on' if jit_compile else 'off'}"
          f" (--xla {config.xla}); strategy {strategy_name(strategy)}, {replicas} replica(s),"
          f" {config.batch_size // replicas} images each" + (f"; this is {task}" if task else ""))
    with strategy.scope():
        G, D, g_opt, d_opt, step_opts = build_training(config, policy, replicas > 1)
        iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        # Batches skipped after a non-finite loss (--on-nan rollback): element k of the data
        # stream is used at iteration k - data_offset.
        data_offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_offset")
        steps = make_steps(G, D, *step_opts, config, mean_pixel, jit_compile, strategy)
    checkpoint = tf.train.Checkpoint(completion_network=G, context_discriminator=D,
                                     completion_optimizer=g_opt, discriminator_optimizer=d_opt,
                                     iteration=iteration, data_offset=data_offset)
    scratch = None if chief else os.path.join(dirs["saved_sessions"], f".{task}")
    checkpoints = Checkpoints(checkpoint, dirs["saved_sessions"], scratch)
    any_worker = stop_agreement(strategy)
    restored = checkpoints.restore()
    n = int(iteration.numpy())
    if restored:
        print(f"Resuming session '{config.session}' at iteration {n}"
              f" ({PHASE_NAMES[config.phase(n)] if n < config.total_iters else 'done'})"
              f" from {restored}")
    if n >= config.total_iters:
        print(f"Session '{config.session}' already finished {config.total_iters} iterations;"
              " raise --total-iters to train longer, or use --fresh to start over")
        return 0

    try:
        val_batch = data_loader.validation_batch(val_files, config, source=f"--val-dir {config.val_dir}")
    except data_loader.DataError:
        if config.val_dir:
            raise
        val_batch = data_loader.validation_batch(train_files, config, source="--data-dir")
    reporter = Reporter(config, dirs, G, val_batch, mean_pixel, n, chief)

    def stream():
        first = (n + int(data_offset.numpy())) * config.batch_size
        return iter(strategy.distribute_datasets_from_function(
            lambda context: data_loader.training_dataset(train_files, config, first, context)))

    batches, stop, bar, rate, rollbacks = stream(), StopRequest(), None, 0.0, 0
    bar_phase = None
    try:
        while n < config.total_iters:
            phase = config.phase(n)
            low, high = config.phase_range(phase)
            if bar is None or bar_phase != phase:
                bar and bar.close()
                bar_phase = phase
                bar = tqdm(total=high - low, initial=n - low, desc=PHASE_NAMES[phase], unit="it",
                           dynamic_ncols=True, disable=not chief)
            try:
                metrics = reporter.step(phase, steps[phase], next(batches), n + 1)
            except FloatingPointError as error:
                # The weights are already damaged: never save them.
                if config.on_nan == "stop" or rollbacks == MAX_ROLLBACKS:
                    raise NonFiniteLoss(f"{error}; stopped without saving, the newest good"
                                        f" checkpoint is {checkpoints.latest()}. Resume with"
                                        " --on-nan rollback, or a lower --learning-rate")
                rollbacks += 1
                if checkpoints.restore() is None:
                    raise NonFiniteLoss(f"{error}, before any checkpoint to roll back to")
                skipped = n + 1 - int(iteration.numpy())
                data_offset.assign_add(skipped)
                n = int(iteration.numpy())
                reporter.rewind(n)
                batches, bar = stream(), bar.close()
                tqdm.write(f"warning: {error}; rolled back to iteration {n} and skipped the"
                           f" {skipped} batch(es) since", file=sys.stderr)
                continue
            n += 1
            iteration.assign(n)
            if n % config.summary_every == 0 or n == high:
                rate = reporter.scalars(phase, n)
            if n % config.sample_every == 0 or n == high:
                reporter.samples(phase, n)
            if n == high:
                checkpoints.save(n, phase_end=True)
            elif n % config.checkpoint_every == 0:
                checkpoints.save(n)
            bar.set_postfix({"iter": f"{n}/{config.total_iters}",
                             **{k: f"{v:.4g}" for k, v in metrics.items()},
                             "img/s": f"{rate:.2f}"}, refresh=False)
            bar.update(1)
            if any_worker(stop.signal is not None) and n < config.total_iters:
                bar.close()
                if n != high and n % config.checkpoint_every != 0:
                    checkpoints.save(n)
                reporter.save_history()
                signum = stop.signal or signal.SIGTERM  # another worker was stopped
                name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
                print(f"{name}: saved iteration {n} of {config.total_iters} to"
                      f" {checkpoints.latest()}; run the same command to resume")
                return 128 + signum
    finally:
        bar and bar.close()
    print(f"Finished {config.total_iters} iterations of session '{config.session}'. Checkpoint:"
          f" {checkpoints.latest()}; samples and loss curves: {dirs['results']}/;"
          f" TensorBoard: tensorboard --logdir logs")
    if data_loader.bad_files():
        print(f"Skipped {len(data_loader.bad_files())} undecodable file(s): "
              + ", ".join(data_loader.bad_files()))
    return 0


def main(argv=None):
    parser = cfg.build_parser(__doc__.split("\n")[0])
    parser.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                        help="show the CPU as N logical devices, to try --strategy mirrored"
                             " on a machine without GPUs (default: 1)")
    args = vars(parser.parse_args(argv))
    fresh, cpu_devices = args.pop("fresh"), args.pop("cpu_devices")
    try:
        split_cpu(cpu_devices)
        config, saved = resolve_session(args, fresh)
        strategy = make_strategy(config.strategy)
        check_strategy(config, strategy)
        chief = worker(strategy)[1]
        train_files, val_files, mean_pixel, _lock = prepare_session(config, saved, fresh, chief)
        return train(config, train_files, val_files, mean_pixel, strategy)
    except (cfg.ConfigError, data_loader.DataError, SessionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SaveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"error: cannot write {error.filename or 'an output file'}: {error.strerror};"
              " the checkpoints written so far are intact", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted before the next checkpoint could be written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
