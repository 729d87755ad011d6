"""One compiled training step per phase of the paper's Algorithm 1.

Each phase's step is its own method of `Steps`, the paper's computation first:

    phase 1  completion_step      the completion network on the reconstruction loss
    phase 2  discriminator_step   the discriminator on the cross-entropy, the completion
                                  network frozen
    phase 3  joint_step           the discriminator's update, then the completion network's on
                                  reconstruction + alpha * adversarial

What the flags beyond the paper change is in `Options`, where each step asks for it: the extra
terms of the completion network's loss, the discriminator's loss and input, and how the
discriminator sees a batch. The plumbing every step shares (micro-batches and gradient
accumulation, float16 loss scaling, gradient norms, the replicas of a tf.distribute strategy)
is in `Steps.update` and `Steps.compiled`.
"""
import keras
import tensorflow as tf

import losses
import optimizers
import utils
from model import build_completion_network, build_context_discriminator


def make_optimizer(config, learning_rate=None):
    learning_rate = learning_rate or config.learning_rate
    if config.optimizer == "adadelta":  # rho and epsilon: Torch's defaults, as the authors used
        return optimizers.Adadelta(learning_rate=learning_rate, rho=0.9, epsilon=1e-6)
    return optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)


def scaled(optimizer, loss):
    """float16 needs its loss scaled against underflow; the optimizer unscales the gradients."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def loss_scale(optimizer):
    """What scaled() multiplied the loss by (and so its gradients)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return 1.0


def build_training(config, policy=None, synchronized=False, mean_pixel=(0.5, 0.5, 0.5)):
    """The two networks and their optimizers, built (so checkpoints restore at once).

    Returns G, D, the two optimizers to checkpoint, and the two the steps apply: the same
    ones, or with float16 their loss-scaling wrappers (the checkpoint stays the same).
    synchronized: batch-norm statistics over the global batch (several replicas)."""
    G = build_completion_network(policy, synchronized, config.width_divisor, mean_pixel,
                                 config.upsampling, config.transposed_init)
    D = build_context_discriminator(config.image_size, config.local_size, policy, synchronized,
                                    config.width_divisor,
                                    "spectral" if config.gan_loss == "hinge" else "batch")
    g_opt, d_opt = make_optimizer(config), make_optimizer(config, config.d_learning_rate_at(0))
    step_opts = (g_opt, d_opt)
    if policy == "mixed_float16":
        step_opts = tuple(keras.optimizers.LossScaleOptimizer(o) for o in step_opts)
    for optimizer, network in zip(step_opts, (G, D)):
        optimizer.build(network.trainable_variables)
    return G, D, g_opt, d_opt, step_opts


def make_steps(G, D, g_opt, d_opt, config, mean_pixel, jit_compile=False, strategy=None):
    """{phase: compiled step}: batch -> dict of float32 metrics over the global batch (Steps)."""
    return Steps(G, D, g_opt, d_opt, config, mean_pixel, strategy).compiled(jit_compile)


class Options:
    """What the flags beyond the paper add to its steps; with their defaults each method does
    exactly what the paper does (docs/training.md, "When the discriminator wins")."""

    def __init__(self, config):
        self.config, self.B = config, config.batch_size

    def discriminator_input(self, images):
        """--d-lowpass: the images the discriminator sees, low-passed."""
        return losses.lowpass(images) if self.config.d_lowpass else images

    def discriminator_loss(self, real, fake):
        """--gan-loss hinge, --label-smoothing: the discriminator's loss."""
        if self.config.gan_loss == "hinge":
            return losses.hinge_discriminator_loss(real, fake, self.B)
        return losses.discriminator_loss(real, fake, self.B, self.config.label_smoothing)

    def adversarial_loss(self, fake):
        """--gan-loss hinge: the completion network's adversarial term."""
        if self.config.gan_loss == "hinge":
            return losses.hinge_adversarial_loss(fake, self.B)
        return losses.adversarial_loss(fake, self.B)

    def joint_batches(self):
        """--d-batches joint: the photos and the completed images as one batch."""
        return self.config.d_batches == "joint"

    def penalties(self, part, outputs):
        """--coarse-loss, --ssim-loss, --colour-loss, --checkerboard-penalty and
        --stripes-penalty: their weighted sum, added to the completion network's loss in phases
        1 and 3, and their metrics (0 and none without them)."""
        config, total, values = self.config, 0.0, {}
        images, masks = part["image"], part["mask"]
        if config.coarse_loss:
            values["coarse"] = losses.coarse_reconstruction(images, outputs, masks, self.B)
            total += config.coarse_loss * values["coarse"]
        if config.ssim_loss:
            values["ssim"] = losses.ssim_loss(images, outputs, masks, self.B)
            total += config.ssim_loss * values["ssim"]
        if config.colour_loss:
            values["colour"] = losses.hole_colour_loss(images, outputs, masks, self.B)
            total += config.colour_loss * values["colour"]
        terms = [(name, weight, term) for name, weight, term in (
            ("checkerboard", config.checkerboard_penalty, losses.checkerboard_excess),
            ("stripes", config.stripes_penalty, losses.stripes_excess)) if weight]
        if terms:  # the output's sharpness, which both terms scale by, computed once
            sharpness = losses.output_sharpness(images, outputs, masks)
        for name, weight, term in terms:
            values[name] = term(images, outputs, masks, self.B, sharpness)
            total += weight * values[name]
        return total, values


class Steps:
    """The three phases' steps on networks G and D with their optimizers (with float16, their
    keras.optimizers.LossScaleOptimizer wrappers), under `strategy` (default: the current one).
    With --accumulate K each replica's share of the batch is cut into K micro-batches, whose
    gradients make one update."""

    def __init__(self, G, D, g_opt, d_opt, config, mean_pixel, strategy=None):
        self.G, self.D, self.g_opt, self.d_opt, self.config = G, D, g_opt, d_opt, config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.mean_pixel = tf.constant(mean_pixel, tf.float32)
        self.options = Options(config)
        self.B, self.L, self.K = config.batch_size, config.local_size, config.accumulate

    # -----------------------------------------------------------------------------------------
    # The paper's computation

    def complete(self, part, training=True, update_statistics=True):
        """(C(x, M_c), the completed images) of a micro-batch. update_statistics=False: in
        training mode, but leaving the batch-norm moving averages as they are."""
        inputs = utils.completion_input(part["image"], part["mask"],
                                        tf.cast(self.mean_pixel, part["image"].dtype))
        if update_statistics:
            outputs = self.G(inputs, training=training)
        else:
            outputs = self.G.stateless_call(self.G.trainable_variables,
                                            self.G.non_trainable_variables, inputs,
                                            training=training)[0]
        return outputs, utils.blend(part["image"], outputs, part["mask"])

    def discriminate(self, images, patches_at):
        """D(the whole images, their L x L patches at `patches_at`): one logit each."""
        images = self.options.discriminator_input(images)
        return self.D([images, utils.crop_patches(images, patches_at, self.L)], training=True)

    def reconstruction(self, part, outputs):
        return losses.reconstruction_loss(part["image"], outputs, part["mask"],
                                          self.config.recon_loss, self.B,
                                          self.config.recon_colour)

    def real_and_fake(self, part, completed):
        """The discriminator's logits on the micro-batch's photos (each with a random patch)
        and on its completed images (each with the patch around its hole): two batches, as
        GLCIC-PyTorch does, or with --d-batches joint one batch of both."""
        if not self.options.joint_batches():
            return (self.discriminate(part["image"], part["local_real"]),
                    self.discriminate(completed, part["local_fake"]))
        size = completed.shape[0]
        both = self.discriminate(
            tf.concat([tf.cast(part["image"], completed.dtype), completed], 0),
            tf.concat([part["local_real"], part["local_fake"]], 0))
        return both[:size], both[size:]

    def judge_completed(self, part, completed):
        """The discriminator's logits on the completed images, for the completion network's
        adversarial term (with --d-batches joint, judged among the photos as in its update)."""
        if not self.options.joint_batches():
            return self.discriminate(completed, part["local_fake"])
        return self.real_and_fake(part, completed)[1]

    def discrimination(self, part, completed):
        """The discriminator's loss and metrics on a micro-batch and its completed images."""
        real, fake = self.real_and_fake(part, tf.stop_gradient(completed))
        loss = self.options.discriminator_loss(real, fake)
        return loss, {"discriminator": loss, "d_real": self.share_of_mean(tf.sigmoid(real)),
                      "d_completed": self.share_of_mean(tf.sigmoid(fake))}, None

    def completion_step(self, batch):
        """Phase 1: the completion network on the reconstruction loss in the hole."""
        def loss_of(i, part):
            outputs = self.complete(part)[0]
            loss = self.reconstruction(part, outputs)
            penalty, values = self.options.penalties(part, outputs)
            return loss + penalty, {"reconstruction": loss, **values}, None
        return self.update(self.g_opt, self.G, self.micro_batches(batch), loss_of)

    def discriminator_step(self, batch):
        """Phase 2: the discriminator on its cross-entropy; the completion network only fills
        the holes (inference mode)."""
        def loss_of(i, part):
            return self.discrimination(part, self.complete(part, training=False)[1])
        return self.update(self.d_opt, self.D, self.micro_batches(batch), loss_of, "grad_d")

    def joint_step(self, batch):
        """Phase 3: the discriminator's update, then the completion network's on reconstruction
        + alpha * adversarial against the updated discriminator.

        With one micro-batch, one forward pass of the completion network serves both, its tape
        kept across the discriminator's update. With several, keeping them all would hold the
        whole batch's activations, the memory accumulation saves: each micro-batch runs
        forward again for the completion network's update (one more forward pass each), the
        first run leaving the batch-norm moving averages alone."""
        config, parts = self.config, self.micro_batches(batch)
        tapes = [tf.GradientTape()] if self.K == 1 else None
        if tapes:
            with tapes[0]:
                first = [self.complete(parts[0])]
        else:
            first = [self.complete(part, update_statistics=False) for part in parts]

        def d_loss_of(i, part):  # --d-loss-scale: the update's, not the metric's
            loss, values, split = self.discrimination(part, first[i][1])
            return loss * config.d_loss_scale, values, split
        metrics = self.update(self.d_opt, self.D, parts, d_loss_of, "grad_d")

        def loss_of(i, part):
            outputs, completed = first[i] if tapes else self.complete(part)
            # The reconstruction term's share of the output's gradient (with the penalties',
            # if any: the adversarial part is alpha times the GAN term's alone): cheap.
            with tf.GradientTape() as at_output:
                at_output.watch(outputs)
                recon = self.reconstruction(part, outputs)
                penalty, values = self.options.penalties(part, outputs)
                not_adversarial = recon + penalty
            adversarial = self.options.adversarial_loss(self.judge_completed(part, completed))
            return (not_adversarial + config.alpha * adversarial,
                    {"reconstruction": recon, "adversarial": adversarial, **values},
                    (outputs, at_output.gradient(not_adversarial, outputs)))
        return dict(metrics, **self.update(self.g_opt, self.G, parts, loss_of, "grad_g", tapes))

    # -----------------------------------------------------------------------------------------
    # The plumbing the three steps share

    def micro_batches(self, batch):
        """K static slices of the replica's batch; batch norm normalizes each by its own
        statistics (over all replicas' i-th slices when synchronized)."""
        size = batch["image"].shape[0] // self.K
        return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(self.K)]

    def update(self, optimizer, network, parts, loss_of, name="grad_g", tapes=None):
        """One update of `network`: the gradients of loss_of(i, part) -> (loss, metrics, split)
        summed over the micro-batches. Each loss is a share of the mean over the global batch,
        so their sum is the gradient of that mean. tapes: one per micro-batch that has already
        recorded part of its loss (else new ones). Returns the metrics, summed, with the
        norm of the update's gradient under `name`; split (or None): (the network's output,
        the reconstruction loss's gradient there), to tell the output's gradient into its
        reconstruction and adversarial parts (split_at_output)."""
        variables, total, metrics = network.trainable_variables, None, []
        for i, part in enumerate(parts):
            tape = tapes[i] if tapes else tf.GradientTape()
            with tape:
                loss, values, split = loss_of(i, part)
                scaled_loss = scaled(optimizer, loss)
            sources = variables + ([split[0]] if split else [])
            gradients = tape.gradient(scaled_loss, sources)
            if split:
                at_output = tf.cast(gradients.pop(), tf.float32) / loss_scale(optimizer)
                values = dict(values, **self.split_at_output(at_output, split[1]))
            total = gradients if total is None else [t + g for t, g in zip(total, gradients)]
            metrics.append(values)
        metrics = {key: tf.add_n([m[key] for m in metrics]) for key in metrics[0]}
        metrics[name] = self.gradient_norm(total) / loss_scale(optimizer)
        optimizer.apply_gradients(zip(total, variables))
        return metrics

    def gradient_norm(self, gradients):
        """The global norm of the gradient of the global batch (summed over the replicas,
        which the optimizer does again for the update), shared out so that the metrics' sum
        over replicas gives it once."""
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            gradients = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, gradients)
        return tf.linalg.global_norm([tf.cast(g, tf.float32) for g in gradients]) / replicas

    @staticmethod
    def split_at_output(total, reconstruction):
        """Squared norms of the completion network's output gradient, split into the
        reconstruction term's and the adversarial term's (alpha * GAN: the rest). Squared, so
        that micro-batches and replicas add up; report.py takes the roots."""
        reconstruction = tf.cast(reconstruction, tf.float32)
        adversarial = total - reconstruction
        return {"grad_out_reconstruction_sq": tf.reduce_sum(tf.square(reconstruction)),
                "grad_out_adversarial_sq": tf.reduce_sum(tf.square(adversarial))}

    def share_of_mean(self, values):
        return tf.nn.compute_average_loss(values[:, 0], global_batch_size=self.B)

    def compiled(self, jit_compile=False):
        """{phase: function}: each runs its per-replica step on every replica of the strategy
        and sums the replicas' shares of the metrics. The per-replica step is traced once (all
        shapes are fixed) and, with jit_compile, compiled by XLA."""
        def distributed(step):
            per_replica = tf.function(step, jit_compile=jit_compile)

            @tf.function
            def run(batch):
                shares = self.strategy.run(per_replica, args=(batch,))
                return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                        for name, value in shares.items()}
            return run
        return {1: distributed(self.completion_step), 2: distributed(self.discriminator_step),
                3: distributed(self.joint_step)}
