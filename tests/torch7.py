"""Write Torch7 files (torch.save's binary format) and compute what Torch's nn modules compute,
so convert.py is tested offline against a file laid out like the authors' release.

The format (torch7's File.lua): every object starts with an int32 type; numbers are float64,
strings an int32 length and bytes, tables and Torch objects an int32 reference index (an index
already written is a reference to that object), then for a table its pair count and pairs,
for a Torch object "V 1", its class name and its content: a tensor's ndim, sizes, strides
(int64), 1-based storage offset and storage; a storage's int64 size and raw data; an nn
module's table of fields.

The networks are lists of (class name, fields) in Torch's layouts: a convolution's weight is
(out, in, kh, kw), a SpatialFullConvolution's (in, out, kh, kw).
"""
import struct

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5
TENSOR_TYPES = {np.dtype(np.float32): "Float", np.dtype(np.float64): "Double",
                np.dtype(np.int64): "Long"}


class Module:
    """An nn module: its class name and fields (numbers, strings, arrays, lists, Modules)."""

    def __init__(self, typename, **fields):
        self.typename, self.fields = typename, fields

    def __getitem__(self, key):
        return self.fields[key]


class Writer:
    def __init__(self, f):
        self.f, self.index = f, 0

    def pack(self, fmt, *values):
        self.f.write(struct.pack("=" + fmt, *values))

    def string(self, text):
        data = text.encode() if isinstance(text, str) else text
        self.pack("i", len(data))
        self.f.write(data)

    def reference(self, kind):
        self.index += 1
        self.pack("ii", kind, self.index)

    def torch_header(self, typename):
        self.reference(TORCH)
        self.string("V 1")
        self.string(typename)

    def obj(self, value):
        if value is None:
            self.pack("i", NIL)
        elif isinstance(value, bool):
            self.pack("ii", BOOLEAN, int(value))
        elif isinstance(value, (int, float)):
            self.pack("id", NUMBER, float(value))
        elif isinstance(value, (str, bytes)):
            self.pack("i", STRING)
            self.string(value)
        elif isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, Module):
            self.torch_header(value.typename)
            self.table(value.fields)
        elif isinstance(value, (list, tuple)):
            self.table({i: v for i, v in enumerate(value, 1)})
        elif isinstance(value, dict):
            self.table(value)
        else:
            raise TypeError(f"cannot write {type(value).__name__}")

    def table(self, pairs):
        self.reference(TABLE)
        self.pack("i", len(pairs))
        for key, value in pairs.items():
            self.obj(key)
            self.obj(value)

    def tensor(self, array):
        kind = TENSOR_TYPES[array.dtype]
        self.torch_header(f"torch.{kind}Tensor")
        array = np.ascontiguousarray(array)
        self.pack("i", array.ndim)
        self.pack(f"{array.ndim}q", *array.shape)
        self.pack(f"{array.ndim}q", *(s // array.itemsize for s in array.strides))
        self.pack("q", 1)
        self.torch_header(f"torch.{kind}Storage")
        self.pack("q", array.size)
        self.f.write(array.tobytes())


def save(path, value):
    with open(path, "wb") as f:
        Writer(f).obj(value)


# ---------------------------------------------------------------------------------------------
# The official network as nn modules


def convolution(rng, n_in, n_out, kernel, stride=1, dilation=1, dtype=np.float32):
    pad = (kernel - 1) // 2 * dilation
    fields = dict(nInputPlane=n_in, nOutputPlane=n_out, kW=kernel, kH=kernel, dW=stride,
                  dH=stride, padW=pad, padH=pad, train=False,
                  weight=rng.normal(0, 1, (n_out, n_in, kernel, kernel)).astype(dtype),
                  bias=rng.normal(0, 1, n_out).astype(dtype))
    if dilation == 1:
        return Module("nn.SpatialConvolution", **fields)
    return Module("nn.SpatialDilatedConvolution", dilationW=dilation, dilationH=dilation,
                  **fields)


def full_convolution(rng, n_in, n_out, dtype=np.float32):
    return Module("nn.SpatialFullConvolution", nInputPlane=n_in, nOutputPlane=n_out, kW=4,
                  kH=4, dW=2, dH=2, padW=1, padH=1, adjW=0, adjH=0, train=False,
                  weight=rng.normal(0, 1, (n_in, n_out, 4, 4)).astype(dtype),
                  bias=rng.normal(0, 1, n_out).astype(dtype))


def batch_norm(n, dtype=np.float32):
    ones, zeros = np.ones(n, dtype), np.zeros(n, dtype)
    return Module("nn.SpatialBatchNormalization", eps=1e-5, momentum=0.1, affine=True,
                  train=False, weight=ones, bias=zeros.copy(), running_mean=zeros.copy(),
                  running_var=ones.copy())


def official_modules(rng, layers, width_divisor=1, dtype=np.float32):
    """The 50 modules of completionnet_places2.t7 (for the rows of model.COMPLETION_LAYERS),
    with random convolution weights and neutral batch norms (see calibrate)."""
    modules, n_in = [], 4
    for kind, kernel, dilation, stride, channels in layers:
        n_out = channels if kind == "output" else channels // width_divisor
        if kind == "deconv":
            modules.append(full_convolution(rng, n_in, n_out, dtype))
        else:
            modules.append(convolution(rng, n_in, n_out, kernel, stride, dilation, dtype))
        if kind == "output":
            modules.append(Module("nn.Sigmoid", train=False))
        else:
            modules += [batch_norm(n_out, dtype), Module("nn.ReLU", inplace=False, threshold=0,
                                                         val=0, train=False)]
        n_in = n_out
    return modules


def release(modules, mean_pixel):
    """The table torch.load gives for the authors' files: {model = nn.Sequential, mean = ...}."""
    return {"model": Module("nn.Sequential", modules=modules, train=False),
            "mean": [float(v) for v in mean_pixel]}


# ---------------------------------------------------------------------------------------------
# What Torch computes, in NumPy, images (B, H, W, C) in float64


def conv(x, module):
    """SpatialConvolution / SpatialDilatedConvolution: zero padding padW on both sides."""
    weight, k = np.asarray(module["weight"], np.float64), module["kW"]
    stride, pad = module["dW"], module["padW"]
    dilation = module.fields.get("dilationW", 1)
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    width = (x.shape[2] - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], height, width, weight.shape[0]))
    for ky in range(k):
        for kx in range(k):
            tap = x[:, ky * dilation:ky * dilation + stride * (height - 1) + 1:stride,
                    kx * dilation:kx * dilation + stride * (width - 1) + 1:stride]
            out += tap @ weight[:, :, ky, kx].T
    return out + np.asarray(module["bias"], np.float64)


def full_conv(x, module):
    """SpatialFullConvolution: input pixel i spreads its kernel over output i * stride - pad + k."""
    weight, k = np.asarray(module["weight"], np.float64), module["kW"]
    stride, pad = module["dW"], module["padW"]
    b, h, w, _ = x.shape
    full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, weight.shape[1]))
    for ky in range(k):
        for kx in range(k):
            spread = x @ weight[:, :, ky, kx]
            full[:, ky:ky + stride * h:stride, kx:kx + stride * w:stride] += spread
    return full[:, pad:pad + stride * h, pad:pad + stride * w] + np.asarray(module["bias"])


def batch_norm_eval(x, module):
    variance = np.asarray(module["running_var"], np.float64)
    return (x - module["running_mean"]) * module["weight"] / np.sqrt(variance + module["eps"]) \
        + module["bias"]


FORWARD = {"nn.SpatialConvolution": conv, "nn.SpatialDilatedConvolution": conv,
           "nn.SpatialFullConvolution": full_conv,
           "nn.SpatialBatchNormalization": batch_norm_eval,
           "nn.ReLU": lambda x, m: np.maximum(x, 0),
           "nn.Sigmoid": lambda x, m: 1 / (1 + np.exp(-x))}


def network_input(image, hole, mean_pixel):
    """inpaint.lua's input: the image minus the mean pixel, 0 in the hole; the hole, channel 4."""
    return np.concatenate([(image - np.asarray(mean_pixel)) * (1 - hole), hole], axis=-1)


def forward(modules, x):
    for module in modules:
        x = FORWARD[module.typename](x, module)
    return x


def calibrate(modules, x, rng):
    """Set the weights so that every layer matters: each convolution's output has a standard
    deviation near 0.01 on `x`, each batch norm's running statistics are that output's (tiny
    variances, so that an epsilon of 1e-3 instead of Torch's 1e-5 shows), with random scales
    and shifts around them."""
    for module in modules:
        if module.typename in ("nn.SpatialConvolution", "nn.SpatialDilatedConvolution",
                               "nn.SpatialFullConvolution"):
            out = FORWARD[module.typename](x, module)
            last = module is modules[-2]
            scale = (1.0 if last else 0.01) / out.std()
            for name in ("weight", "bias"):
                module.fields[name] = (module[name] * scale).astype(module[name].dtype)
        elif module.typename == "nn.SpatialBatchNormalization":
            dtype, n = module["weight"].dtype, x.shape[-1]
            module.fields.update(
                running_mean=x.mean(axis=(0, 1, 2)).astype(dtype),
                running_var=x.var(axis=(0, 1, 2)).astype(dtype),
                weight=rng.uniform(0.5, 1.5, n).astype(dtype),
                bias=rng.normal(0, 0.1, n).astype(dtype))
        x = FORWARD[module.typename](x, module)
    return x
