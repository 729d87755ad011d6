"""pytorch_port.py: its networks compute what model.py's compute once copy_from_keras has copied
the weights, and its three training steps compute train.py's losses and update the networks
each phase trains."""
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is optional (pip install torch==2.13.0); bench.py --pytorch uses it")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import data_loader  # noqa: E402
import model  # noqa: E402
import pytorch_port  # noqa: E402
import phases  # noqa: E402
import utils  # noqa: E402
from test_model import calibrate  # noqa: E402

MEAN_PIXEL = (0.45, 0.4, 0.35)


def randomise_batch_norms(network, rng):
    """Batch norms far from the identity, so that a misplaced statistic shows."""
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape)])


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_completion_network_computes_what_the_keras_one_computes(channels_last):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    network = model.build_completion_network(width_divisor=8, mean_pixel=MEAN_PIXEL)
    image = rng.uniform(size=(2, 40, 56, 3)).astype(np.float32)
    hole = np.zeros((2, 40, 56, 1), np.float32)
    hole[0, 0:17, 30:56] = 1.0  # touching the top and right borders
    hole[1, 12:30, 8:24] = 1.0
    calibrate(network, np.concatenate([image, hole], -1), rng)
    inputs = np.concatenate([np.where(hole > 0, rng.uniform(size=image.shape), image), hole], -1)
    port = pytorch_port.CompletionNetwork(width_divisor=8)
    pytorch_port.copy_from_keras(port, network)
    if channels_last:
        port = port.to(memory_format=torch.channels_last)
    port.eval()

    expected = network(inputs, training=False).numpy()
    with torch.no_grad():
        got = pytorch_port.to_nhwc(port(pytorch_port.to_nchw(inputs, channels_last)))
    assert expected.std() > 0.1  # an output that depends on the input, not a flat 0.5
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(port.mean_pixel.numpy(), MEAN_PIXEL, rtol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_discriminator_computes_what_the_keras_one_computes(channels_last):
    # 72 and 40 px leave 2x2 feature maps before each FC layer: the flatten order matters.
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    network = model.build_context_discriminator(72, 40, width_divisor=8)
    randomise_batch_norms(network, rng)
    images = rng.uniform(size=(3, 72, 72, 3)).astype(np.float32)
    patches = images[:, 10:50, 20:60]
    port = pytorch_port.ContextDiscriminator(72, 40, width_divisor=8)
    pytorch_port.copy_from_keras(port, network)
    if channels_last:
        port = port.to(memory_format=torch.channels_last)
    port.eval()

    expected = network([images, patches], training=False).numpy()
    with torch.no_grad():
        got = port(pytorch_port.to_nchw(images, channels_last),
                   pytorch_port.to_nchw(patches, channels_last)).numpy()
    assert got.shape == (3, 1) and np.ptp(expected) > 1e-3
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_copy_from_keras_refuses_a_network_of_another_width():
    port = pytorch_port.CompletionNetwork(width_divisor=4)
    with pytest.raises(ValueError, match="conv1: Keras weight of shape"):
        pytorch_port.copy_from_keras(port, model.build_completion_network(width_divisor=8))


def parameters(network):
    """Every weight and batch-norm statistic, as NumPy arrays."""
    return [t.detach().clone().numpy() for t in network.state_dict().values()]


def changed(before, network):
    return any(not np.array_equal(a, b) for a, b in zip(before, parameters(network)))


def test_each_step_computes_train_py_losses_and_updates_its_networks(tmp_path, make_photos,
                                                                     tiny_config):
    config = tiny_config()
    files = make_photos(tmp_path / "photos", count=4, size=(40, 48))
    batch = next(iter(data_loader.training_dataset(files, config)))
    keras.utils.set_random_seed(0)
    G, D, _, _, step_opts = phases.build_training(config, mean_pixel=MEAN_PIXEL)
    keras_steps = phases.make_steps(G, D, *step_opts, config, MEAN_PIXEL)
    port_G, port_D, g_opt, d_opt = pytorch_port.build_training(config, MEAN_PIXEL)
    steps = pytorch_port.make_steps(port_G, port_D, g_opt, d_opt, config)
    port_batch = pytorch_port.from_keras_batch(batch)

    trains = {1: (True, False), 2: (False, True), 3: (True, True)}  # (G, D)
    for phase, (trains_G, trains_D) in trains.items():
        pytorch_port.copy_from_keras(port_G, G)
        pytorch_port.copy_from_keras(port_D, D)
        before_G, before_D = parameters(port_G), parameters(port_D)
        losses = {k: float(v) for k, v in steps[phase](port_batch).items()}
        expected = {k: float(v) for k, v in keras_steps[phase](batch).items()}
        assert changed(before_G, port_G) == trains_G, phase
        assert changed(before_D, port_D) == trains_D, phase
        assert all(np.isfinite(list(losses.values()))), losses
        for name, value in losses.items():
            # The adversarial loss is taken after the discriminator's update, whose Adadelta
            # steps (nearly +-sqrt(epsilon / (1 - rho)) each) turn rounding into visible
            # differences; against the discriminator before its update it would be ~30 % off.
            rel = 0.05 if name == "adversarial" else 2e-3
            assert value == pytest.approx(expected[name], rel=rel, abs=1e-5), (phase, name)


def test_completion_input_and_patches_are_utils_ones():
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    masks = (rng.uniform(size=(2, 16, 16, 1)) > 0.5).astype(np.float32)
    offsets = np.array([[0, 8], [5, 3]], np.int32)
    expected = utils.completion_input(images, masks, tf.constant(MEAN_PIXEL))
    got = pytorch_port.completion_input(pytorch_port.to_nchw(images), pytorch_port.to_nchw(masks),
                                        torch.tensor(MEAN_PIXEL))
    np.testing.assert_allclose(pytorch_port.to_nhwc(got), expected.numpy(), atol=1e-7)
    got = pytorch_port.crop_patches(pytorch_port.to_nchw(images), torch.tensor(offsets), 8)
    expected = utils.crop_patches(tf.constant(images), tf.constant(offsets), 8)
    np.testing.assert_array_equal(pytorch_port.to_nhwc(got), expected.numpy())
