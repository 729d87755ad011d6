"""One step of each phase on one device and on two logical CPU devices (MirroredStrategy), from
the same weights on the same global batch; prints as JSON the losses of both and, for each
weight, the largest update on each and the largest difference between the two updates.

    python -m tests.two_devices [--float64] [--departures] [--hinge] [--ema] [PHASE ...]
        (default: phases 1 2 3 in float32; run by tests/test_distribute.py in a fresh process,
        since logical devices must be set before TensorFlow starts)

--departures trains with the options that depart from the paper's GAN (--d-loss-scale 0.5,
--label-smoothing 0.1, --checkerboard-penalty 1, --stripes-penalty 1, --coarse-loss 1,
--ssim-loss 1, --colour-loss 1, --recon-colour whitened, --d-batches joint, --d-lowpass),
whose terms must add up over the replicas too. --hinge trains with --gan-loss hinge (its
spectrally normalized discriminator's power-iteration vectors are updated on every replica alike), without --label-smoothing, which it does not take. --ema keeps the moving
average of --ema-decay 0.5, updated after each phase's step; "A" is its update, and "copies"
the largest difference between the replicas' copies of its weights (0: every replica's alike).

--float64 computes every layer but the last of each network in float64. The joint phase needs
it for a weight-by-weight comparison: there the discriminator judges the completion network's
training-mode output, which the two strategies round differently in float32 (synchronized batch
norm sums in another order), by about 1e-5. At these tiny sizes (a 2x2 map of 4 images in the
discriminator's fourth layer) that is enough to flip a few ReLUs, which moves a few weights'
updates by up to ~20 % on either strategy alike; in float64 the two agree to round-off.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import runtime  # noqa: E402,F401
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import config as cfg  # noqa: E402
from phases import build_training, make_steps  # noqa: E402
import train  # noqa: E402

GLOBAL_BATCH = 4


def fixed_batch(config):
    rng = np.random.default_rng(0)
    S, L = config.image_size, config.local_size
    masks = np.zeros((GLOBAL_BATCH, S, S, 1), np.float32)
    for i in range(GLOBAL_BATCH):
        y, x = rng.integers(0, S - 12, 2)
        masks[i, y:y + 10, x:x + 12] = 1.0
    offsets = lambda: rng.integers(0, S - L + 1, (GLOBAL_BATCH, 2)).astype(np.int32)
    return {"image": rng.random((GLOBAL_BATCH, S, S, 3), np.float32), "mask": masks,
            "hole": np.zeros((GLOBAL_BATCH, 4), np.int32), "local_fake": offsets(),
            "local_real": offsets()}


def run(strategy, config, batch, initial, phases, policy):
    with strategy.scope():
        G, D, _, _, _ = build_training(
            config, policy, synchronized=strategy.num_replicas_in_sync > 1)
        G.set_weights(initial[0])
        D.set_weights(initial[1])
        # Plain SGD: its update is the gradient itself, so the weights show whether the
        # replicas' gradients add up to the single-device one (Adadelta would normalize a
        # wrongly scaled gradient away).
        optimizers = [keras.optimizers.SGD(learning_rate=0.01) for _ in range(2)]
        for optimizer, network in zip(optimizers, (G, D)):
            optimizer.build(network.trainable_variables)
        steps = make_steps(G, D, *optimizers, config, np.full(3, 0.5, np.float32),
                           strategy=strategy)
        average = (train.MovingAverage(G, config, policy, strategy.num_replicas_in_sync > 1)
                   if config.ema_decay else None)
        if average:  # from the same weights on both strategies (the first update copies G)
            average.network.set_weights(initial[0])
    replicas = strategy.num_replicas_in_sync
    share = GLOBAL_BATCH // replicas

    def slice_for(context):
        start = context.replica_id_in_sync_group * share
        return {k: tf.constant(v[start:start + share]) for k, v in batch.items()}
    distributed = strategy.experimental_distribute_values_from_function(slice_for)
    results = {}
    for phase in phases:
        before = G.get_weights(), D.get_weights()
        before_average = average.network.get_weights() if average else []
        metrics = steps[phase](distributed)
        if average:
            average.update()
        # Each phase's update of every weight (trainable or batch-norm statistic).
        results[f"phase{phase}"] = {
            "metrics": {k: float(v) for k, v in metrics.items()},
            **{name: [w - b for w, b in zip(net.get_weights(), old)]
               for name, net, old in (("G", G, before[0]), ("D", D, before[1]))},
        }
        if average:
            results[f"phase{phase}"]["A"] = [w - b for w, b in zip(
                average.network.get_weights(), before_average)]
            results[f"phase{phase}"]["copies"] = max(
                float(np.max(np.abs(c.numpy() - v.numpy())))
                for v in average.network.weights
                for c in strategy.experimental_local_results(v))
    return results


def compare(one, two):
    """Per phase: both strategies' metrics, and per weight of each network
    [largest |update| on one device, on two devices, largest |difference|]."""
    def largest(array):
        return float(np.max(np.abs(array))) if array.size else 0.0
    return {phase: {
        "metrics": {"default": one[phase]["metrics"], "mirrored": two[phase]["metrics"]},
        **{net: [[largest(a), largest(b), largest(b - a)]
                 for a, b in zip(one[phase][net], two[phase][net])]
           for net in ("G", "D", "A") if net in one[phase]},
        **({"copies": two[phase]["copies"]} if "copies" in two[phase] else {}),
    } for phase in one}


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    args = sys.argv[1:]
    policy = "float64" if "--float64" in args else None
    # Narrow networks (an eighth of the channels) in float64; in float32 the paper's widths,
    # whose updates stand far enough above float32 round-off for a weight-by-weight comparison.
    departures = dict(d_loss_scale=0.5, label_smoothing=0.1, checkerboard_penalty=1.0,
                      stripes_penalty=1.0, d_batches="joint", d_lowpass=True, coarse_loss=1.0,
                      ssim_loss=1.0, colour_loss=1.0, recon_colour="whitened")
    if "--departures" not in args:
        departures = {}
    if "--hinge" in args:
        departures = dict(departures, gan_loss="hinge", label_smoothing=0.0)
    if "--ema" in args:
        departures = dict(departures, ema_decay=0.5)
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=GLOBAL_BATCH,
        alpha=1.0, width_divisor=8 if policy else 1, **departures))
    phases = [int(p) for p in args if not p.startswith("--")] or [1, 2, 3]
    keras.utils.set_random_seed(0)
    G, D, _, _, _ = build_training(config, policy)
    initial = (G.get_weights(), D.get_weights())
    batch = fixed_batch(config)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    # In float64, one reduction per gradient: the default packing (what train.py uses, kept in
    # float32) concatenates the gradients, which fails on float64 and float32 (last layers).
    mirrored = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if policy else None)
    one = run(tf.distribute.get_strategy(), config, batch, initial, phases, policy)
    two = run(mirrored, config, batch, initial, phases, policy)
    print(json.dumps({"phases": compare(one, two), "replicas": len(devices),
                      "dtype": policy or "float32"}))


if __name__ == "__main__":
    main()
