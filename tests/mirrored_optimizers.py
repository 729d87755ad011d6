"""The fused optimizers under MirroredStrategy on two logical CPU devices: each replica's copy of
every weight and slot as Keras's optimizer leaves it. Prints the largest difference as JSON.

    python -m tests.mirrored_optimizers   (run by tests/test_optimizers.py in a fresh process,
                                           since logical devices must be set before TensorFlow
                                           starts)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import runtime  # noqa: E402,F401
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import optimizers  # noqa: E402


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")])
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s).astype("float32") for s in ((3, 3, 4, 8), (8,))]
    grads = [[rng.normal(size=x.shape).astype("float32") for x in init] for _ in range(4)]
    result = {}
    for name, fused, plain in (
            ("adadelta", lambda: optimizers.Adadelta(1.0, rho=0.9, epsilon=1e-6),
             lambda: keras.optimizers.Adadelta(1.0, rho=0.9, epsilon=1e-6)),
            ("adam", lambda: optimizers.Adam(2e-4, beta_1=0.5),
             lambda: keras.optimizers.Adam(2e-4, beta_1=0.5))):
        with strategy.scope():
            pairs = []
            for make in (fused, plain):
                weights = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(init)]
                optimizer = make()
                optimizer.build(weights)
                pairs.append((optimizer, weights))

        @tf.function
        def step(g):
            def replica(g):
                for optimizer, weights in pairs:
                    with tf.GradientTape() as tape:  # a loss whose gradient is g, as training's
                        loss = tf.add_n([tf.reduce_sum(w * x) for w, x in zip(weights, g)])
                    optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            strategy.run(replica, args=(g,))

        for g in grads:
            step([tf.constant(x) for x in g])
        copies = [[np.stack([c.numpy() for c in v.value.values])
                   for v in (*optimizer.variables, *weights)] for optimizer, weights in pairs]
        result[name] = {
            "largest_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(*copies)),
            "replicas_agree": all(np.array_equal(a[0], a[1]) for a in copies[0]),
            "moved": float(np.max(np.abs(copies[0][-2][0] - init[0]))),
            "replicas": len(pairs[0][1][0].value.values)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
