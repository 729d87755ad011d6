"""The two networks of model.py against SPEC.md section 1 (the paper's Tables 1 and 2).

The expected architecture is written out here, copied from SPEC.md, and deliberately not read
from model.COMPLETION_LAYERS / GLOBAL_CHANNELS / LOCAL_CHANNELS: a typo in model.py must fail.
"""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch7
from keras import layers

import model

# SPEC.md section 1, completion network: (type, kernel, dilation, stride, channels out).
# Stride 2 on a "deconv" row means the paper's stride 1/2, i.e. a x2 transposed convolution.
SPEC_COMPLETION = [
    ("conv", 5, 1, 1, 64),       # 1
    ("conv", 3, 1, 2, 128),      # 2
    ("conv", 3, 1, 1, 128),      # 3
    ("conv", 3, 1, 2, 256),      # 4
    ("conv", 3, 1, 1, 256),      # 5
    ("conv", 3, 1, 1, 256),      # 6
    ("conv", 3, 2, 1, 256),      # 7  dilated
    ("conv", 3, 4, 1, 256),      # 8  dilated
    ("conv", 3, 8, 1, 256),      # 9  dilated
    ("conv", 3, 16, 1, 256),     # 10 dilated
    ("conv", 3, 1, 1, 256),      # 11
    ("conv", 3, 1, 1, 256),      # 12
    ("deconv", 4, 1, 2, 128),    # 13 transposed, x2 up
    ("conv", 3, 1, 1, 128),      # 14
    ("deconv", 4, 1, 2, 64),     # 15 transposed, x2 up
    ("conv", 3, 1, 1, 32),       # 16
    ("output", 3, 1, 1, 3),      # 17 sigmoid
]
SPEC_GLOBAL_CHANNELS = [64, 128, 256, 512, 512, 512]
SPEC_LOCAL_CHANNELS = [64, 128, 256, 512, 512]
SPEC_FC = 1024


def producer(tensor):
    """The layer whose output is this symbolic tensor."""
    return tensor._keras_history.operation


def source(model_, name):
    """The layer feeding the (single-input) layer `name`."""
    return producer(model_.get_layer(name).input)


def fed_by(model_, name):
    """The layer feeding convolution `name`, past its symmetric zero padding if it has one."""
    layer = source(model_, name)
    return source(model_, layer.name) if isinstance(layer, layers.ZeroPadding2D) else layer


def check_padding(model_, conv, dilation=1):
    """Stride 1: "same" (symmetric for odd kernels). Stride 2: Torch's symmetric (k-1)/2*d on
    both sides, then a "valid" convolution (Keras' "same" would pad (0, 1) on even sizes)."""
    k = conv.kernel_size[0]
    if conv.strides[0] == 1 or isinstance(conv, layers.Conv2DTranspose):
        assert conv.padding == "same"
        return
    assert conv.padding == "valid"
    pad = source(model_, conv.name)
    assert isinstance(pad, layers.ZeroPadding2D)
    p = (k - 1) // 2 * dilation
    assert tuple(map(tuple, pad.padding)) == ((p, p), (p, p))


def has_layer(model_, name):
    return any(layer.name == name for layer in model_.layers)


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(0)
    return model.build_completion_network()


@pytest.fixture(scope="module")
def discriminator():
    keras.utils.set_random_seed(0)
    return model.build_context_discriminator(64, 32)


# ------------------------------------------------------------------------------------------
# Completion network


@pytest.mark.parametrize("row", range(1, 18))
def test_completion_layer_matches_spec_row(generator, row):
    kind, kernel, dilation, stride, channels = SPEC_COMPLETION[row - 1]
    conv = generator.get_layer(f"conv{row}")
    expected_class = (layers.Conv2DTranspose if kind == "deconv" else
                      model.DilatedConv2D if dilation > 1 else layers.Conv2D)
    assert type(conv) is expected_class, f"conv{row} is {type(conv).__name__}"
    assert tuple(conv.kernel_size) == (kernel, kernel)
    assert tuple(conv.dilation_rate) == (dilation, dilation)
    assert tuple(conv.strides) == (stride, stride)
    assert conv.filters == channels
    check_padding(generator, conv, dilation)
    assert conv.use_bias


@pytest.mark.parametrize("row", range(1, 17))
def test_completion_rows_1_to_16_are_conv_bn_relu(generator, row):
    conv = generator.get_layer(f"conv{row}")
    bn = generator.get_layer(f"bn{row}")
    relu = generator.get_layer(f"relu{row}")
    # The convolution itself is linear: batch norm and then ReLU come after it.
    assert conv.get_config()["activation"] == "linear"
    assert isinstance(bn, model.FusedBatchNorm)
    assert bn.epsilon == 1e-5  # Torch's (Keras' default is 1e-3)
    assert isinstance(relu, layers.ReLU)
    relu_config = relu.get_config()
    assert relu_config["negative_slope"] == 0 and relu_config["max_value"] is None
    assert relu_config["threshold"] == 0
    # Wiring: conv{i} -> bn{i} -> relu{i} -> conv{i+1}
    assert source(generator, f"bn{row}") is conv
    assert source(generator, f"relu{row}") is bn
    assert fed_by(generator, f"conv{row + 1}") is relu


def test_completion_last_row_is_sigmoid_without_batch_norm(generator):
    last = generator.get_layer("conv17")
    assert last.get_config()["activation"] == "sigmoid"
    assert not has_layer(generator, "bn17")
    assert not has_layer(generator, "relu17")
    assert producer(generator.outputs[0]) is last


def test_completion_first_layer_reads_the_mean_centred_input(generator):
    centre = source(generator, "conv1")
    assert isinstance(centre, model.MeanCentre)
    assert isinstance(source(generator, centre.name), layers.InputLayer)


def test_completion_has_exactly_17_convolutions_and_16_batch_norms(generator):
    convs = [l for l in generator.layers if isinstance(l, (layers.Conv2D, layers.Conv2DTranspose))]
    assert [l.name for l in convs] == [f"conv{i}" for i in range(1, 18)]
    bns = [l.name for l in generator.layers if isinstance(l, layers.BatchNormalization)]
    assert bns == [f"bn{i}" for i in range(1, 17)]


def test_completion_layer_order_is_a_plain_chain(generator):
    expected = ["masked_image_and_mask", "mean_centre"]
    for i in range(1, 17):
        expected += [f"pad{i}"] if i in (2, 4) else []
        expected += [f"conv{i}", f"bn{i}", f"relu{i}"]
    expected.append("conv17")
    assert [l.name for l in generator.layers] == expected


def test_completion_input_shape(generator):
    assert tuple(generator.input_shape) == (None, None, None, 4)
    assert tuple(generator.output_shape) == (None, None, None, 3)


@pytest.mark.parametrize("batch,height,width", [(1, 32, 32), (2, 48, 64), (1, 64, 40),
                                                (2, 32, 32)])
def test_completion_output_shape_and_range(generator, batch, height, width):
    rng = np.random.default_rng(batch * 1000 + height + width)
    x = rng.uniform(0, 1, (batch, height, width, 4)).astype(np.float32)
    x[..., 3] = (x[..., 3] > 0.5)
    y = np.asarray(generator(x, training=False))
    assert y.shape == (batch, height, width, 3)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_completion_output_stays_in_unit_range_for_extreme_inputs(generator):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 50, (1, 32, 32, 4)).astype(np.float32)
    y = np.asarray(generator(x, training=True))  # batch statistics: large activations
    assert y.shape == (1, 32, 32, 3)
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert y.std() > 0  # not a constant output


def test_completion_output_depends_on_mask_channel(generator):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (1, 32, 32, 4)).astype(np.float32)
    x[..., 3] = 0
    x2 = x.copy()
    x2[:, 8:20, 8:20, 3] = 1
    y1 = np.asarray(generator(x, training=False))
    y2 = np.asarray(generator(x2, training=False))
    # Untrained weights make the effect small, but the same input gives bit-identical output.
    assert np.array_equal(y1, np.asarray(generator(x, training=False)))
    assert np.abs(y1 - y2).max() > 1e-7


# ------------------------------------------------------------------------------------------
# Context discriminator


@pytest.mark.parametrize("prefix,channels", [("global", SPEC_GLOBAL_CHANNELS),
                                             ("local", SPEC_LOCAL_CHANNELS)])
def test_discriminator_branch_convolutions(discriminator, prefix, channels):
    for i, c in enumerate(channels, 1):
        conv = discriminator.get_layer(f"{prefix}_conv{i}")
        assert type(conv) is layers.Conv2D
        assert conv.filters == c, f"{prefix}_conv{i}"
        assert tuple(conv.kernel_size) == (5, 5)
        assert tuple(conv.strides) == (2, 2)
        assert tuple(conv.dilation_rate) == (1, 1)
        check_padding(discriminator, conv)
        assert conv.get_config()["activation"] == "linear"
        bn = discriminator.get_layer(f"{prefix}_bn{i}")
        relu = discriminator.get_layer(f"{prefix}_relu{i}")
        assert isinstance(bn, layers.BatchNormalization)
        assert isinstance(relu, layers.ReLU)
        assert source(discriminator, f"{prefix}_bn{i}") is conv
        assert source(discriminator, f"{prefix}_relu{i}") is bn
        if i > 1:
            assert fed_by(discriminator, f"{prefix}_conv{i}") is \
                discriminator.get_layer(f"{prefix}_relu{i - 1}")
    assert not has_layer(discriminator, f"{prefix}_conv{len(channels) + 1}")
    convs = [l.name for l in discriminator.layers
             if isinstance(l, layers.Conv2D) and l.name.startswith(prefix + "_")]
    assert sorted(convs) == sorted(f"{prefix}_conv{i}" for i in range(1, len(channels) + 1))


@pytest.mark.parametrize("prefix,depth", [("global", 6), ("local", 5)])
def test_discriminator_branch_fc_1024(discriminator, prefix, depth):
    fc = discriminator.get_layer(f"{prefix}_fc")
    assert isinstance(fc, layers.Dense)
    assert fc.units == SPEC_FC
    assert tuple(fc.output.shape) == (None, SPEC_FC)
    # The FC layer reads (through a flatten) the branch's last ReLU.
    feeder = source(discriminator, f"{prefix}_fc")
    while isinstance(feeder, layers.Flatten):
        feeder = producer(feeder.input)
    assert feeder is discriminator.get_layer(f"{prefix}_relu{depth}")


def test_discriminator_branches_read_the_right_inputs(discriminator):
    image_input = producer(discriminator.inputs[0])
    patch_input = producer(discriminator.inputs[1])
    assert fed_by(discriminator, "global_conv1") is image_input
    assert fed_by(discriminator, "local_conv1") is patch_input
    assert tuple(discriminator.inputs[0].shape) == (None, 64, 64, 3)
    assert tuple(discriminator.inputs[1].shape) == (None, 32, 32, 3)


def test_discriminator_concatenation_is_2048_wide(discriminator):
    concat = discriminator.get_layer("concat")
    assert isinstance(concat, layers.Concatenate)
    assert tuple(concat.output.shape) == (None, 2 * SPEC_FC)
    feeders = {producer(t).name for t in concat.input}
    assert feeders == {"global_fc", "local_fc"}


def test_discriminator_logit_is_linear_dense_1(discriminator):
    logit = discriminator.get_layer("logit")
    assert isinstance(logit, layers.Dense)
    assert logit.units == 1
    assert logit.get_config()["activation"] == "linear"
    assert source(discriminator, "logit") is discriminator.get_layer("concat")
    assert producer(discriminator.outputs[0]) is logit


def test_discriminator_outputs_are_unbounded_logits():
    keras.utils.set_random_seed(0)
    d = model.build_context_discriminator(32, 16)
    logit = d.get_layer("logit")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    patches = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    kernel = np.zeros(logit.kernel.shape, np.float32)
    logit.set_weights([kernel, np.array([-3.0], np.float32)])
    low = np.asarray(d([images, patches], training=False))
    logit.set_weights([kernel, np.array([4.5], np.float32)])
    high = np.asarray(d([images, patches], training=False))
    # A sigmoid (or any squashing) after the last layer would keep these in [0, 1].
    np.testing.assert_allclose(low, -3.0, atol=1e-6)
    np.testing.assert_allclose(high, 4.5, atol=1e-6)


@pytest.mark.parametrize("image_size,local_size,batch", [(64, 32, 2), (32, 16, 3), (32, 16, 1)])
def test_discriminator_output_shape(image_size, local_size, batch):
    keras.utils.set_random_seed(0)
    d = model.build_context_discriminator(image_size, local_size)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch, image_size, image_size, 3)).astype(np.float32)
    patches = rng.uniform(0, 1, (batch, local_size, local_size, 3)).astype(np.float32)
    out = np.asarray(d([images, patches], training=False))
    assert out.shape == (batch, 1)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert tuple(d.output_shape) == (None, 1)


# ---------------------------------------------------------------------------------------------
# The analytic FLOP count, against counts done by hand (2 FLOPs per multiply-add)


def test_conv_flops_by_hand():
    # A 3x3 convolution, 2 -> 5 channels, producing a 4 x 6 map: 24 pixels x 9 taps x 2 x 5.
    assert model.conv_flops(4, 6, 3, 2, 5) == 2 * 24 * 9 * 2 * 5 == 4320


def test_completion_flops_by_hand_at_256():
    # Table 1 at 256 x 256, layer by layer: (output height, kernel, in, out); the two deconvs are
    # counted on their input map (every input pixel spreads a 4x4 footprint).
    rows = [(256, 5, 4, 64), (128, 3, 64, 128), (128, 3, 128, 128), (64, 3, 128, 256)]
    rows += [(64, 3, 256, 256)] * 8  # conv5-conv12, dilated ones included
    rows += [(64, 4, 256, 128), (128, 3, 128, 128), (128, 4, 128, 64), (256, 3, 64, 32),
             (256, 3, 32, 3)]
    by_hand = sum(2 * h * h * k * k * cin * cout for h, k, cin, cout in rows)
    assert model.completion_flops(256) == by_hand == 65_108_180_992
    # About 32 G multiply-adds per 256 x 256 pass, as the paper's cost is usually quoted.
    assert 32e9 < by_hand / 2 < 33e9
    # The scaling with image area.
    assert model.completion_flops(128) * 4 == model.completion_flops(256)
    assert model.completion_flops(64, 128) * 2 == model.completion_flops(128)


def test_discriminator_flops_by_hand():
    # 128 px global branch: 5x5 stride-2 convolutions down to 2 x 2 x 512, then FC to 1024.
    global_rows = [(64, 3, 64), (32, 64, 128), (16, 128, 256), (8, 256, 512), (4, 512, 512),
                   (2, 512, 512)]
    local_rows = [(32, 3, 64), (16, 64, 128), (8, 128, 256), (4, 256, 512), (2, 512, 512)]
    convs = sum(2 * h * h * 25 * cin * cout for h, cin, cout in global_rows + local_rows)
    fcs = 2 * (2 * 2 * 512) * 1024 * 2 + 2 * 2048 * 1
    assert model.discriminator_flops(128, 64) == convs + fcs == 1_944_981_504


# ------------------------------------------------------------------------------------------
# Narrower networks (tests) and mixed precision


def test_the_width_divisor_divides_every_hidden_layer():
    narrow = model.build_completion_network(width_divisor=8)
    convs = [l for l in narrow.layers if isinstance(l, (layers.Conv2D, layers.Conv2DTranspose))]
    assert [c.filters for c in convs] == [row[4] // 8 for row in SPEC_COMPLETION[:-1]] + [3]
    assert narrow.output_shape == (None, None, None, 3)
    d = model.build_context_discriminator(64, 32, width_divisor=8)
    assert [d.get_layer(f"global_conv{i}").filters for i in range(1, 7)] == \
        [c // 8 for c in SPEC_GLOBAL_CHANNELS]
    assert [d.get_layer(f"local_conv{i}").filters for i in range(1, 6)] == \
        [c // 8 for c in SPEC_LOCAL_CHANNELS]
    assert d.get_layer("global_fc").units == d.get_layer("local_fc").units == SPEC_FC // 8
    assert d.output_shape == (None, 1)


def test_mixed_precision_keeps_output_dtype_and_range():
    keras.utils.set_random_seed(0)
    reference = model.build_completion_network()
    mixed = model.build_completion_network("mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    # Weights stay float32 (so checkpoints are the same); the inner layers compute in bfloat16.
    assert {v.dtype for v in mixed.weights} == {"float32"}
    assert mixed.get_layer("conv5").compute_dtype == "bfloat16"
    x = tf.random.stateless_uniform((2, 32, 32, 4), seed=(1, 2))
    y_mixed, y_reference = mixed(x, training=False), reference(x, training=False)
    assert y_mixed.dtype == tf.float32 and y_mixed.shape == (2, 32, 32, 3)
    assert 0.0 <= float(tf.reduce_min(y_mixed)) and float(tf.reduce_max(y_mixed)) <= 1.0
    assert float(tf.reduce_max(tf.abs(y_mixed - y_reference))) < 0.05

    d = model.build_context_discriminator(32, 16, "mixed_bfloat16")
    logits = d([x[..., :3], x[:, :16, :16, :3]], training=False)
    assert logits.dtype == tf.float32 and logits.shape == (2, 1)


# ------------------------------------------------------------------------------------------
# The official Torch7 network's arithmetic (SPEC.md section 1), computed in NumPy by
# tests/torch7.py: symmetric zero padding (k - 1) / 2 * dilation, transposed convolutions
# padded by 1, batch norm with epsilon 1e-5, and the input mean-centred with 0 in the hole.


def as_torch_modules(network):
    """The Keras network as the official network's nn modules, weights in Torch's layouts."""
    modules = []
    for i, (kind, kernel, dilation, stride, _) in enumerate(SPEC_COMPLETION, 1):
        weight, bias = network.get_layer(f"conv{i}").get_weights()
        # Keras: (kh, kw, in, out), transposed (kh, kw, out, in). Torch: (out, in, kh, kw),
        # transposed (in, out, kh, kw).
        weight = weight.transpose(3, 2, 0, 1)
        if kind == "deconv":
            modules.append(torch7.Module("nn.SpatialFullConvolution", weight=weight, bias=bias,
                                         kW=kernel, dW=stride, padW=1))
        else:
            modules.append(torch7.Module("nn.SpatialDilatedConvolution", weight=weight,
                                         bias=bias, kW=kernel, dW=stride, dilationW=dilation,
                                         padW=(kernel - 1) // 2 * dilation))
        if kind == "output":
            return modules + [torch7.Module("nn.Sigmoid")]
        gamma, beta, mean, variance = network.get_layer(f"bn{i}").get_weights()
        modules += [torch7.Module("nn.SpatialBatchNormalization", weight=gamma, bias=beta,
                                  running_mean=mean, running_var=variance, eps=1e-5),
                    torch7.Module("nn.ReLU")]


def calibrate(network, inputs, rng):
    """Weights under which every layer matters: each convolution's output has a standard
    deviation near 0.01 (tiny running variances, so that Keras' epsilon 1e-3 instead of Torch's
    1e-5 would show) and batch norm, given those statistics, brings it back to unit scale."""
    for i in range(1, 18):
        conv = network.get_layer(f"conv{i}")
        pre = keras.Model(network.input, conv.output)(inputs, training=False)
        kernel, bias = conv.get_weights()
        scale = (1.0 if i == 17 else 0.01) / float(np.std(pre))
        conv.set_weights([kernel * scale, bias * scale])
        if i == 17:
            return
        pre = np.asarray(pre) * scale
        bn = network.get_layer(f"bn{i}")
        shape = bn.get_weights()[0].shape
        bn.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                        pre.mean(axis=(0, 1, 2)), pre.var(axis=(0, 1, 2))])


def test_the_completion_network_computes_what_the_official_network_computes():
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    mean_pixel = np.array([0.45, 0.4, 0.35])
    network = model.build_completion_network(width_divisor=8, mean_pixel=mean_pixel)
    image = rng.uniform(size=(1, 20, 28, 3))
    hole = np.zeros((1, 20, 28, 1))
    hole[:, 0:9, 17:28] = 1.0  # touching the top and right borders
    calibrate(network, np.concatenate([image, hole], -1).astype(np.float32), rng)
    garbage = np.where(hole > 0, rng.uniform(size=image.shape), image)  # the hole is ignored
    got = network(np.concatenate([garbage, hole], -1).astype(np.float32), training=False)
    expected = torch7.forward(as_torch_modules(network),
                              torch7.network_input(image, hole, mean_pixel))
    assert expected.std() > 0.1  # an output that depends on the input, not a flat 0.5
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)
    np.testing.assert_allclose(network.get_layer("mean_centre").get_weights()[0], mean_pixel)


def test_batch_norm_statistics_become_the_mean_of_the_batches_statistics():
    network = model.build_completion_network(width_divisor=8)
    rng = np.random.default_rng(0)
    inputs = [tf.constant(rng.uniform(size=(2, 16, 16, 4)).astype("float32")) for _ in range(3)]
    norms = [layer for layer in network.layers if isinstance(layer, layers.BatchNormalization)]
    weights = [w.numpy() for w in network.trainable_weights]
    for norm in (norms[0], norms[-1]):
        # The statistics of what reaches this batch norm, batch by batch, under the weights.
        probe = keras.Model(network.inputs, norm.input)
        seen = [probe(x, training=True).numpy() for x in inputs]
        norm.expected = (np.mean([s.mean(axis=(0, 1, 2)) for s in seen], axis=0),
                         np.mean([s.var(axis=(0, 1, 2)) for s in seen], axis=0))
    model.estimate_batch_norm_statistics(network, inputs)
    for norm in (norms[0], norms[-1]):
        np.testing.assert_allclose(norm.moving_mean.numpy(), norm.expected[0], rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(norm.moving_variance.numpy(), norm.expected[1], rtol=1e-3,
                                   atol=1e-6)
    assert all(norm.momentum == 0.9 for norm in norms)  # restored
    for before, after in zip(weights, network.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())


@pytest.mark.parametrize("dtype", [None, "mixed_float16", "mixed_bfloat16"])
def test_the_fused_batch_norm_computes_what_keras_batch_norm_computes(dtype):
    """Outputs, gradients and moving statistics, in training and inference (both the fused
    kernel), on a batch of 2 x 3 x 5 positions: the unbiased/biased variance factor (30/29)
    shows."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(2.0, 3.0, size=(2, 3, 5, 4)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 3, 5, 4)).astype("float32"))
    pair = [layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype),
            model.FusedBatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)]
    for norm in pair:
        norm.build(x.shape)
        norm.gamma.assign(rng.uniform(0.5, 2, size=4).astype("float32"))
        norm.beta.assign([0.1, -0.2, 0.3, 0.0])
        norm.moving_variance.assign([2.0, 3.0, 4.0, 5.0])
    pair[1].set_weights(pair[0].get_weights())
    tolerance = {None: dict(rtol=1e-5, atol=1e-5), "mixed_float16": dict(rtol=2e-3, atol=2e-3),
                 "mixed_bfloat16": dict(rtol=2e-2, atol=2e-2)}[dtype]
    results = []
    for norm in pair:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        grads = tape.gradient(loss, [x, norm.gamma, norm.beta])
        results.append([y, *grads, norm.moving_mean, norm.moving_variance,
                        norm(x, training=False)])
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value, "float32"),
                                   np.asarray(keras_value, "float32"), **tolerance)
    assert not np.allclose(pair[1].moving_variance.numpy(), [2.0, 3.0, 4.0, 5.0])
    assert results[1][0].dtype == {None: tf.float32, "mixed_float16": tf.float16,
                                   "mixed_bfloat16": tf.bfloat16}[dtype]
    for training in (True, False):
        traced = tf.function(lambda v: pair[1](v, training=training)).get_concrete_function(x)
        kinds = {op.type for op in traced.graph.get_operations()}
        assert "FusedBatchNormV3" in kinds and "Rsqrt" not in kinds


def test_the_fused_batch_norm_is_exported_and_read_back(tmp_path):
    network = model.build_completion_network(width_divisor=8)
    path = str(tmp_path / "network.keras")
    network.save(path)
    again = keras.models.load_model(path)
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in network.layers]
    x = tf.constant(np.random.default_rng(0).uniform(size=(1, 16, 16, 4)).astype("float32"))
    np.testing.assert_allclose(again(x).numpy(), network(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("dilation, onednn", [(2, "1"), (16, "1"), (16, "0")])
def test_the_dilated_convolution_computes_what_keras_conv2d_computes(dilation, onednn,
                                                                     monkeypatch):
    """Outputs and the gradients of input, kernel and bias, on an odd size smaller than the
    dilation (most taps fall in the padding), as one Conv2D op with dilations; by Keras' own
    path where TensorFlow's default CPU kernels run it (they have no gradient for it)."""
    if onednn == "1" and not model.native_dilation():
        pytest.skip("TensorFlow runs without oneDNN here (TF_ENABLE_ONEDNN_OPTS=0)")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)
    native = onednn == "1" or bool(tf.config.list_physical_devices("GPU"))
    assert model.native_dilation() == native
    assert model.native_dilation("float16") == bool(tf.config.list_physical_devices("GPU"))
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 9, 13, 5)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 9, 13, 6)).astype("float32"))
    pair = [layers.Conv2D(6, 3, dilation_rate=dilation, padding="same"),
            model.DilatedConv2D(6, 3, dilation_rate=dilation, padding="same")]
    pair[0].build(x.shape)
    pair[1].build(x.shape)
    pair[0].bias.assign(rng.normal(size=6).astype("float32"))
    pair[1].set_weights(pair[0].get_weights())
    results = []
    for conv in pair:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(conv(x) * upstream)
        results.append([conv(x), *tape.gradient(loss, [x, conv.kernel, conv.bias])])
    for keras_value, direct_value in zip(*results):
        np.testing.assert_allclose(direct_value.numpy(), keras_value.numpy(), rtol=1e-5,
                                   atol=1e-5)
    ops_used = {op.type for op in tf.function(pair[1]).get_concrete_function(x).graph
                .get_operations()}
    assert ("SpaceToBatchND" not in ops_used) == native



def test_the_dilated_convolution_has_bfloat16_gradients_on_every_cpu():
    """oneDNN computes bfloat16 only on CPUs with AVX-512; on the others TensorFlow's own
    kernels run it, which have no input gradient for a dilated convolution, so the layer takes
    Keras' path there: gradients in bfloat16 on any CPU, as --precision bfloat16 trains."""
    direct = model.dilated_gradient_runs(tf.bfloat16)
    try:
        tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[1, 6, 6, 1], filter=tf.ones((3, 3, 1, 1), tf.bfloat16),
            out_backprop=tf.ones((1, 6, 6, 1), tf.bfloat16), strides=[1, 1, 1, 1],
            padding="SAME", dilations=[1, 4, 4, 1])
        runs = True
    except tf.errors.InvalidArgumentError as error:
        assert "do not yet support dilation rates larger than 1" in str(error)
        runs = False
    assert direct == runs
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1" and not tf.config.list_physical_devices(
            "GPU"):
        assert model.native_dilation("bfloat16") == runs
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 9, 13, 5)), tf.bfloat16)
    pair = [layers.Conv2D(6, 3, dilation_rate=8, padding="same", dtype="mixed_bfloat16"),
            model.DilatedConv2D(6, 3, dilation_rate=8, padding="same", dtype="mixed_bfloat16")]
    pair[0].build(x.shape)
    pair[1].build(x.shape)
    pair[1].set_weights(pair[0].get_weights())
    results = []
    for conv in pair:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(conv(x), tf.float32) ** 2)
        results.append(tape.gradient(loss, [x, conv.kernel]))
    for keras_value, direct_value in zip(*results):
        np.testing.assert_allclose(tf.cast(direct_value, tf.float32).numpy(),
                                   tf.cast(keras_value, tf.float32).numpy(), rtol=0.05, atol=0.5)


# ---------------------------------------------------------------------------------------------
# Against the checkerboard: --transposed-init checkerboard-free and --upsampling resize


def test_a_box_convolved_kernel_is_nearest_upsampling_then_a_convolution():
    """A 4x4 stride-2 transposed convolution whose kernel is a 3x3 one convolved with a 2x2 box
    computes, everywhere (borders included), nearest-neighbour x2 upsampling followed by a 3x3
    "same" convolution with that kernel (as a true convolution: Keras' Conv2D correlates, so
    with the kernel flipped)."""
    rng = np.random.default_rng(0)
    small = rng.normal(size=(3, 3, 5, 3)).astype(np.float32)  # (h, w, out, in), as transposed
    transposed = layers.Conv2DTranspose(5, 4, strides=2, padding="same", use_bias=False)
    x = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    transposed.build(x.shape)
    transposed.set_weights([np.asarray(model.box_convolved(small))])
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    conv = layers.Conv2D(5, 3, padding="same", use_bias=False)
    conv.build(upsampled.shape)
    conv.set_weights([np.transpose(small[::-1, ::-1], (0, 1, 3, 2))])
    np.testing.assert_allclose(transposed(x).numpy(), conv(upsampled).numpy(), atol=1e-5)


def test_checkerboard_free_transposed_kernels_start_without_a_checkerboard():
    """On a constant input, the paper's initial transposed kernels answer with a two-pixel
    pattern; checkerboard-free ones with a constant (away from the zero padding's border)."""
    def spread(transposed_init):
        keras.utils.set_random_seed(0)
        network = model.build_completion_network(width_divisor=8,
                                                 transposed_init=transposed_init)
        layer = network.get_layer("conv13")
        assert layer.kernel.shape == (4, 4, 16, 32)
        out = layer(tf.ones((1, 6, 6, 32))).numpy()[0, 2:-2, 2:-2] - layer.bias.numpy()
        return float(np.max(np.ptp(out, axis=(0, 1)))), float(np.std(layer.kernel.numpy()))
    paper, free = spread("default"), spread("checkerboard-free")
    assert paper[0] > 0.1 and free[0] < 1e-5
    assert 0.5 < free[1] / paper[1] < 3  # weights of a comparable scale


def test_resize_upsampling_replaces_each_transposed_convolution(tmp_path):
    network = model.build_completion_network(width_divisor=8, upsampling="resize")
    for name, channels in (("13", 16), ("15", 8)):
        up, conv = network.get_layer(f"up{name}"), network.get_layer(f"conv{name}")
        assert isinstance(up, layers.UpSampling2D) and up.interpolation == "nearest"
        assert type(conv) is layers.Conv2D and conv.kernel_size == (3, 3)
        assert conv.kernel.shape[-1] == channels and conv.input is up.output
    assert not any(isinstance(layer, layers.Conv2DTranspose) for layer in network.layers)
    x = tf.constant(np.random.default_rng(0).uniform(size=(1, 20, 28, 4)).astype("float32"))
    assert network(x).shape == (1, 20, 28, 3)
    path = str(tmp_path / "network.keras")
    network.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(x).numpy(), network(x).numpy(),
                               atol=1e-6)
    # Its two 3x3 convolutions at the output's resolution: 9/4 of the transposed ones' cost.
    deconvs = model.conv_flops(64, 64, 4, 256, 128) + model.conv_flops(128, 128, 4, 128, 64)
    assert (model.completion_flops(256, upsampling="resize") - model.completion_flops(256)
            == deconvs * 9 // 4 - deconvs)


def test_the_spectral_discriminator_keeps_the_layout_without_batch_norm():
    """--gan-loss hinge: Table 2's convolutions and FC layers, each spectrally normalized, no
    batch norm, leaky ReLU; the same logits shape, and every normalized kernel of largest
    singular value 1 once the power iteration has run."""
    keras.utils.set_random_seed(0)
    paper = model.build_context_discriminator(32, 16, width_divisor=8)
    spectral = model.build_context_discriminator(32, 16, width_divisor=8,
                                                 normalization="spectral")
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in spectral.layers)
    normalized = [layer for layer in spectral.layers
                  if isinstance(layer, (model.SpectralConv2D, model.SpectralDense))]
    plain = [layer for layer in paper.layers if isinstance(layer, (layers.Conv2D, layers.Dense))]
    assert [(layer.name, layer.kernel.shape) for layer in normalized] == [
        (layer.name, layer.kernel.shape) for layer in plain]  # 6 + 5 convolutions, 3 FC
    assert len(normalized) == 14
    assert all(isinstance(spectral.get_layer(f"global_relu{i}"), model.LeakyReLU)
               for i in range(1, 7))
    z = tf.constant(np.linspace(-2, 2, 9, dtype=np.float32))
    np.testing.assert_array_equal(model.LeakyReLU(0.2)(z).numpy(),
                                  layers.LeakyReLU(0.2)(z).numpy())
    x = [tf.random.uniform((3, 32, 32, 3), seed=1), tf.random.uniform((3, 16, 16, 3), seed=2)]
    assert spectral(x, training=False).shape == (3, 1)
    for _ in range(40):
        spectral(x, training=True)
    for layer in normalized:
        kernel = layer.kernel.numpy()
        assert np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0] != \
            pytest.approx(1, abs=0.01)  # the kernel itself is not rescaled
        divided = model.spectrally_normalized(layer.kernel, layer.u, False).numpy()
        assert np.linalg.svd(divided.reshape(-1, kernel.shape[-1]), compute_uv=False)[0] \
            == pytest.approx(1, abs=0.02), layer.name


def test_the_power_iteration_moves_only_in_training_and_its_gradient_goes_through_sigma():
    keras.utils.set_random_seed(0)
    layer = model.SpectralDense(3)
    x = tf.random.uniform((4, 5), seed=0)
    layer(x)
    u = layer.u.numpy().copy()
    inference = layer(x, training=False).numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), inference)
    layer(x, training=True)
    assert not np.allclose(layer.u.numpy(), u)
    for _ in range(50):
        layer(x, training=True)
    # With u converged, the output is x W / sigma(W) + b: scaling W leaves it unchanged, so
    # the gradient along W itself is zero (it would not be without sigma's derivative).
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x, training=False) ** 2)
    gradient = tape.gradient(total, layer.kernel).numpy()
    kernel = layer.kernel.numpy()
    assert abs(np.sum(gradient * kernel)) < 1e-3 * np.linalg.norm(gradient) * np.linalg.norm(
        kernel)
    layer.kernel.assign(kernel * 3)
    np.testing.assert_allclose(layer(x, training=False).numpy(),
                               x.numpy() @ (kernel / np.linalg.svd(kernel)[1][0])
                               + layer.bias.numpy(), rtol=1e-4, atol=1e-5)


def test_the_spectral_discriminator_in_bfloat16_keeps_float32_logits_and_vectors():
    d = model.build_context_discriminator(32, 16, "mixed_bfloat16", width_divisor=8,
                                          normalization="spectral")
    x = [tf.random.uniform((2, 32, 32, 3)), tf.random.uniform((2, 16, 16, 3))]
    assert d(x, training=True).dtype == tf.float32
    vectors = [layer.u for layer in d.layers if hasattr(layer, "u")]
    assert len(vectors) == 14 and all(v.dtype == "float32" for v in vectors)
    assert d.get_layer("global_conv1").compute_dtype == "bfloat16"
