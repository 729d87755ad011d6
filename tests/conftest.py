import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import runtime  # noqa: E402,F401  (the scripts' TensorFlow settings, before anything imports it)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from photos import smooth_photo  # noqa: E402,F401


@pytest.fixture
def make_photos():
    """make_photos(folder, count, size=(h, w)) writes `count` JPEG/PNG photos, returns paths."""
    def make(folder, count=6, size=(48, 64), seed=0):
        rng = np.random.default_rng(seed)
        os.makedirs(folder, exist_ok=True)
        paths = []
        for i in range(count):
            ext = ".jpg" if i % 2 == 0 else ".png"
            path = os.path.join(str(folder), f"photo{i}{ext}")
            Image.fromarray(smooth_photo(rng, *size)).save(path)
            paths.append(path)
        return paths
    return make


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer runs, only with GLCIC_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("GLCIC_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with GLCIC_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Flags of a tiny run used by the command-line tests: 32 px crops, a few iterations per phase.
TINY = ["--image-size", "32", "--local-size", "16", "--hole-min", "6", "--hole-max", "12",
        "--batch-size", "2", "--summary-every", "1", "--sample-every", "2"]


def run_script(script, args, cwd, timeout=600, **kwargs):
    """Run one of the repository's scripts as a user would, in `cwd`."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def make_session():
    """make_session(root, name="s", image_size=32): a session with an untrained completion
    network checkpoint, laid out as train.py leaves it, without the cost of training."""
    def make(root, name="s", image_size=32, mean_pixel=(0.4, 0.5, 0.6)):
        import tensorflow as tf
        import config as cfg
        import utils
        from model import build_completion_network
        folder = os.path.join(str(root), "saved_sessions", name)
        config = cfg.resolve(cfg.preset_config("quick"), dict(
            session=name, image_size=image_size, local_size=image_size // 2,
            hole_min=image_size // 8, hole_max=image_size // 4))
        tf.keras.utils.set_random_seed(0)
        network = build_completion_network()
        tf.train.CheckpointManager(tf.train.Checkpoint(completion_network=network),
                                   os.path.join(folder, "phase_ends"), None).save(1)
        utils.write_json(os.path.join(folder, "session.json"),
                         {"config": cfg.dataclasses.asdict(config), "mean_pixel": list(mean_pixel)})
        return folder
    return make
