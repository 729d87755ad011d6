"""Every loss and penalty of training, as pure functions of tensors (all GAN terms from logits).

The paper's three terms come first: the weighted reconstruction in the hole, the
discriminator's cross-entropy and the completion network's adversarial term. The options beyond
the paper follow, each saying where it comes from.

Each loss is a mean over the global batch: per-example values summed and divided by the global
batch size (tf.nn.compute_average_loss), so with the batch split over N devices (or K
micro-batches) the shares' losses, and gradients, add up to exactly the single-device ones.
"""
import tensorflow as tf

import realism


# ---------------------------------------------------------------------------------------------
# The paper (section 3.3)

def reconstruction_loss(images, outputs, masks, kind="mse", global_batch=None, colour="rgb"):
    """Paper, eq. 1: || M_c * (C(x, M_c) - x) ||^2, averaged over pixels; kind l1 (--recon-loss
    l1, as GLCIC-PyTorch and later inpainting papers) takes absolute values instead. colour
    "whitened" (--recon-colour) measures the error on whitened opponent axes (WHITENED_AXES)
    instead of R, G and B."""
    diff = masks * (outputs - images)
    if colour == "whitened":
        diff = tf.einsum("bhwc,ac->bhwa", diff, tf.constant(WHITENED_AXES, diff.dtype))
        if kind == "mse":  # a grey error of d: (3d)^2 / 3 on the axes, d^2 in R, G and B
            diff = diff * 3 ** -0.5
    per_example = tf.reduce_mean(tf.square(diff) if kind == "mse" else tf.abs(diff), [1, 2, 3])
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def bce(logits, label, global_batch=None):
    """Sigmoid cross-entropy of logits (B, 1) against a constant label, averaged."""
    labels = tf.fill(tf.shape(logits), tf.constant(label, logits.dtype))
    per_example = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def discriminator_loss(real_logits, fake_logits, global_batch=None, label_smoothing=0.0):
    """Paper, eq. 2, the discriminator's side: real (x, random local patch) -> 1, completed
    (patch around the hole) -> 0. label_smoothing S (--label-smoothing, one-sided as in Salimans
    et al. 2016): real -> 1 - S, completed stays 0."""
    return (bce(real_logits, 1.0 - label_smoothing, global_batch)
            + bce(fake_logits, 0.0, global_batch))


def adversarial_loss(fake_logits, global_batch=None):
    """Paper, eq. 2, the completion network's side, in the non-saturating form the authors'
    code trains with: -log D(completed)."""
    return bce(fake_logits, 1.0, global_batch)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the hinge loss (--gan-loss hinge)

def hinge_discriminator_loss(real_logits, fake_logits, global_batch=None):
    """Geometric GAN (Lim and Ye 2017), as SN-GAN trains it: max(0, 1 - D(real)) +
    max(0, 1 + D(completed))."""
    per_example = (tf.reduce_mean(tf.nn.relu(1.0 - real_logits), axis=1)
                   + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits), axis=1))
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def hinge_adversarial_loss(fake_logits, global_batch=None):
    """Geometric GAN's generator term: -D(completed)."""
    return tf.nn.compute_average_loss(-tf.reduce_mean(fake_logits, axis=1),
                                      global_batch_size=global_batch)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the coarse loss (--coarse-loss)

def coarse_reconstruction(images, outputs, masks, global_batch=None, block=4):
    """The fill's colours at a coarse scale, whatever its texture (this project's, from the
    colour shifts its evaluation measured): the completed image (the output in the hole, the
    photo around it) and the photo averaged over `block` x `block` blocks, their L1 distance
    per block weighted by the block's share of the hole, averaged over blocks and channels as
    reconstruction_loss averages over pixels."""
    images, masks = tf.cast(images, outputs.dtype), tf.cast(masks, outputs.dtype)
    completed = masks * outputs + (1 - masks) * images
    pool = lambda x: tf.nn.avg_pool2d(x, block, block, "VALID")  # noqa: E731
    per_example = tf.reduce_mean(pool(masks) * tf.abs(pool(completed) - pool(images)),
                                 [1, 2, 3])
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the structural term (--ssim-loss)

SSIM_WINDOW = 7  # as evaluate.ssim measures it (scikit-image's default window)


def in_float32(like, *tensors):
    """The tensors cast to float32, or to float64 when `like` is float64: moments and means
    over windows or holes are not taken in bfloat16."""
    dtype = tf.float64 if like.dtype == tf.float64 else tf.float32
    return tuple(tf.cast(t, dtype) for t in tensors)


def ssim_map(x, y, size=SSIM_WINDOW):
    """SSIM (Wang et al. 2004) of images x and y (B, H, W, C) in [0, 1] on every size x size
    window, per channel, with uniform weights and the sample covariance, as scikit-image's
    structural_similarity computes it (evaluate.ssim's image SSIM is the mean of this map);
    (B, H - size + 1, W - size + 1, C), in float32 (float64 for float64 images)."""
    x, y = in_float32(x, x, y)
    # The five window means at once, the window's rows then its columns: a quarter of the time
    # of five square average pools, forward and backward, on a CPU
    moments = tf.concat([x, y, x * x, y * y, x * y], -1)
    moments = tf.nn.avg_pool2d(moments, (1, size), 1, "VALID")
    moments = tf.nn.avg_pool2d(moments, (size, 1), 1, "VALID")
    mx, my, mxx, myy, mxy = tf.split(moments, 5, -1)
    n = size * size
    unbias = n / (n - 1)
    vx = unbias * (mxx - mx * mx)
    vy = unbias * (myy - my * my)
    cxy = unbias * (mxy - mx * my)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim_loss(images, outputs, masks, global_batch=None, size=SSIM_WINDOW):
    """1 - SSIM of the completed image (the output in the hole, the photo around it) against
    the photo on each size x size window that reaches into the hole, averaged over all windows
    and channels (windows outside the hole count 0, as the reconstruction loss counts pixels
    outside it): what the fill costs the image SSIM the evaluation reports. Its optimum keeps
    the photo's local contrast where the fill is uncertain (an L1 or L2 optimum shrinks it
    towards the mean), so unlike them it does not reward a blur."""
    images, masks, outputs = in_float32(outputs, images, masks, outputs)
    completed = masks * outputs + (1 - masks) * images
    touched = tf.nn.max_pool2d(masks, size, 1, "VALID")  # windows with a pixel of the hole
    per_example = tf.reduce_mean(touched * (1 - ssim_map(completed, images, size)), [1, 2, 3])
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the error on whitened colour axes (--recon-colour whitened)
#
# This project's. In natural photos the luminance (R + G + B) / 3 varies 2.8 times as much as
# the red-blue axis (R - B) / 2 and 7.5 times as much as the green-magenta one (2G - R - B) / 4
# (their standard deviations over the pixels of 400 of the training photos of docs/training.md:
# OPPONENT_SPREAD). A deep network trained on the error in R, G and B learns those directions one
# after another in that order, the least varied after a long plateau (fills of the right
# brightness but grey, for thousands of iterations). Measured on these axes, each scaled by the
# luminance's spread over its own, every direction weighs alike (from scratch, a small network
# then learned green-magenta within 2,000 iterations: docs/results.md). The luminance row is
# scaled so that a grey error costs what it costs in R, G and B (with the absolute error; the
# squared one divides the axes by sqrt(3) to the same end). A linear change of the space the
# error is measured in moves the squared error's optimum nowhere (the conditional mean), only
# the path to it.

OPPONENT_AXES = tuple(realism.OPPONENT_AXES.values())  # the axes of the colour slope
OPPONENT_SPREAD = (0.26, 0.092, 0.035)
WHITENED_AXES = tuple(tuple(3 * OPPONENT_SPREAD[0] / spread * weight for weight in axis)
                      for axis, spread in zip(OPPONENT_AXES, OPPONENT_SPREAD))


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the hole's colour (--colour-loss)
#
# This project's, from the colour slope its evaluation measures: trained with a per-pixel
# reconstruction loss, a network learns a photo's colour axes in the order of their variance,
# and the least varied one, green-magenta, last (grey grass after hours of training).

# Two orthonormal opponent axes of RGB, blind to luminance: red-blue and green-magenta
CHROMA_AXES = ((2 ** -0.5, 0.0, -(2 ** -0.5)), (-(6 ** -0.5), 2 * 6 ** -0.5, -(6 ** -0.5)))


def hole_colour_loss(images, outputs, masks, global_batch=None):
    """The L1 distance between the mean colour of the fill and of the photo in each image's hole
    (all its holes together), on the two opponent axes red-blue and green-magenta (orthonormal,
    blind to luminance), summed over the axes. A per-pixel loss takes the sign of each channel's
    gradient from the pixel's error, mostly luminance and texture, so a few levels of green
    barely count in it; averaged over the hole first, they are the whole of this term's. In
    float32 (float64 for float64 outputs)."""
    images, masks, outputs = in_float32(outputs, images, masks, outputs)
    axes = tf.constant(CHROMA_AXES, outputs.dtype)  # (2, 3)
    area = tf.maximum(tf.reduce_sum(masks, [1, 2]), 1.0)  # (B, 1)
    difference = tf.reduce_sum(masks * (outputs - images), [1, 2]) / area  # (B, 3)
    per_example = tf.reduce_sum(tf.abs(tf.linalg.matvec(axes, difference)), -1)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the two-pixel period (--checkerboard-penalty, --stripes-penalty)
#
# This project's, against the dot grid that transposed convolutions leave (Odena et al. 2016):
# the same responses as realism.py measures, on the output in the hole, beyond the photo's.

def checker_response(x):
    """|[[1, -1], [-1, 1]]| on every 2x2 window of images x (B, H, W, C): the two-pixel period,
    as realism.checker_response measures it; (B, H - 1, W - 1, C)."""
    return tf.abs(x[:, :-1, :-1] - x[:, :-1, 1:] - x[:, 1:, :-1] + x[:, 1:, 1:])


def stripe_response(x):
    """On every 3x3 window of images x (B, H, W, C): |[1, -2, 1] across, smoothed down by
    [1, 2, 1] / 4| plus the same turned a quarter: stripes of two-pixel period, as
    realism.stripe_response measures them; (B, H - 2, W - 2, C)."""
    def at(dy, dx):  # the windows' pixel (dy, dx)
        return x[:, dy:(dy - 2) or None, dx:(dx - 2) or None]
    smooth = (0.25, 0.5, 0.25)
    across = sum(w * (at(k, 0) - 2 * at(k, 1) + at(k, 2)) for k, w in enumerate(smooth))
    down = sum(w * (at(0, k) - 2 * at(1, k) + at(2, k)) for k, w in enumerate(smooth))
    return tf.abs(across) + tf.abs(down)


def windows_inside(masks, size):
    """1 where a size x size window of masks (B, H, W, 1) lies entirely in the hole, else 0:
    the minimum over the window; (B, H - size + 1, W - size + 1, 1)."""
    return -tf.nn.max_pool2d(-masks, size, 1, "VALID")


def gradient_magnitude(x):
    """sqrt(dx^2 + dy^2) of the forward differences at the top-left pixel of every 2x2 window
    of images x, as realism.gradient_magnitude; (B, H - 1, W - 1, C)."""
    dx, dy = x[:, :-1, 1:] - x[:, :-1, :-1], x[:, 1:, :-1] - x[:, :-1, :-1]
    return tf.sqrt(dx * dx + dy * dy)


def output_sharpness(images, outputs, masks):
    """Per image, the output's gradient magnitude over the photo's in the hole's 2x2 windows
    (realism.sharpness per photo; 0 for a flat photo), held constant: (B,)."""
    images, masks = tf.cast(images, outputs.dtype), tf.cast(masks, outputs.dtype)
    in_2x2 = windows_inside(masks, 2)
    return tf.stop_gradient(tf.math.divide_no_nan(
        tf.reduce_sum(gradient_magnitude(outputs) * in_2x2, [1, 2, 3]),
        tf.reduce_sum(gradient_magnitude(images) * in_2x2, [1, 2, 3])))


def period_two_excess(response, size, images, outputs, masks, global_batch=None,
                      sharpness=None):
    """Per image, in the hole: the output's response summed over the size x size windows and
    the channels, less the photo's scaled by the output's sharpness (output_sharpness, computed
    when not given), at least 0, over the windows: zero for an output no more patterned at the
    two-pixel period than a photo as sharp as it, whatever texture it draws where; only the
    period's share beyond that counts."""
    if sharpness is None:
        sharpness = output_sharpness(images, outputs, masks)
    images, masks = tf.cast(images, outputs.dtype), tf.cast(masks, outputs.dtype)
    inside = windows_inside(masks, size)
    ours = tf.reduce_sum(response(outputs) * inside, [1, 2, 3])
    theirs = tf.reduce_sum(response(images) * inside, [1, 2, 3])
    windows = tf.reduce_sum(inside, [1, 2, 3])
    per_example = tf.math.divide_no_nan(tf.nn.relu(ours - theirs * sharpness), windows)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def checkerboard_excess(images, outputs, masks, global_batch=None, sharpness=None):
    """--checkerboard-penalty's term: period_two_excess of |[[1, -1], [-1, 1]]| on 2x2 windows."""
    return period_two_excess(checker_response, 2, images, outputs, masks, global_batch,
                             sharpness)


def stripes_excess(images, outputs, masks, global_batch=None, sharpness=None):
    """--stripes-penalty's term: period_two_excess of |[1, -2, 1]| across and down on 3x3
    windows."""
    return period_two_excess(stripe_response, 3, images, outputs, masks, global_batch,
                             sharpness)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the low-passed discriminator input (--d-lowpass)

def lowpass(images):
    """This project's, so that the discriminator's gradient, which the completion network
    follows, carries nothing at the two-pixel period (docs/training.md): images (B, H, W, C)
    filtered by the binomial [1, 2, 1] / 4
    down and across, reflected at the edges (d c b | a b c d): zero response at the two-pixel
    period, in any direction."""
    down = tf.concat([images[:, 1:2], images, images[:, -2:-1]], 1)
    x = 0.25 * down[:, :-2] + 0.5 * down[:, 1:-1] + 0.25 * down[:, 2:]
    across = tf.concat([x[:, :, 1:2], x, x[:, :, -2:-1]], 2)
    return 0.25 * across[:, :, :-2] + 0.5 * across[:, :, 1:-1] + 0.25 * across[:, :, 2:]
