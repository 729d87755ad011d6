"""Convert the authors' released Torch7 completion network into an export of this project.

    python convert.py completionnet_places2.t7 exported/places2
    python complete.py --model exported/places2 --input photo.jpg --box 40,30,64,48 --output o.png

The authors released three trained completion networks (completionnet_places2.t7,
completionnet_places2_freeform.t7, completionnet_celeba.t7) on their project page, under the
Creative Commons Attribution-NonCommercial-ShareAlike 4.0 licence; download them yourself, this
script never downloads anything. It reads a file, checks every module against the completion
network of model.py (type, channels, kernel, stride, padding, dilation, batch-norm epsilon) and
stops at the first mismatch, then writes the same export as `complete.py --export`, with the
file's mean pixel, its sha256 and its licence in glcic.json.
"""
import hashlib
import os
import struct
import sys

import numpy as np
import torchfile

import runtime  # noqa: F401  (settings TensorFlow reads at import)

import config as cfg
import exports
import model
import utils

RELEASE = "http://iizuka.cs.tsukuba.ac.jp/projects/completion/"
LICENCE = "CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/)"
TORCH_EPSILON = 1e-5
CONVOLUTIONS = ("nn.SpatialConvolution", "nn.SpatialDilatedConvolution")


class ConvertError(utils.UserError):
    """The file is not a completion network this project can load; names the first mismatch."""


# ---------------------------------------------------------------------------------------------
# Reading: torchfile, with tensor readers that check each tensor lies inside its storage (the
# stock ones index a truncated storage out of bounds).


def storage_reader(dtype):
    def read(reader, version):
        size = reader.read_long()
        data = np.fromfile(reader.f, dtype=dtype, count=size)
        if data.size != size:
            raise EOFError(f"a storage of {size} values ends after {data.size}")
        return data
    return read


def tensor_reader(dtype):
    def read(reader, version):
        ndim = reader.read_int()
        if not 0 <= ndim <= 8:
            raise ValueError(f"a tensor with {ndim} dimensions")
        size, stride = reader.read_long_array(ndim), reader.read_long_array(ndim)
        offset = reader.read_long() - 1
        storage = reader.read_obj()
        if storage is None or ndim == 0:
            return np.empty(0, dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if (not isinstance(storage, np.ndarray) or min(size) < 1 or min(stride) < 0
                or offset < 0 or last >= storage.size):
            raise ValueError("a tensor outside its storage")
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]).copy()
    return read


for _kind, _dtype in (("Float", np.float32), ("Double", np.float64), ("Cuda", np.float32),
                      ("CudaDouble", np.float64)):
    torchfile.type_handlers[f"torch.{_kind}Storage".encode()] = storage_reader(_dtype)
    torchfile.type_handlers[f"torch.{_kind}Tensor".encode()] = tensor_reader(_dtype)

READ_ERRORS = (EOFError, OSError, ValueError, TypeError, KeyError, IndexError, MemoryError,
               OverflowError, RecursionError, NotImplementedError, UnicodeDecodeError,
               struct.error, torchfile.T7ReaderException)


def read_release(path):
    """(the nn.Sequential's modules, the mean pixel) of a file saved like the authors'."""
    try:
        data = torchfile.load(path)
    except FileNotFoundError:
        raise ConvertError(f"{path}: no such file")
    except READ_ERRORS as error:
        raise ConvertError(f"{path}: not a Torch7 file, or truncated ({type(error).__name__}:"
                           f" {error})")
    if not isinstance(data, dict) or b"model" not in data or b"mean" not in data:
        raise ConvertError(f"{path}: not a completion network release (expected a table with"
                           f" 'model' and 'mean', as torch.load gives for"
                           f" completionnet_places2.t7)")
    sequential = data[b"model"]
    if typename(sequential) != "nn.Sequential" or not isinstance(sequential.modules, list):
        raise ConvertError(f"{path}: 'model' is {typename(sequential)}, expected an"
                           " nn.Sequential of modules")
    try:
        mean_pixel = np.asarray(data[b"mean"], np.float64).reshape(3)
    except (TypeError, ValueError):
        raise ConvertError(f"{path}: 'mean' is not three numbers")
    if not np.all((mean_pixel >= 0) & (mean_pixel <= 1)):
        raise ConvertError(f"{path}: 'mean' is {mean_pixel.tolist()}, expected values in [0, 1]")
    return sequential.modules, mean_pixel


def typename(obj):
    if isinstance(obj, torchfile.TorchObject):
        return obj.torch_typename().decode(errors="replace")
    return type(obj).__name__


# ---------------------------------------------------------------------------------------------
# Checking: what each of the 50 modules must be


def expected_modules(width_divisor):
    """For each module of the release, (accepted class names, {field: value}, layer name, row
    of Table 1), for the network of model.py with `width_divisor`."""
    modules, n_in = [], 4
    for row, (kind, kernel, dilation, stride, channels) in enumerate(model.COMPLETION_LAYERS, 1):
        n_out = channels if kind == "output" else channels // width_divisor
        fields = dict(nInputPlane=n_in, nOutputPlane=n_out, kW=kernel, kH=kernel, dW=stride,
                      dH=stride)
        if kind == "deconv":
            fields.update(padW=1, padH=1, adjW=0, adjH=0)
            modules.append((("nn.SpatialFullConvolution",), fields, f"conv{row}", row))
        else:
            pad = (kernel - 1) // 2 * dilation
            fields.update(padW=pad, padH=pad)
            if dilation > 1:
                fields.update(dilationW=dilation, dilationH=dilation)
            types = CONVOLUTIONS if dilation == 1 else CONVOLUTIONS[1:]
            modules.append((types, fields, f"conv{row}", row))
        if kind == "output":
            modules.append((("nn.Sigmoid",), {}, None, row))
        else:
            modules.append((("nn.SpatialBatchNormalization",), dict(eps=TORCH_EPSILON),
                            f"bn{row}", row))
            modules.append((("nn.ReLU",), {}, None, row))
        n_in = n_out
    return modules


def width_divisor_of(path, modules):
    """The --width-divisor of the file's network, from its first layer's width (64 / N)."""
    first = modules[0] if modules else None
    width = first.nOutputPlane if typename(first) in CONVOLUTIONS else None
    first_width = model.COMPLETION_LAYERS[0][4]
    if isinstance(width, int) and width > 0 and first_width % width == 0:
        divisor = first_width // width
        if 32 % divisor == 0:  # what --width-divisor accepts
            return divisor
    raise ConvertError(f"{path}: module 1 ({typename(first)}) is not a convolution with"
                       f" {first_width} output planes (or {first_width}/N, N dividing 32)")


def check_modules(path, modules, expected):
    if len(modules) != len(expected):
        raise ConvertError(f"{path}: the network has {len(modules)} modules, expected"
                           f" {len(expected)} (16 convolution + batch norm + ReLU, then"
                           " convolution + Sigmoid)")
    for index, (module, (types, fields, _, row)) in enumerate(zip(modules, expected), 1):
        where = f"{path}: module {index} ({typename(module)}, row {row} of the network)"
        if typename(module) not in types:
            raise ConvertError(f"{where}: expected {' or '.join(types)}")
        for name, want in fields.items():
            got = module[name]
            if got is None and name.startswith(("dilation", "adj")):
                got = 0 if name.startswith("adj") else 1  # fields older nn versions lack
            matches = (isinstance(got, (int, float)) and not isinstance(got, bool)
                       and abs(got - want) <= 1e-12)
            if not matches:
                raise ConvertError(f"{where}: {name} is {got}, expected {want}")


def module_weights(path, index, module, names, shapes):
    """The module's tensors `names` as float32, each checked against its shape."""
    arrays = []
    for name, shape in zip(names, shapes):
        value = module[name]
        if not isinstance(value, np.ndarray) or value.size != int(np.prod(shape)):
            got = value.shape if isinstance(value, np.ndarray) else typename(value)
            raise ConvertError(f"{path}: module {index} ({typename(module)}): {name} is {got},"
                               f" expected {shape}")
        arrays.append(value.reshape(shape).astype(np.float32))
    return arrays


def keras_weights(path, index, module, layer):
    """The Torch module's tensors in the order and layout of the Keras layer's weights."""
    if typename(module) == "nn.SpatialBatchNormalization":
        if module["running_var"] is None:
            raise ConvertError(f"{path}: module {index} ({typename(module)}): no running_var"
                               " (saved by an nn older than 2016?), expected running statistics")
        shape = layer.get_weights()[0].shape
        return module_weights(path, index, module,
                              ("weight", "bias", "running_mean", "running_var"), [shape] * 4)
    k, n_in, n_out = module.kH, module.nInputPlane, module.nOutputPlane
    if typename(module) == "nn.SpatialFullConvolution":
        weight, bias = module_weights(path, index, module, ("weight", "bias"),
                                      [(n_in, n_out, k, k), (n_out,)])
        return [weight.transpose(2, 3, 1, 0), bias]  # Keras: (kh, kw, out, in)
    weight, bias = module_weights(path, index, module, ("weight", "bias"),
                                  [(n_out, n_in, k, k), (n_out,)])
    return [weight.transpose(2, 3, 1, 0), bias]  # Keras: (kh, kw, in, out)


def convert(path):
    """(completion network, mean pixel, width divisor) of a release file."""
    modules, mean_pixel = read_release(path)
    width_divisor = width_divisor_of(path, modules)
    expected = expected_modules(width_divisor)
    check_modules(path, modules, expected)
    network = model.build_completion_network(width_divisor=width_divisor, mean_pixel=mean_pixel)
    for index, (module, (_, _, layer_name, _)) in enumerate(zip(modules, expected), 1):
        if layer_name:
            layer = network.get_layer(layer_name)
            layer.set_weights(keras_weights(path, index, module, layer))
    return network, mean_pixel, width_divisor


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_config(path, width_divisor):
    """The paper's settings, which the authors trained with; free-form holes for the free-form
    release."""
    name = os.path.splitext(os.path.basename(path))[0]
    return cfg.Config(session=name, preset="paper", width_divisor=width_divisor,
                      hole_shape="free" if "freeform" in name.lower() else "rect")


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", metavar="FILE.t7",
                        help="a completion network released by the authors, e.g."
                             " completionnet_places2.t7")
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="the export to write (as complete.py --export), e.g."
                             " exported/places2")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if os.path.exists(os.path.join(args.out_dir, "glcic.json")):
            raise ConvertError(f"{args.out_dir}: already holds an export; choose another"
                               " OUT_DIR or remove it")
        network, mean_pixel, width_divisor = convert(args.file)
        source = {"file": os.path.basename(args.file), "sha256": sha256(args.file),
                  "licence": LICENCE, "authors": "Satoshi Iizuka, Edgar Simo-Serra,"
                  " Hiroshi Ishikawa", "release": RELEASE, "converted_by": "convert.py"}
        exports.write(network, mean_pixel, export_config(args.file, width_divisor),
                      args.out_dir, source=source)
    except utils.UserError as error:
        return utils.print_error(error)
    mean = ", ".join(f"{v:.4f}" for v in mean_pixel)
    print(f"Converted {args.file} (sha256 {source['sha256'][:16]}...): 17 convolutions, 16"
          f" batch norms, mean pixel ({mean}) -> {os.path.normpath(args.out_dir)}")
    print(f"Licence of these weights: {LICENCE}; see {RELEASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
