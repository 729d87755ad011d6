"""An export: a trained completion network with its mean pixel, usable without its session.

    DIR/completion_network.keras   the network (keras.models.load_model, after `import model`)
    DIR/saved_model/               the same as a TensorFlow SavedModel (TF Serving, TFLite)
    DIR/glcic.json                 format, version, mean pixel, network version, configuration

complete.py --export writes one; complete.py --model, evaluate.py --model and train.py
--init-from read one.
"""
import os

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import keras

import config as cfg
import session
import utils
from model import NETWORK_VERSION

FORMAT, VERSION = "glcic-completion-network", 1


def write(network, mean_pixel, config, folder, source=None):
    """Write the export; `source` (a dict: file, sha256, licence, ...) says where the weights
    come from when they were not trained here."""
    os.makedirs(folder, exist_ok=True)
    network.save(os.path.join(folder, "completion_network.keras"))
    network.export(os.path.join(folder, "saved_model"), verbose=False)
    utils.write_json(os.path.join(folder, "glcic.json"), {
        "format": FORMAT, "version": VERSION, "mean_pixel": np.asarray(mean_pixel).tolist(),
        "config": config.to_dict(), "network_version": NETWORK_VERSION,
        **({"source": source} if source else {})})


def read_metadata(folder, flag="--model"):
    """(mean pixel, config, the whole glcic.json) of an export; UserError naming `flag`."""
    try:
        meta = utils.read_json(os.path.join(folder, "glcic.json"))
    except (OSError, ValueError):
        raise utils.UserError(f"{flag} {folder}: not an export of complete.py (glcic.json"
                              " missing or unreadable)")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise utils.UserError(f"{flag} {folder}: export format {meta.get('format')!r} version"
                              f" {meta.get('version')!r} is not supported (expected {FORMAT!r}"
                              f" version {VERSION}); export it again")
    try:
        mean_pixel = np.asarray(meta["mean_pixel"], np.float32).reshape(3)
        config = cfg.Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise damaged(flag, folder, error)
    return mean_pixel, config, meta


def read(folder, flag="--model"):
    """(completion network, mean pixel, config) of an export."""
    mean_pixel, config, _ = read_metadata(folder, flag)
    try:
        network = keras.models.load_model(os.path.join(folder, "completion_network.keras"))
    except (TypeError, ValueError, OSError) as error:
        raise damaged(flag, folder, error)
    return network, mean_pixel, config


def damaged(flag, folder, error):
    return utils.UserError(f"{flag} {folder}: incomplete or damaged export"
                           f" ({type(error).__name__}: {error}); export it again")


def load_model(session_name=None, model_dir=None):
    """(completion network, mean pixel, config) of --session NAME or --model DIR."""
    if model_dir:
        return read(model_dir)
    return session.load_completion_network(session_name)
