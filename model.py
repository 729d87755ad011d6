"""The two networks of Iizuka et al., "Globally and Locally Consistent Image Completion" (2017).

Each layer list below is the paper's Table 1 (completion network) and Table 2 (context
discriminator), row by row, so the code can be checked against the paper line by line.

The completion network computes exactly what the authors' released Torch7 network computes
(completionnet_places2.t7, run by their inpaint.lua): symmetric zero padding (k - 1) / 2 *
dilation on every convolution, stride-2 ones included; 4x4 transposed convolutions with
padding 1; batch norm with Torch's epsilon 1e-5; and the image mean-centred, zero in the hole,
before the first layer. NETWORK_VERSION counts changes to what the network computes, so that a
checkpoint of an earlier one is refused instead of silently computing something else.
"""
import functools
import os

import keras
import tensorflow as tf
from keras import layers, ops

NETWORK_VERSION = 2

# Completion network (Table 1): (kind, kernel, dilation, stride, channels out).
# "deconv" rows are 4x4 transposed convolutions with stride 1/2, i.e. x2 upsampling.
COMPLETION_LAYERS = [
    ("conv", 5, 1, 1, 64),
    ("conv", 3, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("conv", 3, 1, 2, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 2, 1, 256),
    ("conv", 3, 4, 1, 256),
    ("conv", 3, 8, 1, 256),
    ("conv", 3, 16, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("deconv", 4, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("deconv", 4, 1, 2, 64),
    ("conv", 3, 1, 1, 32),
    ("output", 3, 1, 1, 3),
]

# Context discriminator (Table 2): 5x5 stride-2 convolutions, then one 1024-wide FC layer.
GLOBAL_CHANNELS = [64, 128, 256, 512, 512, 512]
LOCAL_CHANNELS = [64, 128, 256, 512, 512]
FC_UNITS = 1024


@keras.saving.register_keras_serializable(package="glcic")
class MeanCentre(layers.Layer):
    """[RGB in [0, 1], hole mask] -> [RGB minus the mean pixel, 0 in the hole; mask], the input
    of the official network. The mean pixel is a (non-trainable) weight of the network, saved
    with it; whatever fills the hole in the input is ignored."""

    def __init__(self, mean_pixel=(0.5, 0.5, 0.5), **kwargs):
        super().__init__(**kwargs)
        self.initial_mean = [float(v) for v in mean_pixel]

    def build(self, input_shape):
        self.mean_pixel = self.add_weight(
            name="mean_pixel", shape=(3,), trainable=False,
            initializer=keras.initializers.Constant(self.initial_mean))

    def call(self, inputs):
        rgb, mask = inputs[..., :3], inputs[..., 3:]
        centred = (rgb - ops.cast(self.mean_pixel, rgb.dtype)) * (1.0 - mask)
        return ops.concatenate([centred, mask], axis=-1)

    def get_config(self):
        return {**super().get_config(), "mean_pixel": self.initial_mean}


def native_dilation(dtype="float32"):
    """Whether dilated Conv2D ops of `dtype` have gradients here: on a GPU, or with oneDNN's CPU
    kernels (runtime.py turns them on unless TF_ENABLE_ONEDNN_OPTS=0), which do not take
    float16, and take bfloat16 only on CPUs where oneDNN computes it (AVX-512 and later: on
    others TensorFlow's own kernels run bfloat16, without that gradient)."""
    if tf.config.list_physical_devices("GPU"):
        return True
    dtype = tf.as_dtype(dtype)
    return (os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").lower() in ("1", "true")
            and (dtype == tf.float32 or dtype == tf.bfloat16 and dilated_gradient_runs(dtype)))


@functools.cache
def dilated_gradient_runs(dtype):
    """Whether this CPU's kernels give the input gradient of a dilated convolution in `dtype`:
    tried once on a tiny one, as which kernels TensorFlow picks depends on the CPU."""
    try:
        with tf.init_scope():  # eagerly, also when first asked while a step is traced
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[1, 8, 8, 1], filter=tf.ones((3, 3, 1, 1), dtype),
                out_backprop=tf.ones((1, 8, 8, 1), dtype), strides=[1, 1, 1, 1],
                padding="SAME", dilations=[1, 2, 2, 1])
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
            tf.errors.NotFoundError):
        return False


@keras.saving.register_keras_serializable(package="glcic")
class DilatedConv2D(layers.Conv2D):
    """Keras' Conv2D, computing the same outputs and gradients, whose dilated convolution is one
    Conv2D op with dilations (oneDNN's dilated kernel on a CPU, cuDNN's on a GPU). Keras runs
    it on TensorFlow as space-to-batch, an undilated convolution of many small images, and
    batch-to-space: forward and backward of the paper's 16-dilated layer take 2.6x as long on
    a 2-core CPU that way (1.5x for the 8-dilated one). TensorFlow's default CPU kernels have
    no gradient for it: where they would run it (TF_ENABLE_ONEDNN_OPTS=0 or float16, without
    a GPU) it takes Keras' path."""

    def convolution_op(self, inputs, kernel):
        if (max(self.dilation_rate) == 1 or max(self.strides) > 1 or self.groups != 1
                or self.data_format != "channels_last" or not native_dilation(inputs.dtype)):
            return super().convolution_op(inputs, kernel)
        return tf.nn.conv2d(inputs, kernel, strides=1, padding=self.padding.upper(),
                            dilations=list(self.dilation_rate))


@keras.saving.register_keras_serializable(package="glcic")
class FusedBatchNorm(layers.BatchNormalization):
    """Keras' batch normalization, computing the same outputs, gradients and moving statistics
    with TensorFlow's fused kernel (FusedBatchNormV3, oneDNN's on a CPU): one pass over the
    activations forward and one backward, instead of Keras' separate mean, variance,
    normalisation and their gradients (9 % faster completion-network steps on a 2-core CPU,
    measured in one process against Keras' layer), and one pass in inference too (the
    completion network's forward pass in the discriminator's updates). What the kernel does
    not cover (statistics synchronized across devices in training, masks, renorm, float64,
    inputs other than NHWC images) takes Keras' own path."""

    def call(self, inputs, training=None, mask=None):
        training = bool(training and self.trainable)
        if ((training and self.synchronized) or mask is not None
                or self.renorm or not (self.scale and self.center) or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or self.variable_dtype != "float32"
                or tf.as_dtype(inputs.dtype) not in (tf.float32, tf.float16, tf.bfloat16)):
            return super().call(inputs, training=training, mask=mask)
        # Statistics in float32 whatever the policy, as Keras: the kernel computes them in
        # float32 (its scale, offset, mean and variance type) from bfloat16 activations too, so
        # these stay bfloat16, without a cast to float32 and back around every batch norm.
        x = inputs if tf.as_dtype(inputs.dtype) == tf.bfloat16 else ops.cast(inputs, "float32")
        scale, offset = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if not training:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)[0]
            return ops.cast(y, self.compute_dtype)
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=self.epsilon,
            data_format="NHWC", is_training=True, exponential_avg_factor=1.0)
        # The kernel returns the unbiased batch variance; Keras averages the biased one.
        count = ops.cast(ops.size(x) // ops.shape(x)[-1], "float32")
        variance = variance * (count - 1.0) / ops.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(y, self.compute_dtype)


def spectrally_normalized(kernel, u, training):
    """kernel (..., out) divided by its largest singular value as a (-1, out) matrix (Miyato et
    al. 2018, "Spectral Normalization for GANs"), estimated by one power iteration from u
    (1, out), which a training call updates (so the estimate sharpens as training goes). The
    gradient flows through the singular value, not the iteration's vectors."""
    w = ops.reshape(ops.cast(kernel, u.dtype), (-1, kernel.shape[-1]))
    v = ops.stop_gradient(normalized(ops.matmul(u.value, ops.transpose(w))))
    new_u = ops.stop_gradient(normalized(ops.matmul(v, w)))
    sigma = ops.sum(ops.matmul(v, w) * new_u)
    if training:
        u.assign(new_u)
    return kernel / ops.cast(sigma, kernel.dtype)


def normalized(x):
    return x / ops.maximum(ops.sqrt(ops.sum(x * x)), 1e-12)


class SpectralNormalization:
    """Mixin of SpectralConv2D and SpectralDense: the power iteration's vector u, a weight
    that is not trained (mean over replicas: each computes the same)."""

    def build(self, input_shape):
        super().build(input_shape)
        units = self.filters if hasattr(self, "filters") else self.units
        self.u = self.add_weight(shape=(1, units), name="u", trainable=False, autocast=False,
                                 aggregation="mean",
                                 initializer="random_normal")


@keras.saving.register_keras_serializable(package="glcic")
class SpectralConv2D(SpectralNormalization, layers.Conv2D):
    """Conv2D with a spectrally normalized kernel (--gan-loss hinge's discriminator)."""

    def call(self, inputs, training=None):
        kernel = spectrally_normalized(self.kernel, self.u, training)
        return self.convolution_op(inputs, kernel) + ops.reshape(self.bias, (1, 1, 1, -1))


@keras.saving.register_keras_serializable(package="glcic")
class SpectralDense(SpectralNormalization, layers.Dense):
    """Dense with a spectrally normalized kernel (--gan-loss hinge's discriminator)."""

    def call(self, inputs, training=None):
        kernel = spectrally_normalized(self.kernel, self.u, training)
        return ops.matmul(inputs, kernel) + self.bias


@keras.saving.register_keras_serializable(package="glcic")
class LeakyReLU(layers.LeakyReLU):
    """Keras' LeakyReLU as max(x, slope * x): the same values and gradients, without
    TensorFlow's LeakyRelu op, whose fusion with the convolution before it (grappler's
    remapper) fails in the training step and logs an error for every traced step."""

    def call(self, inputs):
        return ops.maximum(inputs, inputs * self.negative_slope)


@keras.saving.register_keras_serializable(package="glcic")
class CheckerboardFree(keras.initializers.Initializer):
    """--transposed-init checkerboard-free: a 4x4 stride-2 transposed kernel (4, 4, out, in)
    that is a 3x3 kernel drawn as Keras draws a 3x3 convolution's (Glorot uniform) convolved
    with a 2x2 box. Such a layer computes nearest-neighbour upsampling followed by that 3x3
    convolution (Odena et al. 2016), so the four output pixels of each 2x2 block start with the
    same total weight: no checkerboard at the start, which training is free to move away from."""

    def __init__(self, seed=None):
        self.seed = seed
        self.small = keras.initializers.GlorotUniform(seed)

    def __call__(self, shape, dtype=None):
        height, width, out_channels, in_channels = shape
        return box_convolved(self.small((height - 1, width - 1, out_channels, in_channels),
                                        dtype=dtype))

    def get_config(self):
        return {"seed": self.seed}


def box_convolved(small):
    """A (k, k, ...) kernel convolved with a 2x2 box: the (k + 1, k + 1, ...) kernel of a
    stride-2 transposed convolution that computes nearest-neighbour upsampling followed by a
    convolution with `small` (CheckerboardFree)."""
    return sum(ops.pad(small, [[dy, 1 - dy], [dx, 1 - dx], [0, 0], [0, 0]])
               for dy in (0, 1) for dx in (0, 1))


def conv_bn_relu(x, channels, kernel, stride=1, dilation=1, transpose=False, name="conv",
                 dtype=None, synchronized=False, upsampling="transposed",
                 transposed_init="default"):
    if transpose and upsampling == "resize":  # the same x2, without the checkerboard
        x = layers.UpSampling2D(stride, interpolation="nearest",
                                name=name.replace("conv", "up"), dtype=dtype)(x)
        x = layers.Conv2D(channels, kernel - 1, padding="same", name=name, dtype=dtype)(x)
    elif transpose:  # Keras "same" pads a 4x4 stride-2 transposed convolution by 1: Torch's 1
        initializer = (CheckerboardFree() if transposed_init == "checkerboard-free"
                       else "glorot_uniform")
        x = layers.Conv2DTranspose(channels, kernel, strides=stride, padding="same", name=name,
                                   kernel_initializer=initializer, dtype=dtype)(x)
    else:
        if stride > 1:  # "same" would pad (0, 1) on even sizes; Torch pads both sides alike
            pad = (kernel - 1) // 2 * dilation
            x = layers.ZeroPadding2D(pad, name=name.replace("conv", "pad"), dtype=dtype)(x)
        x = (DilatedConv2D if dilation > 1 else layers.Conv2D)(
            channels, kernel, strides=stride, dilation_rate=dilation,
            padding="valid" if stride > 1 else "same", name=name, dtype=dtype)(x)
    # Torch's batch norm: momentum 0.1 there (0.9 here), epsilon 1e-5 (Keras: 1e-3).
    x = FusedBatchNorm(momentum=0.9, epsilon=1e-5, synchronized=synchronized,
                       name=name.replace("conv", "bn"), dtype=dtype)(x)
    return layers.ReLU(name=name.replace("conv", "relu"), dtype=dtype)(x)


# `dtype` below is a Keras dtype policy: None (float32) or "mixed_float16" / "mixed_bfloat16",
# which compute in half precision with float32 weights. The last layer of each network always
# computes in float32, so outputs and losses are float32 whatever the policy.
# `synchronized` batch norm takes its statistics over the global batch when the batch is split
# across devices (tf.distribute), so N devices compute what one device would.
# `width_divisor` divides the channels of every layer but the outputs (1: the paper's widths);
# the tests use 8, for the same layers with checkpoints of a few megabytes.

def build_completion_network(dtype=None, synchronized=False, width_divisor=1,
                             mean_pixel=(0.5, 0.5, 0.5), upsampling="transposed",
                             transposed_init="default"):
    """RGB in [0, 1] (the hole's content is ignored), plus the hole mask -> RGB in [0, 1].

    Fully convolutional: any height and width divisible by 4. `mean_pixel` is the training
    set's, kept as a weight (a checkpoint or an export restores it). upsampling "resize":
    each "deconv" row of Table 1 is nearest-neighbour x2 upsampling and a 3x3 convolution
    (--upsampling); transposed_init: the initializer of the transposed ones (--transposed-init).
    """
    inputs = keras.Input((None, None, 4), name="masked_image_and_mask")
    x = MeanCentre(mean_pixel, name="mean_centre", dtype=dtype)(inputs)
    for i, (kind, kernel, dilation, stride, channels) in enumerate(COMPLETION_LAYERS, 1):
        if kind == "output":
            x = layers.Conv2D(channels, kernel, padding="same", activation="sigmoid",
                              name=f"conv{i}", dtype="float32")(x)
        else:
            x = conv_bn_relu(x, channels // width_divisor, kernel, stride, dilation,
                             transpose=kind == "deconv", name=f"conv{i}", dtype=dtype,
                             synchronized=synchronized, upsampling=upsampling,
                             transposed_init=transposed_init)
    return keras.Model(inputs, x, name="completion_network")


def estimate_batch_norm_statistics(network, inputs):
    """Set the moving mean and variance of every batch norm of `network` to the mean of its
    batch statistics over `inputs` (a list of input batches); the weights are unchanged. With
    small batches, running averages follow the last few batches: these are steadier."""
    norms = [layer for layer in network.layers if isinstance(layer, layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for k, x in enumerate(inputs):
            for layer in norms:
                layer.momentum = k / (k + 1)  # new = (k * mean so far + this batch) / (k + 1)
            network(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def discriminator_branch(x, channels, prefix, dtype, synchronized, width_divisor, spectral):
    for i, c in enumerate(channels, 1):
        name = f"{prefix}_conv{i}"
        if spectral:
            x = layers.ZeroPadding2D(2, name=name.replace("conv", "pad"), dtype=dtype)(x)
            x = SpectralConv2D(c // width_divisor, 5, strides=2, name=name, dtype=dtype)(x)
            x = LeakyReLU(0.2, name=name.replace("conv", "relu"), dtype=dtype)(x)
        else:
            x = conv_bn_relu(x, c // width_divisor, 5, stride=2, name=name, dtype=dtype,
                             synchronized=synchronized)
    x = layers.Flatten(name=f"{prefix}_flatten", dtype=dtype)(x)
    if spectral:
        x = SpectralDense(FC_UNITS // width_divisor, name=f"{prefix}_fc", dtype=dtype)(x)
        return LeakyReLU(0.2, name=f"{prefix}_fc_relu", dtype=dtype)(x)
    return layers.Dense(FC_UNITS // width_divisor, activation="relu", name=f"{prefix}_fc",
                        dtype=dtype)(x)


def build_context_discriminator(image_size, local_size, dtype=None, synchronized=False,
                                width_divisor=1, normalization="batch"):
    """[whole images (B,S,S,3), local patches (B,L,L,3)] -> real/fake logits (B, 1).

    normalization "batch": the paper's (batch norm and ReLU after every convolution).
    "spectral" (--gan-loss hinge, not the paper's): the same layers without batch norm, every
    convolution and fully connected layer spectrally normalized, leaky ReLU (slope 0.2), as
    the discriminators of SN-GAN and DeepFill v2: each image judged alone, its gradient
    bounded."""
    images = keras.Input((image_size, image_size, 3), name="image")
    patches = keras.Input((local_size, local_size, 3), name="local_patch")
    settings = (dtype, synchronized, width_divisor, normalization == "spectral")
    features = layers.Concatenate(name="concat", dtype=dtype)([
        discriminator_branch(images, GLOBAL_CHANNELS, "global", *settings),
        discriminator_branch(patches, LOCAL_CHANNELS, "local", *settings),
    ])
    output = SpectralDense if normalization == "spectral" else layers.Dense
    logits = output(1, name="logit", dtype="float32")(features)
    return keras.Model([images, patches], logits, name="context_discriminator")


# ---------------------------------------------------------------------------------------------
# Analytic cost: multiply-adds of the convolutions and fully connected layers, counted as two
# floating-point operations each (batch norm, ReLU and biases are a fraction of a percent).

def conv_flops(height, width, kernel, channels_in, channels_out):
    """FLOPs of a convolution producing a height x width map (any stride or dilation)."""
    return 2 * height * width * kernel * kernel * channels_in * channels_out


def completion_flops(height, width=None, upsampling="transposed"):
    """Forward FLOPs of the completion network on one height x width image."""
    width = width or height
    flops, channels_in, scale = 0, 4, 1
    for kind, kernel, _dilation, stride, channels in COMPLETION_LAYERS:
        if kind == "deconv" and upsampling == "resize":  # a 3x3 convolution after upsampling
            scale //= stride
            flops += conv_flops(height // scale, width // scale, kernel - 1, channels_in,
                                channels)
        elif kind == "deconv":
            # Every input pixel spreads a kernel x kernel footprint into the output.
            flops += conv_flops(height // scale, width // scale, kernel, channels_in, channels)
            scale //= stride
        else:
            scale *= stride
            flops += conv_flops(height // scale, width // scale, kernel, channels_in, channels)
        channels_in = channels
    return flops


def discriminator_flops(image_size, local_size):
    """Forward FLOPs of the context discriminator on one image and its local patch."""
    flops = 2 * 2 * FC_UNITS  # the final logit layer
    for size, channel_list in ((image_size, GLOBAL_CHANNELS), (local_size, LOCAL_CHANNELS)):
        channels_in = 3
        for channels in channel_list:
            size = -(-size // 2)  # stride 2, "same" padding
            flops += conv_flops(size, size, 5, channels_in, channels)
            channels_in = channels
        flops += 2 * size * size * channels_in * FC_UNITS
    return flops
