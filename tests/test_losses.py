"""losses.py: every loss and penalty against hand-computed values, and the penalties and the
low-pass filter against what they are for."""
import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import structural_similarity

import losses
import model
import realism
import utils


def test_reconstruction_loss_counts_only_the_hole():
    images = tf.zeros([1, 2, 2, 3])
    outputs = tf.fill([1, 2, 2, 3], 0.5)
    masks = tf.constant([1.0, 0.0, 0.0, 0.0], shape=[1, 2, 2, 1])
    # One hole pixel of 3 channels with error 0.5, averaged over 12 values.
    assert float(losses.reconstruction_loss(images, outputs, masks, "mse")) == pytest.approx(3 * 0.25 / 12)
    assert float(losses.reconstruction_loss(images, outputs, masks, "l1")) == pytest.approx(3 * 0.5 / 12)


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_whitened_colours_cost_a_grey_error_as_rgb_does_and_weigh_every_axis_alike(kind):
    """--recon-colour whitened: a grey error costs what it costs in R, G and B; an error of one
    spread along each opponent axis costs the same on every axis; outside the hole, nothing."""
    images = tf.zeros([1, 2, 2, 3])
    masks = tf.constant([1.0, 0.0, 0.0, 0.0], shape=[1, 2, 2, 1])

    def cost(error, colour="whitened"):
        outputs = images + tf.constant(error, tf.float32)
        return float(losses.reconstruction_loss(images, outputs, masks, kind, colour=colour))

    assert cost([0.2] * 3) == pytest.approx(cost([0.2] * 3, "rgb"), rel=1e-6)
    # Directions of RGB that move along one opponent axis only, by one spread of that axis.
    basis = np.linalg.inv(np.array(losses.OPPONENT_AXES))  # columns: RGB per unit of each axis
    along = [basis[:, a] * losses.OPPONENT_SPREAD[a] for a in range(3)]
    costs = [cost(list(direction)) for direction in along]
    assert costs == pytest.approx([costs[0]] * 3, rel=1e-5)
    assert cost([0.0, 0.1, 0.0]) > 10 * cost([0.0, 0.1, 0.0], "rgb")  # green weighs far more
    # A pure green error of 0.1, by hand: |0.1/3| + |0| + |0.1/2| on the three axes, times
    # 3 x 0.26 over each axis' spread (squared and divided by 3 for mse); 3 of 12 values are
    # in the hole.
    terms = [3 * 0.26 / 0.26 * 0.1 / 3, 0.0, 3 * 0.26 / 0.035 * 0.1 / 2]
    expected = sum(t * t / 3 if kind == "mse" else t for t in terms) / 12
    assert cost([0.0, 0.1, 0.0]) == pytest.approx(expected, rel=1e-5)
    outside = tf.constant([0.0, 1.0, 1.0, 1.0], shape=[1, 2, 2, 1]) * tf.ones([1, 2, 2, 3])
    assert float(losses.reconstruction_loss(images, outside, masks, kind, colour="whitened")) == 0


def test_gan_losses_match_cross_entropy_formulas():
    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected_d = (-np.mean(np.log(sigmoid(np.array([2.0, -1.0]))))
                  - np.mean(np.log(1 - sigmoid(np.array([0.5, -3.0])))))
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-5)
    expected_adv = -np.mean(np.log(sigmoid(np.array([0.5, -3.0]))))
    assert float(losses.adversarial_loss(fake)) == pytest.approx(expected_adv, rel=1e-5)
    # From logits: no overflow where probabilities would round to 0 or 1.
    assert np.isfinite(float(losses.discriminator_loss(tf.constant([[-200.0]]), tf.constant([[200.0]]))))


def test_label_smoothing_lowers_only_the_real_target():
    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p_real, p_fake = sigmoid(np.array([2.0, -1.0])), sigmoid(np.array([0.5, -3.0]))
    expected = (-np.mean(0.9 * np.log(p_real) + 0.1 * np.log(1 - p_real))
                - np.mean(np.log(1 - p_fake)))
    assert float(losses.discriminator_loss(real, fake, label_smoothing=0.1)) == pytest.approx(
        expected, rel=1e-5)
    assert float(losses.discriminator_loss(real, fake, label_smoothing=0.0)) == pytest.approx(
        float(losses.discriminator_loss(real, fake)), rel=1e-7)


def test_hinge_losses_match_their_formulas():
    """--gan-loss hinge: max(0, 1 - D(real)) + max(0, 1 + D(completed)), means over the batch,
    and -D(completed) for the completion network."""
    real, fake = tf.constant([[2.0], [0.25]]), tf.constant([[0.5], [-3.0]])
    assert float(losses.hinge_discriminator_loss(real, fake)) == pytest.approx(
        (0 + 0.75) / 2 + (1.5 + 0) / 2)
    assert float(losses.hinge_adversarial_loss(fake)) == pytest.approx(-(0.5 - 3.0) / 2)
    # A share of the mean over a global batch of 4 (two replicas' halves add up to it).
    assert float(losses.hinge_discriminator_loss(real, fake, 4)) == pytest.approx(2.25 / 4)


def test_checkerboard_excess_counts_what_the_output_adds_at_the_two_pixel_period():
    """A checkerboard of amplitude 0.1 on a flat photo: every 2x2 window answers 4 x 0.1 per
    channel; a photo with the same checkerboard cancels it; windows crossing the hole's edge and
    the outside do not count; a smooth ramp answers nothing."""
    y, x = np.mgrid[:8, :8]
    board = np.where((y + x) % 2 == 0, 0.1, -0.1)[None, ..., None] * np.ones((1, 1, 1, 3))
    flat = np.full((1, 8, 8, 3), 0.5)
    mask = np.zeros((1, 8, 8, 1))
    mask[:, 2:6, 2:6] = 1  # 3 x 3 windows inside
    as_tf = lambda a: tf.constant(a, tf.float32)  # noqa: E731
    assert float(losses.checkerboard_excess(as_tf(flat), as_tf(flat + board), as_tf(mask))) \
        == pytest.approx(3 * 0.4, rel=1e-5)
    assert float(losses.checkerboard_excess(as_tf(flat + board), as_tf(flat + board),
                                           as_tf(mask))) == pytest.approx(0, abs=1e-7)
    outside = flat + board * (1 - mask)  # checkered outside the hole only
    assert float(losses.checkerboard_excess(as_tf(flat), as_tf(outside), as_tf(mask))) \
        == pytest.approx(0, abs=1e-7)
    ramp = flat + 0.05 * (y + 2 * x)[None, ..., None]
    assert float(losses.checkerboard_excess(as_tf(flat), as_tf(ramp), as_tf(mask))) \
        == pytest.approx(0, abs=1e-6)
    # No window inside a hole: 0, not NaN; the mean over a global batch of 2 halves it.
    assert float(losses.checkerboard_excess(as_tf(flat), as_tf(flat + board),
                                           as_tf(np.zeros_like(mask)))) == 0
    assert float(losses.checkerboard_excess(as_tf(flat), as_tf(flat + board), as_tf(mask),
                                           global_batch=2)) == pytest.approx(0.6, rel=1e-5)


def test_stripes_excess_counts_what_the_output_adds_in_two_pixel_stripes():
    """Alternating columns of amplitude 0.1 on a flat photo: every 3x3 window answers
    |0.1 - 2 (-0.1) + 0.1| = 0.4 across per channel and 0 down; rows alike, turned; a
    checkerboard and a ramp answer nothing, and neither do windows reaching out of the hole."""
    y, x = np.mgrid[:8, :8]
    columns = np.where(x % 2 == 0, 0.1, -0.1)[None, ..., None] * np.ones((1, 1, 1, 3))
    board = np.where((y + x) % 2 == 0, 0.1, -0.1)[None, ..., None] * np.ones((1, 1, 1, 3))
    flat = np.full((1, 8, 8, 3), 0.5)
    mask = np.zeros((1, 8, 8, 1))
    mask[:, 2:7, 2:7] = 1  # 3 x 3 windows inside
    as_tf = lambda a: tf.constant(a, tf.float32)  # noqa: E731

    def excess(photo, output, where=mask, **kwargs):
        return float(losses.stripes_excess(as_tf(photo), as_tf(output), as_tf(where), **kwargs))
    assert excess(flat, flat + columns) == pytest.approx(3 * 0.4, rel=1e-5)
    assert excess(flat, flat + columns.transpose(0, 2, 1, 3)) == pytest.approx(1.2, rel=1e-5)
    assert excess(flat + columns, flat + columns) == pytest.approx(0, abs=1e-7)
    assert excess(flat, flat + board) == pytest.approx(0, abs=1e-7)
    assert excess(flat, flat + 0.05 * (y + 2 * x)[None, ..., None]) == pytest.approx(0, abs=1e-6)
    assert excess(flat, flat + columns * (1 - mask)) == pytest.approx(0, abs=1e-7)
    assert excess(flat, flat + columns, np.zeros_like(mask)) == 0
    assert excess(flat, flat + columns, global_batch=2) == pytest.approx(0.6, rel=1e-5)


@pytest.mark.parametrize("term", [losses.checkerboard_excess, losses.stripes_excess])
def test_the_penalties_allow_any_texture_as_patterned_as_a_photos(term):
    """Texture drawn anew (white noise, as the photo's but at other places) is not penalized,
    though it differs from the photo at every pixel; the photo's pattern allowance shrinks
    with the output's sharpness (a blurred output may carry less of it), and a checkerboard or
    stripes added to the texture count."""
    rng = np.random.default_rng(0)
    photo = 0.5 + 0.1 * rng.standard_normal((4, 24, 24, 3))
    redrawn = 0.5 + 0.1 * rng.standard_normal((4, 24, 24, 3))
    mask = np.zeros((4, 24, 24, 1))
    mask[:, 4:20, 4:20] = 1
    y, x = np.mgrid[:24, :24]
    pattern = np.where(((y + x) if term is losses.checkerboard_excess else x) % 2 == 0, 0.1,
                       -0.1)[None, ..., None]
    as_tf = lambda a: tf.constant(a, tf.float32)  # noqa: E731
    same_kind = float(term(as_tf(photo), as_tf(redrawn), as_tf(mask)))
    patterned = float(term(as_tf(photo), as_tf(redrawn + pattern), as_tf(mask)))
    response = (losses.checker_response if term is losses.checkerboard_excess else
                losses.stripe_response)
    # What a pixel-by-pixel comparison would count (over the whole image, about as inside).
    per_pixel = float(tf.reduce_mean(tf.nn.relu(response(as_tf(redrawn))
                                                - response(as_tf(photo)))))
    assert same_kind < 0.25 * per_pixel  # 0.007 against 0.066 (checkerboard)
    assert patterned > 4 * per_pixel  # 0.36
    # Half the photo's texture plus half its pattern share: sharpness 1/2, allowance halved.
    assert float(term(as_tf(photo), as_tf(0.5 + (photo - 0.5) / 2), as_tf(mask))) \
        == pytest.approx(0, abs=1e-6)


def test_a_lowpassed_discriminator_is_blind_to_the_two_pixel_period():
    """--d-lowpass: the binomial filter (OpenCV's, reflected at the edges) takes a checkerboard
    and stripes either way to 0 everywhere, edges included; so the discriminator's output does
    not change when they are added to its images, and its gradient, the adversarial one the
    completion network gets, has no component along them."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    kernel = np.array([0.25, 0.5, 0.25])
    opencv = np.stack([cv2.sepFilter2D(image, -1, kernel, kernel,
                                       borderType=cv2.BORDER_REFLECT_101) for image in images])
    np.testing.assert_allclose(losses.lowpass(tf.constant(images)).numpy(), opencv, atol=1e-6)
    y, x = np.mgrid[:32, :32]
    patterns = [np.where(p % 2 == 0, 0.1, -0.1)[None, ..., None] * np.ones((1, 1, 1, 3))
                for p in (y + x, x, y)]
    D = model.build_context_discriminator(32, 16, width_divisor=8)
    at = tf.constant([[4, 8], [16, 0]], tf.int32)

    def judged(x):
        seen = losses.lowpass(x)
        return D([seen, utils.crop_patches(seen, at, 16)], training=False)
    plain = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(plain)
        logits = judged(plain)
        total = tf.reduce_sum(logits)
    gradient = tape.gradient(total, plain).numpy()
    for pattern in patterns:
        assert np.abs(losses.lowpass(tf.constant(pattern, tf.float32)).numpy()).max() == 0
        np.testing.assert_allclose(judged(tf.constant(images + pattern, tf.float32)).numpy(),
                                   logits.numpy(), atol=1e-5)
        # The gradient's cosine with the pattern (on both images).
        whole = np.broadcast_to(pattern, images.shape)
        assert np.abs((gradient * whole).sum()) < 1e-6 * np.linalg.norm(gradient) \
            * np.linalg.norm(whole)
    # Without the filter the same discriminator's gradient is as much along them as along any
    # direction (cosines 0.006-0.016 here, about 1 / sqrt(6144), against 1e-10 with it).
    with tf.GradientTape() as tape:
        tape.watch(plain)
        raw = tf.reduce_sum(D([plain, utils.crop_patches(plain, at, 16)], training=False))
    gradient = tape.gradient(raw, plain).numpy()
    assert max(np.abs((gradient * np.broadcast_to(p, images.shape)).sum())
               / np.linalg.norm(np.broadcast_to(p, images.shape)) for p in patterns) \
        > 1e-3 * np.linalg.norm(gradient)


def test_the_penalties_respond_as_the_realism_measures_do():
    """The training penalties and the realism measures apply the same responses to every
    window: the checkerboard's on 2x2 windows, the stripes' on 3x3 ones, row by row."""
    images = np.random.default_rng(3).uniform(size=(2, 9, 11, 3))
    everywhere = np.ones((2, 9, 11), bool)
    for trained, measured, offsets in ((losses.checker_response, realism.checker_response,
                                        realism.CORNERS),
                                       (losses.stripe_response, realism.stripe_response,
                                        realism.SQUARE)):
        pixels, _ = realism.window_pixels(images, everywhere, offsets)
        np.testing.assert_allclose(trained(tf.constant(images)).numpy().reshape(-1, 3),
                                   measured(*pixels), rtol=0, atol=1e-12)


def test_the_coarse_reconstruction_sees_colours_in_the_hole_not_texture():
    """--coarse-loss's term: 0 for a fill whose 4x4 blocks have the photo's means (a
    checkerboard added to the photo), the mean block error times the hole's share of the
    block for a shifted colour, and nothing of the output outside the hole."""
    images = tf.fill([1, 8, 8, 3], 0.5)
    masks = tf.concat([tf.ones([1, 8, 4, 1]), tf.zeros([1, 8, 4, 1])], 2)  # the left half
    masks = tf.tensor_scatter_nd_update(masks, [[0, 0, 0, 0]], [0.0])  # less one pixel
    checker = 0.2 * (-1.0) ** (np.arange(8)[:, None] + np.arange(8)[None])
    textured = images + tf.constant(checker[None, :, :, None], tf.float32)
    # Only the block missing a pixel (the photo's there, not +0.2): its mean is off by
    # 0.2 / 16, times its share of the hole, 15/16, averaged over the 4 blocks.
    assert float(losses.coarse_reconstruction(images, textured, masks)) == pytest.approx(
        0.2 / 16 * 15 / 16 / 4, rel=1e-5)
    shifted = images + 0.1
    # Blocks of the left column: 15/16 and 16/16 of the hole, error 0.1 * share each.
    expected = (15 / 16 * 0.1 * 15 / 16 + 16 / 16 * 0.1 * 16 / 16) / 4
    assert float(losses.coarse_reconstruction(images, shifted, masks)) == pytest.approx(
        expected, rel=1e-5)
    outside = tf.where(masks > 0, images, images + 0.3)  # the output outside is not used
    assert float(losses.coarse_reconstruction(images, outside, masks)) == 0.0


def test_the_ssim_map_is_the_one_the_evaluation_measures():
    """losses.ssim_map on 7x7 windows equals scikit-image's SSIM map (evaluate.ssim's) wherever
    the window lies inside the image."""
    rng = np.random.default_rng(3)
    photo = rng.random((1, 20, 24, 3))
    other = np.clip(photo + 0.2 * rng.standard_normal(photo.shape), 0, 1)
    _, full = structural_similarity(other[0], photo[0], channel_axis=-1, data_range=1.0,
                                    full=True, win_size=7)
    np.testing.assert_allclose(losses.ssim_map(tf.constant(other), tf.constant(photo))[0],
                               full[3:-3, 3:-3], rtol=0, atol=1e-5)


def test_the_ssim_loss_counts_the_windows_reaching_into_the_hole():
    """--ssim-loss's term: 0 for the photo itself, blind to the output outside the hole, and
    otherwise 1 - SSIM summed over the windows that reach into the hole, divided by all
    windows and channels; its gradient reaches the output in the hole only."""
    rng = np.random.default_rng(4)
    photo = tf.constant(rng.random((1, 16, 16, 3)), tf.float32)
    masks = np.zeros((1, 16, 16, 1), np.float32)
    masks[0, 5:9, 6:10] = 1
    masks = tf.constant(masks)
    assert float(losses.ssim_loss(photo, photo, masks)) == 0.0
    outside = tf.where(masks > 0, photo, 1 - photo)
    assert float(losses.ssim_loss(photo, outside, masks)) == 0.0

    flat = tf.fill(photo.shape, 0.5)
    completed = masks * flat + (1 - masks) * photo
    _, full = structural_similarity(completed.numpy()[0], photo.numpy()[0], channel_axis=-1,
                                    data_range=1.0, full=True, win_size=7)
    windows = 1 - full[3:-3, 3:-3]  # (10, 10, 3): windows at rows and columns 0-9
    # Windows reaching rows 5-8 and columns 6-9 of a 7x7 window start at rows 0-8, cols 0-9.
    expected = windows[0:9, 0:10].sum() / windows.size
    assert float(losses.ssim_loss(photo, flat, masks)) == pytest.approx(expected, rel=1e-4)

    with tf.GradientTape() as tape:
        tape.watch(flat)
        loss = losses.ssim_loss(photo, flat, masks)
    gradient = np.abs(tape.gradient(loss, flat).numpy()).sum(-1)[0]
    assert (gradient[masks.numpy()[0, ..., 0] == 0] == 0).all()
    assert (gradient[masks.numpy()[0, ..., 0] == 1] > 0).all()


def test_the_colour_loss_sees_the_hole_s_mean_chroma_only():
    """--colour-loss's term: the hole's mean colour against the photo's on the red-blue and
    green-magenta axes: 0 for a fill darker or lighter by the same amount in R, G and B, for a
    fill whose texture differs but whose mean is the photo's, and for the output outside the
    hole; a grey fill of green grass costs its green; the gradient is the same at every pixel
    of the hole and 0 outside it."""
    rng = np.random.default_rng(5)
    photo = np.full((2, 8, 8, 3), (0.2, 0.6, 0.1), np.float32)  # green grass
    masks = np.zeros((2, 8, 8, 1), np.float32)
    masks[0, 2:6, 2:6] = 1
    masks[1, 0:2, 0:8] = 1
    photo, masks = tf.constant(photo), tf.constant(masks)
    assert float(losses.hole_colour_loss(photo, photo, masks)) == 0.0
    assert float(losses.hole_colour_loss(photo, photo - 0.15, masks)) == pytest.approx(0, abs=1e-7)
    texture = rng.standard_normal((2, 8, 8, 3)).astype(np.float32) * 0.1
    texture -= (texture * masks).numpy().sum((1, 2), keepdims=True) / masks.numpy().sum(
        (1, 2), keepdims=True)  # the hole's mean unchanged
    assert float(losses.hole_colour_loss(photo, photo + texture * masks, masks)) == (
        pytest.approx(0, abs=1e-6))
    outside = tf.where(masks > 0, photo, 1 - photo)
    assert float(losses.hole_colour_loss(photo, outside, masks)) == 0.0

    grey = tf.fill(photo.shape, 0.3)  # the grass's luminance, no colour
    # The grass's red-blue: (0.2 - 0.1) / sqrt(2); green-magenta: (1.2 - 0.2 - 0.1) / sqrt(6)
    assert float(losses.hole_colour_loss(photo, grey, masks)) == pytest.approx(
        0.1 / 2 ** 0.5 + 0.9 / 6 ** 0.5, rel=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(grey)
        loss = losses.hole_colour_loss(photo, grey, masks)
    gradient = tape.gradient(loss, grey).numpy()
    inside = masks.numpy()[..., 0] == 1
    assert (gradient[~inside] == 0).all()
    # A grey fill is pushed towards green and red, away from magenta and blue: each pixel of a
    # hole by a sixteenth of its image's half of the batch mean
    towards = np.array([2 ** -0.5, 0, -(2 ** -0.5)]) + np.array([-1, 2, -1]) / 6 ** 0.5
    np.testing.assert_allclose(gradient[0][inside[0]], np.tile(-towards / 16 / 2, (16, 1)),
                               rtol=1e-5)
    np.testing.assert_allclose(gradient[1][inside[1]], gradient[1][inside[1]][:1].repeat(16, 0))


def test_each_loss_is_a_share_of_the_mean_over_the_global_batch():
    """With the global batch size given, a replica's (or micro-batch's) loss is its examples'
    sum over that size: two halves add up to the whole batch's mean."""
    images = tf.zeros([4, 2, 2, 3])
    outputs = tf.reshape(tf.range(48, dtype=tf.float32) / 48, [4, 2, 2, 3])
    masks = tf.ones([4, 2, 2, 1])
    whole = float(losses.reconstruction_loss(images, outputs, masks, "l1"))
    halves = [float(losses.reconstruction_loss(images[i:i + 2], outputs[i:i + 2], masks[i:i + 2],
                                               "l1", 4)) for i in (0, 2)]
    assert whole == pytest.approx(np.mean(np.arange(48) / 48), rel=1e-6)
    assert sum(halves) == pytest.approx(whole, rel=1e-6)
    logits = tf.constant([[0.0], [0.0]])
    # -log(1/2) for each of two examples, summed over a global batch of 4.
    assert float(losses.bce(logits, 1.0, 4)) == pytest.approx(2 * np.log(2) / 4, rel=1e-6)


def test_the_windows_inside_and_the_sharpness_by_hand():
    """A 4x4 hole in a 6x6 image has 3x3 windows of 2x2 inside it; a ramp of slope 0.1 across
    has gradient magnitude 0.1 there, and an output of twice the slope is twice as sharp."""
    masks = np.zeros((1, 6, 6, 1), np.float32)
    masks[:, 1:5, 1:5] = 1
    inside = losses.windows_inside(tf.constant(masks), 2).numpy()[0, ..., 0]
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 1
    np.testing.assert_array_equal(inside, expected)
    x = np.arange(6, dtype=np.float32)[None, None, :, None] * np.ones((1, 6, 1, 3), np.float32)
    photo, output = tf.constant(0.1 * x), tf.constant(0.2 * x)
    np.testing.assert_allclose(losses.gradient_magnitude(photo).numpy(), 0.1, rtol=1e-5)
    assert float(losses.output_sharpness(photo, output, tf.constant(masks))[0]) == pytest.approx(
        2.0, rel=1e-5)
    # A flat photo: 0, not a division by zero.
    flat = tf.fill([1, 6, 6, 3], 0.5)
    assert float(losses.output_sharpness(flat, output, tf.constant(masks))[0]) == 0.0


def test_the_lowpass_filter_by_hand():
    """[1, 2, 1] / 4 down and across, the edges reflected (d c b | a b c d): a single bright
    pixel in the middle spreads into the binomial 3x3 kernel; at a corner, whose reflected
    neighbours are the row and column next to it (dark here), it keeps the kernel's centre."""
    image = np.zeros((1, 5, 5, 1), np.float32)
    image[0, 2, 2] = 16
    out = losses.lowpass(tf.constant(image)).numpy()[0, ..., 0]
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    corner = np.zeros((1, 5, 5, 1), np.float32)
    corner[0, 0, 0] = 16
    out = losses.lowpass(tf.constant(corner)).numpy()[0, ..., 0]
    expected = np.zeros((5, 5))
    expected[:2, :2] = [[4, 2], [2, 1]]  # 16 x (1/2, 1/4) down times (1/2, 1/4) across
    np.testing.assert_allclose(out, expected, atol=1e-6)
