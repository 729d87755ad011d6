"""An export: a trained completion network with its mean pixel, usable without its session.

    DIR/completion_network.keras   the network (keras.models.load_model, after `import model`)
    DIR/saved_model/               the same as a TensorFlow SavedModel (TF Serving, TFLite)
    DIR/completion_network.onnx    the same for ONNX Runtime, batch norms folded (engine.py;
                                   written when tf2onnx is installed)
    DIR/glcic.json                 format, version, mean pixel, network version, configuration,
                                   the ONNX file's opset and converters, and for a session's
                                   export its iteration and held-out scores

or, compact (--float16), instead of the first three:

    DIR/completion_network.float16.npz   the weights in network.weights order ("000", "001",
                                         ...): kernels float16, the rest float32

complete.py --export writes one; complete.py --model, evaluate.py --model and train.py
--init-from read one. Without --session or --model, complete.py and evaluate.py read the
pretrained model shipped in pretrained/wallpapers. Running a compact export (or a full one
without its ONNX file) with ONNX Runtime converts it once to DIR/completion_network.onnx.
"""
import csv
import os
import zipfile
import zlib

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import keras

import config as cfg
import engine as engines
import session
import utils
from model import NETWORK_VERSION, build_completion_network

FORMAT, VERSION = "glcic-completion-network", 1
FLOAT16_WEIGHTS = "completion_network.float16.npz"
ONNX_FILE = "completion_network.onnx"
PRETRAINED_NAME = "pretrained/wallpapers"
PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), PRETRAINED_NAME)


def write(network, mean_pixel, config, folder, source=None, float16=False, training=None):
    """Write the export; `config` is a Config, or the configuration another export recorded
    (a dict, kept as it is); `source` (a dict: file, sha256, licence, ...) says where the weights
    come from when they were not trained here, `training` (a dict: iteration, held-out scores)
    how far they were trained. float16: the compact kind (under half the size, no SavedModel)."""
    os.makedirs(folder, exist_ok=True)
    meta = {}
    if float16:
        # Biases and batch-norm statistics stay float32: they are few, and a small moving
        # variance loses its precision in float16.
        np.savez_compressed(os.path.join(folder, FLOAT16_WEIGHTS), **{
            f"{i:03d}": w.numpy().astype(np.float16 if len(w.shape) >= 2 else np.float32)
            for i, w in enumerate(network.weights)})
        meta = {"weights": FLOAT16_WEIGHTS, "weight_shapes": weight_shapes(network)}
    else:
        network.save(os.path.join(folder, "completion_network.keras"))
        network.export(os.path.join(folder, "saved_model"), verbose=False)
        if engines.available()[0]:
            converted = engines.to_onnx(network, os.path.join(folder, ONNX_FILE))
            meta = {"onnx": {"file": ONNX_FILE, "opset": int(converted["opset"]), "versions": {
                name: converted[name] for name in ("tensorflow", "tf2onnx", "onnx")}}}
    utils.write_json(os.path.join(folder, "glcic.json"), {
        "format": FORMAT, "version": VERSION, "mean_pixel": np.asarray(mean_pixel).tolist(),
        "config": config if isinstance(config, dict) else config.to_dict(),
        "network_version": NETWORK_VERSION, **meta,
        **({"source": source} if source else {}), **({"training": training} if training else {})})


def weight_shapes(network):
    return [[w.path, list(w.shape)] for w in network.weights]


def read_metadata(folder, flag="--model", name=None):
    """(mean pixel, config, the whole glcic.json) of an export; UserError naming `flag` and
    `name` (default: the folder)."""
    name = name or folder
    try:
        meta = utils.read_json(os.path.join(folder, "glcic.json"))
    except (OSError, ValueError):
        raise utils.UserError(f"{flag} {name}: not an export of complete.py (glcic.json"
                              " missing or unreadable)")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise utils.UserError(f"{flag} {name}: export format {meta.get('format')!r} version"
                              f" {meta.get('version')!r} is not supported (expected {FORMAT!r}"
                              f" version {VERSION}); export it again")
    try:
        mean_pixel = np.asarray(meta["mean_pixel"], np.float32).reshape(3)
        config = cfg.Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise damaged(flag, name, error)
    return mean_pixel, config, meta


def read(folder, flag="--model", name=None):
    """(completion network, mean pixel, config) of an export."""
    mean_pixel, config, meta = read_metadata(folder, flag, name)
    try:
        if "weights" in meta:
            network = read_float16(folder, meta, config, mean_pixel)
        else:
            network = keras.models.load_model(os.path.join(folder, "completion_network.keras"))
    except (TypeError, ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile,
            zlib.error) as error:
        raise damaged(flag, name or folder, error)
    return network, mean_pixel, config


def read_float16(folder, meta, config, mean_pixel):
    """The network of a compact export, its stored weights assigned as float32."""
    network = build_completion_network(width_divisor=config.width_divisor, mean_pixel=mean_pixel,
                                       upsampling=config.upsampling)
    if meta.get("weight_shapes") != weight_shapes(network):
        raise ValueError("its weights are not those of this completion network")
    with np.load(os.path.join(folder, meta["weights"])) as stored:
        values = [stored[f"{i:03d}"] for i in range(len(network.weights))]
    for weight, value in zip(network.weights, values):
        if value.shape != tuple(weight.shape):
            raise ValueError(f"{weight.path} has shape {value.shape}, expected {weight.shape}")
        weight.assign(value.astype(np.float32))
    return network


def damaged(flag, folder, error):
    return utils.UserError(f"{flag} {folder}: incomplete or damaged export"
                           f" ({type(error).__name__}: {error}); export it again")


def training(name, iteration=None, raw=False):
    """What an export of session NAME records of its training: the iteration of its checkpoint
    (by default the newest), the moving average's decay and count if the export is of one
    (--ema-decay, not `raw`) and, if train.py evaluated it, the held-out scores then ({method:
    {column: value}}, from results/NAME/eval.csv; of the average, with --ema-decay)."""
    checkpoint = session.checkpoint_path(name, iteration)
    iteration = session.checkpoint_number(checkpoint)
    record = {"iteration": iteration}
    average = session.moving_average(checkpoint)
    if average and not raw:
        record["moving_average"] = {"decay": round(average["decay"], 6),
                                    "updates": average["updates"]}
    path = session.eval_history(name)
    if os.path.exists(path) and not (raw and average):  # the scores are the average's
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["iteration"] == str(iteration)]
        held_out = {row["method"]: {column: float(value) for column, value in row.items()
                                    if column not in ("iteration", "phase", "method") and value}
                    for row in rows}
        if held_out:
            record["held_out"] = held_out
    return record


def results_name(folder):
    """The name under results/ of an export's evaluation: "pretrained-wallpapers" for the
    pretrained model, "model-NAME" for the export in folder .../NAME; never a session's name
    (results/NAME), unless a session is named so."""
    if os.path.realpath(folder) == os.path.realpath(PRETRAINED):
        return PRETRAINED_NAME.replace("/", "-")
    return "model-" + os.path.basename(os.path.realpath(folder))


def add_model_flags(parser, several=False):
    """--session NAME or --model DIR (neither: the pretrained model), and --iteration N (with
    several=True, --iteration N [N ...]: a list)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--session", help="a session trained by train.py --session NAME (default:"
                                          f" the pretrained model {PRETRAINED_NAME})")
    source.add_argument("--model", metavar="DIR", help="a folder written by complete.py --export"
                                                       f" or convert.py (default: {PRETRAINED_NAME})")
    parser.add_argument("--iteration", type=int, metavar="N", nargs="+" if several else None,
                        help="with --session: its checkpoint of iteration N (default: the newest)"
                             + ("; several: each scored on the same photos and holes, in one"
                                " table (checkpoints.csv), to choose one" if several else ""))
    parser.add_argument("--engine", choices=engines.ENGINES,
                        help="what runs the completion network: onnx (ONNX Runtime, converted"
                             " once and kept beside the checkpoint or export) or tf (TensorFlow)"
                             " (default: tf when it runs bfloat16 or float16, see --precision;"
                             " else onnx when onnxruntime and tf2onnx are installed, else tf)")
    parser.add_argument("--precision", choices=cfg.PRECISIONS,
                        help="what the completion network computes in: auto (bfloat16 on a CPU"
                             " that computes it natively, float16 on a GPU, else float32),"
                             " float32, bfloat16 or float16 (TensorFlow only); weights stay"
                             " float32 (default: auto)")


def check_model_flags(parser, args):
    if args.iteration is not None and not args.session:
        parser.error("--iteration applies only to --session NAME")


def load_model(session_name=None, model_dir=None, iteration=None, engine=None,
               precision="auto"):
    """(completion network, mean pixel, config) of --session NAME (its checkpoint of
    `iteration`, by default the newest) or --model DIR; with neither, of the pretrained model.
    The network is the one to run with `engine` and `precision` (see engine.for_network): the
    Keras network or its bfloat16 copy ("tf"), or its ONNX conversion ("onnx"), kept in the
    session's folder or the export's."""
    if session_name:
        network, mean_pixel, config = session.load_completion_network(session_name, iteration)
        cache = session.onnx_file(session_name, iteration)
        session.prune_onnx(session_name)
    elif model_dir:
        network, mean_pixel, config = read(model_dir)
        cache = os.path.join(model_dir, ONNX_FILE)
    else:
        if not os.path.exists(os.path.join(PRETRAINED, "glcic.json")):
            raise utils.UserError(f"give --session NAME or --model DIR (no pretrained model in"
                                  f" {PRETRAINED_NAME})")
        print(f"Using the pretrained model {PRETRAINED_NAME} (neither --session nor --model"
              " given)")
        network, mean_pixel, config = read(PRETRAINED, name=PRETRAINED_NAME)
        cache = os.path.join(PRETRAINED, ONNX_FILE)
    return (engines.for_network(network, cache, engine, precision or "auto"), mean_pixel,
            config)
