"""A training session on disk. This is the only module that knows where a session's files are:

    saved_sessions/NAME/session.json    the resolved configuration and the mean pixel
    saved_sessions/NAME/checkpoints/    the newest checkpoints (networks, optimizers, iteration,
                                        the moving average of --ema-decay): 3, or
                                        --keep-checkpoints
    saved_sessions/NAME/phase_ends/     one checkpoint kept at the end of every phase
    saved_sessions/NAME/onnx/           iteration-N.onnx: the completion network of checkpoint N
                                        converted for ONNX Runtime (engine.py), on first use
    saved_sessions/NAME.lock            held while a train.py trains the session
    logs/NAME/                          TensorBoard event files
    results/NAME/                       sample grids, losses.csv and loss curves, eval.csv and
                                        eval.png (the held-out scores during training)
    results/NAME/eval/                  evaluate.py's tables and figures

All paths are relative to the current folder, where the user runs the scripts.
"""
import dataclasses
import fcntl
import glob
import os
import shutil
import socket
import sys
import time

import numpy as np
import tensorflow as tf

import config as cfg
import devices
import utils
from model import NETWORK_VERSION, build_completion_network

SESSIONS, LOGS, RESULTS = "saved_sessions", "logs", "results"
ROLLING, PHASE_ENDS = "checkpoints", "phase_ends"
# A checkpoint's moving average of the completion network (train.py --ema-decay) and its count
AVERAGE_NETWORK, AVERAGE_UPDATES, AVERAGE_DECAY = (
    "average_network", "average_updates", "average_decay")


class SessionError(utils.UserError):
    """A session on disk conflicts with the command or cannot be used; the message says how."""


class SaveError(utils.UserError):
    """A checkpoint could not be written (disk full, folder not writable)."""
    status = 1


# ---------------------------------------------------------------------------------------------
# The layout


def folder(name):
    return os.path.join(SESSIONS, name)


def session_file(name):
    return os.path.join(folder(name), "session.json")


def logs_dir(name):
    return os.path.join(LOGS, name)


def results_dir(name):
    return os.path.join(RESULTS, name)


def eval_history(name):
    """The held-out scores train.py --eval-every records during training."""
    return os.path.join(RESULTS, name, "eval.csv")


def eval_dir(name):
    """Where evaluate.py writes the evaluation of session NAME (of an export: NAME is
    exports.results_name's, model-NAME or pretrained-wallpapers)."""
    return os.path.join(RESULTS, name, "eval")


def onnx_file(name, iteration=None):
    """Where complete.py, evaluate.py and serve.py keep the completion network of session NAME's
    checkpoint of `iteration` (by default the newest) converted to ONNX."""
    if iteration is None:
        iteration = checkpoint_number(latest_checkpoint(folder(name)))
    return os.path.join(folder(name), "onnx", f"iteration-{iteration}.onnx")


def prune_onnx(name):
    """Delete the ONNX conversions of checkpoints that session NAME no longer has (the rolling
    checkpoints keep only the newest few)."""
    kept = {checkpoint_number(path) for path in all_checkpoints(folder(name))}
    for path in glob.glob(os.path.join(folder(name), "onnx", "iteration-*.onnx")):
        number = os.path.basename(path)[len("iteration-"):-len(".onnx")]
        if number.isdigit() and int(number) not in kept:
            try:
                os.remove(path)
            except OSError:
                pass  # read-only or already gone: a stale cache costs only disk space


def checkpoint_number(path):
    return int(path.rsplit("-", 1)[1]) if path else -1


def latest_checkpoint(directory):
    """The newest checkpoint in a session folder, rolling or phase end; None if there is none."""
    candidates = [tf.train.latest_checkpoint(os.path.join(directory, sub))
                  for sub in (ROLLING, PHASE_ENDS)]
    return max(candidates, key=checkpoint_number)


def all_checkpoints(directory):
    """Every checkpoint of a session folder, rolling or phase end, newest first."""
    found = [path for sub in (ROLLING, PHASE_ENDS)
             for path in glob.glob(os.path.join(directory, sub, "ckpt-*.index"))]
    paths = [p[:-len(".index")] for p in found if "_temp" not in p]
    return sorted(paths, key=checkpoint_number, reverse=True)


# ---------------------------------------------------------------------------------------------
# Starting and resuming


def resolve(overrides, fresh, gpu=False):
    """The configuration: the saved session's with the flags applied, or a new one; and the
    saved session file's contents ({} for a new session). Its precision is float32, bfloat16
    or float16, never auto: a session keeps what it started with, on any machine."""
    path = session_file(overrides.get("session", "default"))
    if os.path.exists(path) and not fresh:
        return resume(path, overrides, gpu)
    return concrete(new_config(overrides, gpu), gpu), {}


def concrete(config, gpu):
    """`config` with --precision auto (or --mixed-precision) resolved for this machine."""
    return dataclasses.replace(config,
                               precision=devices.resolve_precision(config.precision, gpu)[0])


def resume(path, overrides, gpu=False):
    """The saved configuration with this command's flags applied; conflicts are errors."""
    try:
        saved = utils.read_json(path)
        stored = concrete(cfg.Config.from_dict(saved["config"]), gpu)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SessionError(f"{path}: unreadable session file ({error}); use --fresh to start over")
    check_network_version(saved, stored.session, "use --fresh or another --session")
    config = concrete(cfg.resolve(stored, overrides), gpu)
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


def record(config, mean_pixel):
    """The contents of session.json."""
    return {"config": config.to_dict(), "mean_pixel": np.asarray(mean_pixel).tolist(),
            "network_version": NETWORK_VERSION}


def check_network_version(saved, name, remedy):
    """SessionError for a session whose checkpoints hold an earlier completion network."""
    version = saved.get("network_version", 1)
    if version != NETWORK_VERSION:
        raise SessionError(
            f"--session {name}: trained with completion network version {version}; this is"
            f" version {NETWORK_VERSION} (the official network's padding, batch-norm epsilon and"
            f" mean-centred input, see docs/paper.md), whose weights differ in meaning; {remedy}")


def new_config(overrides, gpu=False):
    if "preset" in overrides:
        return cfg.resolve(cfg.preset_config(overrides["preset"]), overrides)
    if gpu:
        print("GPU visible: using the paper preset (choose with --preset paper|cpu|quick)")
        return cfg.resolve(cfg.preset_config("paper"), overrides)
    config = cfg.resolve(cfg.preset_config("cpu"), overrides)
    print(f"No GPU visible: using the cpu preset ({config.image_size} px, batch"
          f" {config.batch_size}, {config.total_iters} iterations; choose with --preset"
          " paper|cpu|quick)")
    return config


def start(config, mean_pixel, fresh, chief=True):
    """Take the session's lock, move an old session aside (--fresh) and write session.json.
    Other workers of a multi-worker run (chief=False) write nothing. Returns the lock."""
    if not chief:
        return None
    handle = lock(config.session)
    if fresh:
        move_aside(config.session)
    utils.write_json(session_file(config.session), record(config, mean_pixel))
    return handle


def save_config(config, mean_pixel):
    """Rewrite session.json with `config` (what training itself changes: --lr-plateau's drops)."""
    utils.write_json(session_file(config.session), record(config, mean_pixel))


def lock(name):
    """Hold saved_sessions/NAME.lock while training: a second train.py on the same session stops
    at once. The operating system releases the lock when the process ends, even by kill -9."""
    os.makedirs(SESSIONS, exist_ok=True)
    handle = open(os.path.join(SESSIONS, f"{name}.lock"), "a+")
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


def move_aside(name):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (folder(name), logs_dir(name), results_dir(name)):
        if os.path.exists(path):
            os.rename(path, f"{path}.old-{stamp}")
            print(f"Moved the old {path} aside to {path}.old-{stamp}")


# ---------------------------------------------------------------------------------------------
# Checkpoints


class Checkpoints:
    """Rolling checkpoints (the newest `keep`, 0: all) plus one kept at the end of every phase.

    A checkpoint is whole or ignored: TensorFlow writes the files first and the `checkpoint`
    index last (atomically); a save that fails has its files removed, and a restore skips
    damaged checkpoints for the next older one."""

    def __init__(self, checkpoint, directory, task=None, keep=3):
        """task: a non-chief worker of a multi-worker run, which takes part in every save
        (all workers do) but writes to a scratch folder deleted at once."""
        self.checkpoint, self.directory, self.saved_at = checkpoint, directory, None
        self.scratch = os.path.join(directory, f".{task}") if task else None
        self.rolling = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.scratch or directory, ROLLING),
            max_to_keep=keep or None)
        self.phase_ends = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.scratch or directory, PHASE_ENDS), max_to_keep=None)

    def latest(self):
        return latest_checkpoint(self.directory)

    def candidates(self):
        return all_checkpoints(self.directory)

    def restore(self):
        """Restore the newest checkpoint that reads back whole; None if there is none yet."""
        for partial in glob.glob(os.path.join(self.directory, "*", "ckpt-*_temp*")):
            shutil.rmtree(partial, ignore_errors=True)  # left by a save that was killed
        candidates = self.candidates()
        for path in candidates:
            try:
                status = self.checkpoint.restore(path).assert_nontrivial_match()
                if not hasattr(self.checkpoint, AVERAGE_NETWORK) and moving_average(path):
                    status.expect_partial()  # --ema-decay turned off: its average is dropped
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:
                reason = str(error).strip().splitlines()[0][:160]
                print(f"warning: skipping damaged checkpoint {path} ({reason})", file=sys.stderr)
        if candidates:
            raise SessionError(f"--session {os.path.basename(self.directory)}: every checkpoint in"
                               f" {self.directory} is damaged; use --fresh to start over")
        return None

    def save_if_due(self, iteration, every, phase_end):
        """At a phase end (kept), or every `every` iterations (rolling)."""
        if phase_end or iteration % every == 0:
            self.save(iteration, phase_end)

    def save(self, iteration, phase_end=False):
        manager = self.phase_ends if phase_end else self.rolling
        try:
            path = manager.save(checkpoint_number=iteration)
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)
            self.saved_at = iteration
            return path
        except (OSError, tf.errors.OpError) as error:
            for path in glob.glob(os.path.join(manager.directory, f"ckpt-{iteration}[._]*")):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
            raise SaveError(f"could not write checkpoint {iteration} to {manager.directory}"
                            f" ({reason}); the previous checkpoint {self.latest()} is intact")


# ---------------------------------------------------------------------------------------------
# Using a trained session


def load_averaged_network(name, iterations, raw=False):
    """(completion network, mean pixel, config) of session NAME whose weights (batch-norm
    statistics included) are the mean of its checkpoints of these iterations: checkpoint
    averaging, complete.py --export --average (raw: as load_completion_network)."""
    network, mean_pixel, config = load_completion_network(name, iterations[0], raw)
    total = [w.astype(np.float64) for w in network.get_weights()]
    for iteration in iterations[1:]:
        total = [t + w for t, w in zip(total, load_completion_network(name, iteration, raw)[0]
                                        .get_weights())]
    network.set_weights([(t / len(iterations)).astype(np.float32) for t in total])
    return network, mean_pixel, config


def checkpoint_path(name, iteration=None):
    """The path of session NAME's newest checkpoint, or of the one saved at `iteration`."""
    directory = folder(name)
    path = latest_checkpoint(directory)
    if path is None:
        raise SessionError(f"--session {name}: no checkpoint in {directory}/ yet; train longer"
                           " first")
    if iteration is not None:
        paths = {checkpoint_number(path): path for path in all_checkpoints(directory)}
        if iteration not in paths:
            raise SessionError(f"--session {name}: no checkpoint of iteration {iteration}; it has"
                               f" {', '.join(map(str, sorted(paths)))}")
        path = paths[iteration]
    return path


def moving_average(path):
    """The moving average of --ema-decay in checkpoint `path`: {"decay": of its last update,
    "updates": how many}, or None if it has none."""
    reader = tf.train.load_checkpoint(path)
    values = {}
    for name, key in (("decay", AVERAGE_DECAY), ("updates", AVERAGE_UPDATES)):
        key += "/.ATTRIBUTES/VARIABLE_VALUE"
        values[name] = reader.get_tensor(key).item() if reader.has_tensor(key) else 0
    return values if values["updates"] else None


def read_session(name):
    """(config, mean pixel) of session NAME, as its session.json records them."""
    try:
        saved = utils.read_json(session_file(name))
        config = cfg.Config.from_dict(saved["config"])
        mean_pixel = np.asarray(saved["mean_pixel"], np.float32)
    except (OSError, ValueError, KeyError, TypeError):
        raise SessionError(f"--session {name}: no readable session in {folder(name)}/ (train"
                           f" one with python train.py --session {name})")
    check_network_version(saved, name, "train it again with --fresh")
    return config, mean_pixel


def load_completion_network(name, iteration=None, raw=False):
    """(completion network, mean pixel, config) of session NAME: its newest checkpoint, or the
    one saved at `iteration`. The moving average of its weights where the checkpoint has one
    (--ema-decay: what its sample grids and evaluations showed), unless `raw`: the network
    itself."""
    config, mean_pixel = read_session(name)
    path = checkpoint_path(name, iteration)
    network = build_completion_network(width_divisor=config.width_divisor, mean_pixel=mean_pixel,
                                       upsampling=config.upsampling)
    which = AVERAGE_NETWORK if not raw and moving_average(path) else "completion_network"
    tf.train.Checkpoint(**{which: network}).restore(path).expect_partial()
    return network, mean_pixel, config
