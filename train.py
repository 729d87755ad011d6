"""Train the completion network and the context discriminator in the paper's three phases.

Phase 1, iterations [0, Tc):       completion network alone, reconstruction loss.
Phase 2, iterations [Tc, Tc + Td): context discriminator alone, completion network frozen.
Phase 3, iterations [Tc + Td, T):  both; per iteration one discriminator and one completion
                                   network update, the latter on reconstruction + alpha * GAN.

    python train.py                          # default photos, cpu preset without a GPU
    python train.py --data-dir PHOTOS --session mine --preset quick
Running the same command again resumes; --fresh starts over (the old session is moved aside).
"""
import errno
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import keras
import tensorflow as tf
from tqdm import tqdm

import config as cfg
import data_loader
import devices
import evaluate
import exports
import report
import session
import utils
from model import NETWORK_VERSION, build_completion_network, estimate_batch_norm_statistics
from phases import build_training, make_steps

MAX_ROLLBACKS = 3
BATCH_NORM_ELEMENTS = 10 ** 12  # where the batches of --bn-batches start in the data stream


class NonFiniteLoss(utils.UserError):
    """A loss became NaN or infinite."""
    status = 3


# ---------------------------------------------------------------------------------------------
# The networks' moving average and what a checkpoint holds


class MovingAverage:
    """--ema-decay D: a second completion network whose every weight (batch-norm statistics
    included) follows the trained one's, w_avg <- D * w_avg + (1 - D) * w, after each
    iteration that trains it. The first update copies the network (`updates` counts them, 0:
    none yet, so an average turned on when a session resumes starts from the network as it is).
    Built like G, under the same strategy: in cross-replica context the update writes every
    replica's copy."""

    def __init__(self, G, config, policy=None, synchronized=False, mean_pixel=(0.5, 0.5, 0.5)):
        self.network = build_completion_network(policy, synchronized, config.width_divisor,
                                                mean_pixel, config.upsampling)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")
        self.decay = tf.Variable(0.0, trainable=False, name="average_decay")  # the last update's
        pairs = list(zip(self.network.weights, G.weights))
        if [a.shape for a, _ in pairs] != [w.shape for _, w in pairs]:
            raise AssertionError("the moving average's weights do not match the network's")
        decay = float(config.ema_decay)

        @tf.function
        def update():
            d = tf.where(self.updates > 0, decay, 0.0)
            for average, weight in pairs:
                average.assign(tf.cast(d, average.dtype) * average
                               + tf.cast(1.0 - d, average.dtype) * weight)
            self.updates.assign_add(1)
            self.decay.assign(decay)
        self.update = update


@dataclass
class Training:
    """What a checkpoint holds, and the step functions that update it."""
    G: keras.Model
    D: keras.Model
    steps: dict
    checkpoint: tf.train.Checkpoint
    iteration: tf.Variable    # iterations done
    data_offset: tf.Variable  # batches skipped by rollbacks: iteration k uses batch k + offset
    average: MovingAverage = None  # --ema-decay's

    @property
    def shown(self):
        """The completion network that samples and evaluations use: the moving average with
        --ema-decay once it has been updated (phase 1 or 3), else the network itself (in a
        phase 2 that comes first, as after --init-from, the average is not made yet)."""
        return self.average.network if self.average and self.average.updates > 0 else self.G


def build(config, mean_pixel, strategy):
    jit_compile, policy = devices.device_settings(config)
    with strategy.scope():
        G, D, g_opt, d_opt, step_opts = build_training(
            config, policy, strategy.num_replicas_in_sync > 1, mean_pixel)
        iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        data_offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_offset")
        steps = make_steps(G, D, *step_opts, config, mean_pixel, jit_compile, strategy)
        average = (MovingAverage(G, config, policy, strategy.num_replicas_in_sync > 1,
                                 mean_pixel) if config.ema_decay else None)
    kept = {session.AVERAGE_NETWORK: average.network,
            session.AVERAGE_UPDATES: average.updates,
            session.AVERAGE_DECAY: average.decay} if average else {}
    checkpoint = tf.train.Checkpoint(completion_network=G, context_discriminator=D,
                                     completion_optimizer=g_opt, discriminator_optimizer=d_opt,
                                     iteration=iteration, data_offset=data_offset, **kept)
    return Training(G, D, steps, checkpoint, iteration, data_offset, average)


# ---------------------------------------------------------------------------------------------
# The loop: the paper's Algorithm 1, resumable


def train(config, train_files, val_files, mean_pixel, strategy=None, why=""):
    """The paper's Algorithm 1, from where session `config.session` stopped: each iteration runs
    its phase's step (1: completion network, reconstruction loss; 2: discriminator,
    cross-entropy; 3: both, reconstruction + alpha * GAN), then its report and checkpoint.
    Returns the exit status."""
    strategy = strategy or tf.distribute.get_strategy()
    task, chief = devices.worker(strategy)
    run = start(config, mean_pixel, strategy, why)
    checkpoints = session.Checkpoints(run.checkpoint, session.folder(config.session),
                                      None if chief else task, config.keep_checkpoints)
    n = resume(config, run, checkpoints)
    if n >= config.total_iters:
        print(f"Session '{config.session}' already finished {config.total_iters} iterations;"
              " raise --total-iters to train longer, or use --fresh to start over")
        return 0
    reporter = report.Reporter(config, session.logs_dir(config.session),
                               session.results_dir(config.session), lambda: run.shown,
                               validation_batch(config, train_files, val_files), mean_pixel, n,
                               chief, held_out=held_out(config, val_files, mean_pixel, chief))
    estimate = batch_norm_estimator(config, train_files, mean_pixel,
                                    *([run.G, run.average.network] if run.average else [run.G]))
    batches, rollbacks = stream(config, train_files, strategy, n, run), 0
    learning_rate, agree = None, devices.any_worker(strategy)
    with StopRequest(strategy) as stop, report.Progress(config, n, chief) as progress, reporter:
        while n < config.total_iters:
            phase, wanted = config.phase(n), learning_rates(config, n)
            if wanted != learning_rate:
                if learning_rate is not None:
                    tqdm.write(f"Iteration {n}: learning rate {wanted[0]:g} (--lr-drops)")
                learning_rate = set_learning_rates(run, wanted)
            with reporter.graph(phase, n + 1):
                metrics = {k: float(v) for k, v in run.steps[phase](next(batches)).items()}
            if not all(np.isfinite(v) for k, v in metrics.items() if k in report.LOSSES):
                rollbacks += 1
                n = roll_back(config, run, checkpoints, reporter, n + 1, metrics, rollbacks)
                batches = stream(config, train_files, strategy, n, run)
                learning_rate = set_learning_rates(run, learning_rates(config, n))
                continue
            if run.average and phase != 2:
                run.average.update()
            n += 1
            run.iteration.assign(n)
            phase_end = n == config.phase_range(phase)[1]
            if estimate and phase != 2 and shown_or_saved(config, n, phase_end):
                estimate()
            reporter.record(phase, n, dict(metrics, learning_rate=learning_rate[0],
                                           d_learning_rate=learning_rate[1]), phase_end)
            if plateau_due(config, n):
                stalled = plateau(config, reporter, n) if chief else None
                if agree(stalled is not None):
                    drop_learning_rate(config, n, stalled, mean_pixel, chief)
                    learning_rate = set_learning_rates(run, learning_rates(config, n))
            checkpoints.save_if_due(n, config.checkpoint_every, phase_end)
            progress.held_out = reporter.last_eval
            progress.update(n, metrics, reporter.rate)
            if stop.requested() and n < config.total_iters:
                progress.close()
                estimating = bool(estimate) and phase != 2 and checkpoints.saved_at != n
                announce_stop(stop.signal, n, config, checkpoints, estimating)
                if estimating:
                    estimate()
                return stop_and_save(stop.signal, n, config, checkpoints, reporter)
    finish(config, checkpoints)
    return 0


def learning_rates(config, n):
    """The completion network's and the discriminator's learning rates at iteration n."""
    return config.learning_rate_at(n), config.d_learning_rate_at(n)


def plateau_due(config, n):
    """Whether iteration n, counted alike on every worker, is one where --lr-plateau looks at
    the held-out evaluation just made: one inside phase 1 (a drop at its end would only lower
    the rates of phases 2 and 3)."""
    return bool(config.lr_plateau and n < config.tc and n % config.eval_every == 0)


def plateau(config, reporter, n):
    """With the held-out evaluation at iteration n: (its hole L1, the best before it, how many
    evaluations in a row have not gone below their best) when that count reaches --lr-plateau
    since the last learning-rate drop, else None. The best is over all of phase 1's
    evaluations in this session (eval.csv's, across resumes)."""
    scores = [(int(row["iteration"]), float(row["l1_hole"])) for row in reporter.eval_history
              if row["method"] == "model" and int(row["phase"]) == 1 and row.get("l1_hole")]
    if n in config.lr_drops or not scores or scores[-1][0] != n:
        return None
    last_drop = max((drop for drop in config.lr_drops if drop < n), default=0)
    stalled, best = 0, float("inf")
    for iteration, value in scores:
        if iteration > last_drop:
            stalled = stalled + 1 if value >= best else 0
        previous, best = best, min(best, value)
    return (scores[-1][1], previous, stalled) if stalled >= config.lr_plateau else None


def drop_learning_rate(config, n, stalled, mean_pixel, chief):
    """Add iteration n to the session's --lr-drops (in session.json, so that a resumed run
    keeps the drop) and say why. `stalled`: plateau()'s figures (None on the other workers)."""
    config.lr_drops = sorted([*config.lr_drops, n])
    if chief:
        session.save_config(config, mean_pixel)
    why = (f" hole L1 {stalled[0]:.4f} on the validation photos, {stalled[2]} evaluation(s)"
           f" in a row not below the best {stalled[1]:.4f};" if stalled else "")
    tqdm.write(f"Iteration {n}:{why} learning rate {config.learning_rate_at(n):g} from the next"
               f" step (--lr-plateau {config.lr_plateau}; session.json's --lr-drops now"
               f" {' '.join(map(str, config.lr_drops))})")


def set_learning_rates(run, values):
    """The two optimizers' learning rates. Their checkpoints hold them too: what --learning-rate,
    --d-learning-rate and --lr-drops say wins over what a restored checkpoint says."""
    for optimizer, value in zip((run.checkpoint.completion_optimizer,
                                 run.checkpoint.discriminator_optimizer), values):
        optimizer.learning_rate = value
    return values


def shown_or_saved(config, n, phase_end):
    """Whether iteration n writes a checkpoint, a sample grid or a held-out evaluation."""
    return phase_end or any(every and n % every == 0 for every in (
        config.checkpoint_every, config.sample_every, config.eval_every))


def batch_norm_estimator(config, files, mean_pixel, *networks):
    """With --bn-batches N, a function that sets the batch-norm statistics of the completion
    networks given (the network and its moving average, if any) to their mean over N fixed training batches
    (elements the training stream never reaches), computed on a plain copy (outside any
    distribution strategy) and copied back; None with --bn-batches 0."""
    if not config.bn_batches:
        return None
    batches = data_loader.training_dataset(files, config, BATCH_NORM_ELEMENTS)
    inputs = [utils.completion_input(b["image"], b["mask"], mean_pixel)
              for b in batches.take(config.bn_batches)]
    copy = build_completion_network(width_divisor=config.width_divisor, mean_pixel=mean_pixel,
                                    upsampling=config.upsampling)

    def estimate():
        for network in networks:
            copy.set_weights(network.get_weights())
            estimate_batch_norm_statistics(copy, inputs)
            network.set_weights(copy.get_weights())
    return estimate


def start(config, mean_pixel, strategy, why=""):
    """Seeds and determinism, the compute line (the precision with `why`), then the networks,
    optimizers and steps."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    warning = devices.precision_warning(config.precision)
    if warning:
        print(warning, file=sys.stderr)
    print(devices.describe(config, strategy, why))
    return build(config, mean_pixel, strategy)


def resume(config, run, checkpoints):
    """Restore the newest whole checkpoint; without one, start from --init-from's network, if
    given. Returns the iteration to start from."""
    restored = checkpoints.restore()
    n = int(run.iteration.numpy())
    if restored:
        where = cfg.PHASE_NAMES[config.phase(n)] if n < config.total_iters else "done"
        print(f"Resuming session '{config.session}' at iteration {n} ({where}) from {restored}")
    elif config.init_from:
        pretrained = exports.read(config.init_from, "--init-from")[0]
        try:
            run.G.set_weights(pretrained.get_weights())
        except ValueError as error:
            raise utils.UserError(f"--init-from {config.init_from}: its completion network does"
                                  f" not fit this session's (--width-divisor"
                                  f" {config.width_divisor}): {error}")
        print(f"Starting from the completion network of {config.init_from}")
    return n


def validation_batch(config, train_files, val_files):
    """The fixed batch of the sample grids: from the validation photos, or, when none of them
    decodes (and no --val-dir was given), from the training photos."""
    try:
        return data_loader.validation_batch(val_files, config,
                                            source=f"--val-dir {config.val_dir}")
    except data_loader.DataError:
        if config.val_dir:
            raise
        return data_loader.validation_batch(train_files, config, source="--data-dir")


def held_out(config, val_files, mean_pixel, chief):
    """The photos and holes evaluated during training: evaluate.py's, on the validation photos
    (only the chief evaluates)."""
    if not chief or not config.eval_every:
        return []
    return evaluate.held_out(val_files, config, evaluate.DEFAULT_COUNT, config.hole_shape,
                             evaluate.DEFAULT_SEED, mean_pixel, hole_sets=config.eval_hole_sets)


def stream(config, files, strategy, n, run):
    """The batches from iteration n on, split over the strategy's replicas."""
    first = (n + int(run.data_offset.numpy())) * config.batch_size
    return iter(strategy.distribute_datasets_from_function(
        lambda context: data_loader.training_dataset(files, config, first, context)))


def roll_back(config, run, checkpoints, reporter, iteration, metrics, rollbacks):
    """After a non-finite loss at `iteration`: NonFiniteLoss with --on-nan stop (the weights
    are damaged: never saved), else back to the newest checkpoint, skipping the batches since.
    Returns the iteration to go on from."""
    name, value = next((k, v) for k, v in metrics.items()
                       if k in report.LOSSES and not np.isfinite(v))
    error = f"{name} loss is {value} at iteration {iteration}"
    if config.on_nan == "stop" or rollbacks > MAX_ROLLBACKS:
        raise NonFiniteLoss(f"{error}; stopped without saving, the newest good checkpoint is"
                            f" {checkpoints.latest()}. Resume with --on-nan rollback, or a lower"
                            " --learning-rate")
    if checkpoints.restore() is None:
        raise NonFiniteLoss(f"{error}, before any checkpoint to roll back to")
    n = int(run.iteration.numpy())
    run.data_offset.assign_add(iteration - n)
    reporter.rewind(n)
    tqdm.write(f"warning: {error}; rolled back to iteration {n} and skipped the"
               f" {iteration - n} batch(es) since", file=sys.stderr)
    return n


class StopRequest:
    """Ctrl-C or SIGTERM ask the loop to save and exit after the current step; a second one
    interrupts at once. The previous handlers come back when the block ends. With several
    workers, all stop together when any one is asked to."""

    def __init__(self, strategy):
        self.signal, self.any_worker = None, devices.any_worker(strategy)

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def requested(self):
        requested = self.any_worker(self.signal is not None)
        if requested and self.signal is None:
            self.signal = signal.SIGTERM  # another worker was stopped
        return requested


def signal_name(signum):
    return "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"


def announce_stop(signum, n, config, checkpoints, estimating):
    """Say at once what the stop does before it returns: the batch-norm estimate of
    --bn-batches can take a minute of a CPU's time with a large network."""
    if checkpoints.saved_at == n:
        return
    first = (f", its batch-norm statistics over {config.bn_batches} batches first (--bn-batches)"
             if estimating else "")
    print(f"{signal_name(signum)} at iteration {n}: saving a checkpoint{first}; press Ctrl-C"
          " again to quit at once without it", flush=True)


def stop_and_save(signum, n, config, checkpoints, reporter):
    if checkpoints.saved_at != n:
        checkpoints.save(n)
    reporter.save_history()
    print(f"{signal_name(signum)}: saved iteration {n} of {config.total_iters} to"
          f" {checkpoints.latest()}; run the same command to resume")
    return 128 + signum


def finish(config, checkpoints):
    print(f"Finished {config.total_iters} iterations of session '{config.session}'. Checkpoint:"
          f" {checkpoints.latest()}; samples and loss curves:"
          f" {session.results_dir(config.session)}/; TensorBoard: tensorboard --logdir"
          f" {session.LOGS}")
    bad = data_loader.BAD_FILES.sorted()
    if bad:
        print(f"Skipped {len(bad)} undecodable file(s): " + ", ".join(bad))


# ---------------------------------------------------------------------------------------------
# The command line


def prepare(config, saved, fresh, chief=True):
    """The photos, their mean pixel and the validation photos, checked before anything is
    written; then the session on disk (lock, --fresh, session.json)."""
    files = data_loader.photo_files(config.data_dir)
    if "mean_pixel" in saved:
        mean_pixel = np.asarray(saved["mean_pixel"], np.float32)
    elif config.init_from:  # the pretrained network's: its weights expect that input
        mean_pixel, pretrained, meta = exports.read_metadata(config.init_from, "--init-from")
        for name in ("width_divisor", "upsampling"):
            if getattr(pretrained, name) != getattr(config, name):
                raise utils.UserError(f"--init-from {config.init_from}: a network of"
                                      f" {cfg.flag(name)} {getattr(pretrained, name)}, not this"
                                      f" session's {getattr(config, name)}")
        if meta.get("network_version", 1) != NETWORK_VERSION:
            raise utils.UserError(f"--init-from {config.init_from}: an export of completion"
                                  f" network version {meta.get('network_version', 1)}; this is"
                                  f" version {NETWORK_VERSION} (see docs/paper.md), whose weights"
                                  " differ in meaning")
        data_loader.compute_mean_pixel(files, config.seed)  # checks that some photo decodes
    else:  # also checks that some photo decodes
        mean_pixel = data_loader.compute_mean_pixel(files, config.seed)
    train_files, val_files, source = data_loader.validation_photos(config, files)
    data_loader.draw_probabilities(train_files, config.data_dir, config.data_weights)  # checks
    lock = session.start(config, mean_pixel, fresh, chief)
    holes = f"holes {config.hole_min}-{config.hole_max} ({config.hole_shape})"
    if config.max_holes > 1:
        holes += f", 1 to {config.max_holes} per image"
    batch = f"batch {config.batch_size}"
    if config.accumulate > 1:
        batch += (f" in {config.accumulate} micro-batches of"
                  f" {config.batch_size // config.accumulate}")
    print(f"Preset {config.preset}: {config.image_size} px, local {config.local_size}, {holes},"
          f" {batch}, phases {config.tc} / {config.td} /"
          f" {config.total_iters - config.tc - config.td} iterations, {config.optimizer} lr"
          f" {config.learning_rate}" + (
              f" (x {config.lr_drop_factor:g} after iteration"
              f" {', '.join(map(str, config.lr_drops))})" if config.lr_drops else "")
          + (f", discriminator lr {config.d_learning_rate}" if config.d_learning_rate else "")
          + f", alpha {config.alpha}"
          + (f", widths / {config.width_divisor}" if config.width_divisor > 1 else "")
          + departures(config))
    weights = (f", folders drawn in the ratio {':'.join(f'{w:g}' for w in config.data_weights)}"
               if config.data_weights else "")
    print(f"Photos: {len(train_files)} for training{weights}, {len(val_files)} for validation"
          f" ({source}); mean pixel {utils.rounded(mean_pixel)}")
    return train_files, val_files, mean_pixel, lock


def departures(config):
    """The start-up line's tail: the options that depart from the paper's GAN, if any."""
    parts = ["hinge loss, spectrally normalized discriminator"
             if config.gan_loss == "hinge" else "",
             "joint discriminator batches" if config.d_batches == "joint" else "",
             f"discriminator phase-3 loss x {config.d_loss_scale:g}"
             if config.d_loss_scale != 1 else "",
             f"label smoothing {config.label_smoothing:g}" if config.label_smoothing else "",
             f"checkerboard penalty {config.checkerboard_penalty:g}"
             if config.checkerboard_penalty else "",
             f"stripes penalty {config.stripes_penalty:g}" if config.stripes_penalty else "",
             f"coarse loss {config.coarse_loss:g}" if config.coarse_loss else "",
             f"structural loss {config.ssim_loss:g}" if config.ssim_loss else "",
             f"colour loss {config.colour_loss:g}" if config.colour_loss else "",
             "reconstruction on whitened colours" if config.recon_colour == "whitened" else "",
             "low-passed discriminator input" if config.d_lowpass else "",
             "resize upsampling" if config.upsampling == "resize" else "",
             "checkerboard-free transposed init"
             if config.transposed_init != "default" and config.upsampling == "transposed"
             else "",
             f"moving average of the completion network (decay {config.ema_decay:g})"
             if config.ema_decay else ""]
    return "".join(f", {part}" for part in parts if part)


def precision_reason(requested, saved):
    """Why training computes in its precision, for the Compute line: --precision as given (or
    what auto found), the session's own, or the default."""
    if requested is not None:
        return devices.resolve_precision(requested)[1]
    if saved:
        return "the session's own; --precision changes it"
    if devices.cpu_has_bfloat16() and not devices.has_gpu():
        return ("the default; --precision bfloat16 trains faster on this CPU, see"
                " docs/training.md, \"Precision\"")
    return "the default"


def parse_args(argv):
    """The settings given as flags (a dict of Config fields), --fresh and --cpu-devices; nothing
    is read or written."""
    parser = cfg.build_parser(__doc__.split("\n")[0])
    parser.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                        help="show the CPU as N logical devices, to try --strategy mirrored"
                             " on a machine without GPUs (default: 1)")
    args = vars(parser.parse_args(argv))
    fresh, cpu_devices = args.pop("fresh"), args.pop("cpu_devices")
    return args, fresh, cpu_devices


def main(argv=None):
    args, fresh, cpu_devices = parse_args(argv)
    try:
        devices.split_cpu(cpu_devices)
        requested = args.get("precision")
        config, saved = session.resolve(args, fresh, devices.has_gpu())
        why = precision_reason(requested, saved)
        strategy = devices.make_strategy(config.strategy)
        devices.check_strategy(config, strategy)
        train_files, val_files, mean_pixel, _lock = prepare(
            config, saved, fresh, devices.worker(strategy)[1])
        return train(config, train_files, val_files, mean_pixel, strategy, why)
    except utils.UserError as error:
        return utils.print_error(error)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"error: cannot write {error.filename or 'an output file'}: {error.strerror};"
              " the checkpoints written so far are intact", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted before the next checkpoint could be written", file=sys.stderr)
        if __name__ == "__main__":
            exit_at_once(130)
        return 130


def exit_at_once(status):
    """End the process now, as a second Ctrl-C asks: Python's clean-up would first wait, for
    seconds, for the input pipelines' threads to finish the photos they are decoding. The
    event files are flushed already (the reporter's block), and nothing else is left to write."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
