"""What runs the completion network for complete.py, evaluate.py and serve.py, and in which
precision: TensorFlow in bfloat16 on a CPU that computes it natively (float16 on a GPU);
elsewhere ONNX Runtime in float32, or TensorFlow when onnxruntime (or tf2onnx) is not installed
(choose). Training keeps the Keras network.

    for_network(network, cache_path)   the network to run: an OnnxNetwork read from cache_path,
                                       converted there first if the file is missing or was
                                       converted from other weights; the Keras network itself;
                                       or its copy computing in bfloat16 (or float16)
    forward(network)                   what to call on a batch: an OnnxNetwork itself, or the Keras
                                       network's forward pass compiled once for any size

The conversion (tf2onnx) folds every batch norm into the convolution before it, and stores in
the ONNX file's metadata a fingerprint of the weights it was converted from, with the versions
of TensorFlow, tf2onnx and onnx and the ONNX opset.
"""
import hashlib
import importlib
import os
import tempfile
import time
import weakref

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import keras
import tensorflow as tf
from keras import layers

import devices
import utils
from model import NETWORK_VERSION

ENGINES = ("onnx", "tf")
# Within what tf2onnx 1.17 converts (opsets up to 18); onnxruntime runs it since 1.12.
OPSET = 17
INSTALL = "pip install onnxruntime==1.32.0 tf2onnx==1.17.0"
TOLERANCE = 1e-3  # largest difference from TensorFlow's output a conversion may show


def available():
    """(True, "") when onnxruntime and tf2onnx import; else (False, why not)."""
    for name in ("onnxruntime", "onnx", "tf2onnx"):
        try:
            importlib.import_module(name)
        except ImportError:
            return False, f"{name} is not installed"
    return True, ""


def name_of(network):
    """The engine that runs `network`: "onnx" (an OnnxNetwork) or "tf" (a Keras network)."""
    return getattr(network, "engine", "tf")


_COMPILED = weakref.WeakKeyDictionary()  # Keras network -> its compiled forward pass


def forward(network):
    """What to call to run `network` on a batch (N, H, W, 4): an OnnxNetwork itself; a Keras
    network's forward pass compiled once (tf.function) for any batch, height and width. Called
    eagerly, a Keras network spends about 0.1 s of each call in Python. The compiled pass reads
    the network's weights when it runs, so it follows training."""
    if not isinstance(network, keras.Model):
        return network
    compiled = _COMPILED.get(network)
    if compiled is None:
        reference = weakref.ref(network)  # the cache must not keep the network alive
        compiled = tf.function(lambda x: reference()(x, training=False), input_signature=[
            tf.TensorSpec((None, None, None, 4), tf.float32)])
        _COMPILED[network] = compiled
    return compiled


def fingerprint(network):
    """sha256 of the network version and of every weight (shape and bytes), in network.weights
    order: the same for the same weights, however they were loaded."""
    digest = hashlib.sha256(f"network version {NETWORK_VERSION}".encode())
    for weight in network.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Converting


def folded(network, policy=None):
    """A copy of the completion network without its batch norms, each folded into the
    convolution before it: gamma (conv(x) + b - mean) / sqrt(var + eps) + beta is a convolution
    with its kernel scaled per output channel and a new bias. The same outputs at inference.
    policy: a Keras dtype policy for every layer but the output layer, which stays float32 as
    in training: "bfloat16" (or "float16") keeps the folded weights in that precision, as a
    mixed policy would cast them at every call (the same outputs, without the casts: about 10 %
    faster at one 128 px image on a 2-core CPU with AMX), "mixed_bfloat16" keeps them float32.
    The folding itself is computed in float32 from the network's own weights."""
    def skip_batch_norm(layer, *args, **kwargs):
        return args[0] if isinstance(layer, layers.BatchNormalization) else layer(*args, **kwargs)

    def with_policy(layer):
        if policy is None or layer is network.layers[-1]:
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    copy = keras.models.clone_model(network, clone_function=with_policy,
                                    call_function=skip_batch_norm)
    producer = {id(layer.output): layer for layer in network.layers}
    for layer in network.layers:
        if not isinstance(layer, layers.BatchNormalization):
            copy.get_layer(layer.name).set_weights(layer.get_weights())
            continue
        original = producer[id(layer.input)]
        conv = copy.get_layer(original.name)
        kernel, bias = original.get_weights()
        gamma, beta, mean, variance = (w.numpy() for w in (
            layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
        scale = gamma / np.sqrt(variance + layer.epsilon)
        # Output channels: the last axis of a Conv2D kernel, the one before it of a transposed one.
        axis = -2 if isinstance(original, layers.Conv2DTranspose) else -1
        shape = [-1 if i == kernel.ndim + axis else 1 for i in range(kernel.ndim)]
        conv.set_weights([kernel * scale.reshape(shape), (bias - mean) * scale + beta])
    return copy


def same_padding(kernels, rates):
    """TensorFlow's "same" padding of a stride-1 convolution, in explicit_paddings' order for
    height and width: (k - 1) * d split as TensorFlow splits it."""
    pads = []
    for kernel, dilation in zip(kernels, rates):
        total = (kernel - 1) * dilation
        pads += [total // 2, total - total // 2]
    return pads


def dilated_convolutions(g, ops):
    """A tf2onnx rewriter giving each dilated "same" convolution of the completion network (their
    height and width are not fixed) explicit padding, as one dilated ONNX Conv:
    - model.DilatedConv2D's Conv2D ops with dilations: tf2onnx would write "same" as
      auto_pad SAME_UPPER, which ONNX Runtime does not run with dilations;
    - Keras' own dilated convolutions (TensorFlow's default CPU kernels): SpaceToBatchND,
      Conv2D, BatchToSpaceND, which tf2onnx turns back into one dilated Conv only when the size
      is fixed or the padding "valid"."""
    from tf2onnx.graph_matcher import GraphMatcher, OpTypePattern
    for conv in ops:
        if (conv.type == "Conv2D" and conv.get_attr_value("padding") == b"SAME"
                and conv.get_attr_value("strides") == [1, 1, 1, 1]
                and conv.get_attr_value("data_format") == b"NHWC"
                and max(conv.get_attr_value("dilations", [1, 1, 1, 1])) > 1):
            rates = conv.get_attr_value("dilations")[1:3]
            pads = same_padding(g.get_shape(conv.input[1])[:2], rates)
            conv.set_attr("padding", "EXPLICIT")
            conv.set_attr("explicit_paddings", [0, 0, *pads, 0, 0])
    pattern = OpTypePattern("BatchToSpaceND", name="batch_to_space", inputs=[
        OpTypePattern("Conv2D", name="conv", inputs=[
            OpTypePattern("SpaceToBatchND", name="space_to_batch",
                          inputs=["*", "Const|ConstV2", "*"]), "*"]),
        "Const|ConstV2", "*"])
    for match in list(GraphMatcher(pattern, allow_reorder=False).match_ops(ops)):
        space_to_batch, conv, batch_to_space = (match.get_op(name) for name in (
            "space_to_batch", "conv", "batch_to_space"))
        rate = space_to_batch.inputs[1].get_tensor_value(as_list=True)
        if (rate != batch_to_space.inputs[1].get_tensor_value(as_list=True)
                or conv.get_attr_value("strides") != [1, 1, 1, 1]
                or conv.get_attr_value("data_format") != b"NHWC"):
            continue
        pads = [0, 0, *same_padding(g.get_shape(conv.input[1])[:2], rate)]
        g.replace_inputs(conv, [space_to_batch.input[0], conv.input[1]])
        g.copy_shape(batch_to_space.output[0], conv.output[0])
        g.replace_all_inputs(batch_to_space.output[0], conv.output[0])
        conv.set_attr("dilations", [1, *rate, 1])
        conv.set_attr("padding", "EXPLICIT")
        conv.set_attr("explicit_paddings", pads + [0, 0])
    return g.get_nodes()


def to_onnx(network, path):
    """Convert the Keras completion network to an ONNX file at `path` (written whole or not at
    all), for any batch and any height and width divisible by 4. Returns the metadata it
    stores: the fingerprint of the weights, the network version, the opset, and the versions
    of the converters."""
    import onnx
    import tf2onnx
    signature = [tf.TensorSpec((None, None, None, 4), tf.float32, name="masked_image_and_mask")]
    copy = folded(network)
    function = tf.function(lambda x: copy(x, training=False), input_signature=signature)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET,
                                             custom_rewriter=[dilated_convolutions])
    check(network, proto.SerializeToString())
    metadata = {"fingerprint": fingerprint(network), "network_version": str(NETWORK_VERSION),
                "opset": str(OPSET), "tensorflow": tf.__version__,
                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}
    onnx.helper.set_model_props(proto, metadata)
    write_atomically(path, proto.SerializeToString())
    return metadata


def check(network, model):
    """Raise if the converted `model` (bytes) does not compute what `network` computes, on a
    small input with a hole touching the border."""
    rng = np.random.default_rng(0)
    inputs = rng.uniform(size=(1, 44, 60, 4)).astype(np.float32)
    inputs[..., 3] = 0.0
    inputs[:, :20, 30:, 3] = 1.0
    expected = np.asarray(network(inputs, training=False))
    session = inference_session(model)
    got = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= TOLERANCE:
        raise RuntimeError(f"the ONNX conversion of the completion network differs from"
                           f" TensorFlow's by up to {difference:.3g}")


def write_atomically(path, data):
    """Write via a file of this process's own, renamed into place: readers (and other processes
    converting at the same time) see the old file or a whole new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


# ---------------------------------------------------------------------------------------------
# Running


def cores():
    """The number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def inference_session(model, threads=None):
    """An onnxruntime session on the CPU for `model` (a path or the bytes of an ONNX file): one
    operator at a time, each on `threads` threads (default: every core this process may use)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """The completion network converted by to_onnx, run by ONNX Runtime; called as the Keras
    network is: network(inputs (N, H, W, 4), training=False) -> NumPy float32 (N, H, W, 3)."""
    engine = "onnx"

    def __init__(self, path, threads=None):
        self.path = path
        self.session = inference_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.fingerprint = self.metadata.get("fingerprint")

    def __call__(self, inputs, training=False):
        inputs = np.asarray(inputs, np.float32)
        return self.session.run(None, {self.input_name: inputs})[0]


# ---------------------------------------------------------------------------------------------
# Choosing


def choose(engine=None, precision="auto", gpu=None, path=None):
    """(engine, precision, why) that complete.py, evaluate.py and serve.py run the network with,
    for --engine `engine` (None: not given) and --precision `precision`.

    auto is a rule on the machine, from bench.py's figures (docs/performance.md): on a CPU
    that computes bfloat16 natively (avx512_bf16, amx_bf16 or ARM's bf16 in /proc/cpuinfo),
    TensorFlow in bfloat16, 1.8-2.1x the faster of TensorFlow's and ONNX Runtime's float32
    there with AVX-512 BF16 and 3.2-5.4x with AMX; on a GPU,
    TensorFlow in float16; elsewhere float32 by ONNX Runtime, as fast as TensorFlow's float32
    on an AVX2 CPU, where bfloat16 is emulated and many times slower. ONNX Runtime runs
    float32 only. Nothing is timed at start-up."""
    if precision == "auto" and engine == "onnx":
        return "onnx", "float32", "--engine onnx: ONNX Runtime runs the network in float32"
    resolved, why = devices.resolve_precision(precision, gpu, path)
    if resolved != "float32":
        if engine == "onnx":
            raise utils.UserError(f"--engine onnx: ONNX Runtime runs the network in float32"
                                  f" only, not {resolved}; use --precision float32, or --engine"
                                  " tf")
        return "tf", resolved, why
    return engine or ("onnx" if available()[0] else "tf"), "float32", why


def for_network(network, cache_path, engine=None, precision="auto"):
    """What to run for the float32 Keras completion `network`, with the engine and precision
    of choose(engine, precision):
    - TensorFlow in float32: the network itself;
    - TensorFlow in bfloat16 or float16: a copy with its batch norms folded (folded), its
      weights and computation in that precision but for the float32 output layer;
    - ONNX Runtime: an OnnxNetwork read from `cache_path`, converted there first when that file
      is missing or holds other weights. If its folder cannot be written, the file is kept in
      the temporary folder instead.
    The result's `precision` and `precision_why` attributes say which precision and why."""
    asked = engine
    engine, precision, why = choose(engine, precision)
    ready, reason = available()
    if engine == "tf" and precision == "float32" and not ready and asked is None:
        print(f"TensorFlow runs the completion network: {reason} (for ONNX Runtime:"
              f" {INSTALL})")
    if engine == "tf":
        chosen = network if precision == "float32" else folded(network, precision)
    elif not ready:
        raise utils.UserError(f"--engine onnx: {reason} ({INSTALL})")
    else:
        chosen = onnx_network(network, cache_path)
    chosen.precision, chosen.precision_why = precision, why
    return chosen


def precision_of(network):
    """The precision `network` computes in: "float32" unless for_network chose another."""
    return getattr(network, "precision", "float32")


def describe(network):
    """E.g. "TensorFlow, bfloat16 (auto: this CPU computes bfloat16 natively (avx512_bf16))"."""
    name = {"onnx": "ONNX Runtime", "tf": "TensorFlow"}[name_of(network)]
    why = getattr(network, "precision_why", "")
    return f"{name}, {precision_of(network)}" + (f" ({why})" if why else "")


def onnx_network(network, cache_path):
    """The OnnxNetwork of `network`'s weights, from `cache_path` or converted there (or, if
    its folder cannot be written, in the temporary folder)."""
    wanted = fingerprint(network)
    fallback = os.path.join(tempfile.gettempdir(), "glcic-onnx", f"{wanted}.onnx")
    for path in (cache_path, fallback):
        cached = read_cache(path, wanted)
        if cached:
            return cached
        if path == cache_path and not writable(os.path.dirname(os.path.abspath(path))):
            continue
        print(f"Converting the completion network to ONNX once: {path}", end=" ", flush=True)
        start = time.perf_counter()
        try:
            to_onnx(network, path)
        except OSError as error:
            raise utils.UserError(f"{path}: cannot write the converted network"
                                  f" ({error.strerror or error}); or use --engine tf")
        print(f"({time.perf_counter() - start:.1f} s)")
        return OnnxNetwork(path)


def read_cache(path, wanted):
    """The OnnxNetwork at `path` if it was converted from the weights of fingerprint `wanted`;
    None if it was not, or if the file is missing or unreadable (then it is converted again)."""
    if not os.path.isfile(path):
        return None
    try:
        network = OnnxNetwork(path)
    except Exception:  # onnxruntime's errors have no common base but Exception
        return None
    return network if network.fingerprint == wanted else None


def writable(folder):
    """True if a file can be created in `folder` (made if missing)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
