"""Shared fixtures: tiny photos, a tiny configuration, one tiny finished training session.

Tiny means 32 px crops, batch 2 and networks with an eighth of the paper's channels
(--width-divisor 8): the same layers, traced the same way, with checkpoints of a few MB.

    python -m pytest -q tests                     # the default run, a few minutes
    python -m pytest -q tests -m "not soak"       # plus the slow multi-process tests (CI)
    python -m pytest -q tests -m soak             # the long soak runs only

pytest.ini runs the tests in one worker process per CPU (pytest-xdist); add -n 0 to run them in
this process alone.
"""
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# --precision auto follows the CPU's flags (devices.py). The suite reads them from a CPU without
# bfloat16, in this process and the scripts it runs, so that its figures are float32's on every
# machine; the tests of bfloat16 ask for it, or give a CPU that has it.
CPUINFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpuinfo")
os.environ["GLCIC_CPUINFO"] = os.path.join(CPUINFO, "avx2.txt")
import runtime  # noqa: E402,F401  (the scripts' TensorFlow settings, before anything imports it)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from photos import smooth_photo  # noqa: E402,F401

import config as cfg  # noqa: E402
import data_loader  # noqa: E402

TINY_SETTINGS = dict(image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=2,
                     summary_every=1, sample_every=2, width_divisor=8)
# The same as flags, for the command-line tests.
TINY = [word for name, value in TINY_SETTINGS.items() for word in (cfg.flag(name), str(value))]


def tiny_args(photos, session="tiny", tc=2, td=2, total=5, every=2):
    """train.py's flags for a tiny run of `total` iterations on the photos in `photos`."""
    return ["--data-dir", str(photos), "--session", session, "--preset", "quick", *TINY,
            "--tc", str(tc), "--td", str(td), "--total-iters", str(total),
            "--checkpoint-every", str(every)]


def write_photos(folder, count=6, size=(48, 64), seed=0):
    """`count` photo-like JPEG/PNG files in `folder`; returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(str(folder), f"photo{i}{'.jpg' if i % 2 == 0 else '.png'}")
        Image.fromarray(smooth_photo(rng, *size)).save(path)
        paths.append(path)
    return paths


def calibrated_network(inputs, seed, mean_pixel=(0.4, 0.5, 0.6)):
    """A tiny completion network whose batch-norm statistics are those of `inputs`, as training
    leaves them: with the initial ones its output is 0.5 everywhere, and any rounding passes."""
    import keras
    from model import build_completion_network
    keras.utils.set_random_seed(seed)
    network = build_completion_network(width_divisor=8, mean_pixel=mean_pixel)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = keras.Model(network.input, layer.input)(inputs, training=False).numpy()
            layer.moving_mean.assign(h.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(h.var(axis=(0, 1, 2)))
    return network


@pytest.fixture
def make_photos():
    """make_photos(folder, count, size=(h, w)) writes `count` JPEG/PNG photos, returns paths."""
    return write_photos


@pytest.fixture
def tiny_config():
    """tiny_config(**overrides): the quick preset at the tiny sizes, validated."""
    def make(**overrides):
        return cfg.resolve(cfg.preset_config("quick"), dict(TINY_SETTINGS, **overrides))
    return make


@pytest.fixture(autouse=True)
def forget_bad_files():
    """Files found undecodable by one test are not skipped in the next."""
    data_loader.BAD_FILES.reset()
    yield
    data_loader.BAD_FILES.reset()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process runs; CI runs them (-m 'not soak')")
    config.addinivalue_line("markers", "soak: long soak runs, by hand only (-m soak)")


@contextlib.contextmanager
def working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_main(module, args, cwd):
    """module.main(args) in process, in folder `cwd`; returns its exit status."""
    with working_directory(cwd):
        return module.main([str(a) for a in args])


def run_script(script, args, cwd, timeout=600, **kwargs):
    """Run one of the repository's scripts as a user would, in `cwd`."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@contextlib.contextmanager
def run_wide_folder(tmp_path_factory, name):
    """(folder, done): a folder that every process of this test run shares, held under a lock
    while the block runs; `done` is a marker file written once the folder is complete. With
    pytest-xdist (-n) the workers' temporary folders share one parent; without it the folder is
    this process's own."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        yield folder, folder.parent / f"{folder.name}.complete"
        return
    parent = tmp_path_factory.getbasetemp().parent
    with open(parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            folder, done = parent / name, parent / f"{name}.complete"
            if not done.exists() and folder.exists():
                shutil.rmtree(folder)  # a worker failed half-way: build it again
            folder.mkdir(exist_ok=True)
            yield folder, done
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory):
    """A folder holding photos/ and the finished tiny session 'tiny' (phases of 2, 2 and 1
    iterations), trained once per test run by train.main (once for all pytest-xdist workers);
    and what train.py printed. Tests that change the session work on a copy (copy_training)."""
    with run_wide_folder(tmp_path_factory, "tiny_training") as (root, done):
        if not done.exists():
            output = train_tiny_session(root)
            done.write_text("")
        else:
            output = (root / "stdout.txt").read_text()
    return root, output


def train_tiny_session(root):
    """Photos and the tiny session 'tiny' in `root`; returns what train.py printed."""
    import train
    rng = np.random.default_rng(0)
    os.makedirs(root / "photos" / "nested")
    for i in range(5):
        Image.fromarray(smooth_photo(rng, 40, 52)).save(
            root / "photos" / ("nested" if i % 2 else "") / f"p{i}.png")
    capture = root / "stdout.txt"
    with open(capture, "w") as out, contextlib.redirect_stdout(out):
        code = run_main(train, tiny_args("photos"), root)
    assert code == 0, capture.read_text()[-3000:]
    return capture.read_text()


@pytest.fixture
def copy_training(tiny_training, tmp_path):
    """A copy of the tiny finished training folder that a test may change."""
    root, _ = tiny_training
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    return copy


@pytest.fixture
def make_session():
    """make_session(root, name="s", image_size=32): a session with an untrained completion
    network checkpoint, laid out as train.py leaves it, without the cost of training."""
    def make(root, name="s", image_size=32, mean_pixel=(0.4, 0.5, 0.6)):
        import tensorflow as tf
        import session
        import utils
        from model import build_completion_network
        config = cfg.resolve(cfg.preset_config("quick"), dict(
            session=name, image_size=image_size, local_size=image_size // 2,
            hole_min=image_size // 8, hole_max=image_size // 4, width_divisor=8))
        tf.keras.utils.set_random_seed(0)
        network = build_completion_network(width_divisor=8, mean_pixel=mean_pixel)
        with working_directory(root):
            checkpoints = session.Checkpoints(tf.train.Checkpoint(completion_network=network),
                                              session.folder(name))
            checkpoints.save(1, phase_end=True)
            utils.write_json(session.session_file(name), session.record(config, mean_pixel))
        return os.path.join(str(root), session.folder(name))
    return make
