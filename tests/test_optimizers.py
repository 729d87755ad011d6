"""optimizers.py: the fused Adadelta and Adam update as Keras's do, and read Keras's checkpoints."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import optimizers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KINDS = {
    "adadelta": (lambda: optimizers.Adadelta(learning_rate=1.0, rho=0.9, epsilon=1e-6),
                 lambda: keras.optimizers.Adadelta(learning_rate=1.0, rho=0.9, epsilon=1e-6),
                 "ResourceApplyAdadelta"),
    "adam": (lambda: optimizers.Adam(learning_rate=2e-4, beta_1=0.5),
             lambda: keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5),
             "ResourceApplyAdam"),
}
SHAPES = [(3, 3, 4, 8), (8,), (16, 5)]


def variables(seed=0):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype("float32"), name=f"w{i}")
            for i, shape in enumerate(SHAPES)]


def gradients(rng):
    return [tf.constant(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_fused_update_is_keras_update(kind):
    """Six steps, the learning rate changed after three: every weight and slot within float32
    rounding of Keras's own optimizer's, and each update one fused kernel in the graph."""
    make_fused, make_keras, kernel = KINDS[kind]
    fused, plain = make_fused(), make_keras()
    ours, theirs = variables(), variables()
    fused.build(ours)
    plain.build(theirs)

    @tf.function
    def step(grads):
        fused.apply_gradients(zip(grads, ours))
        plain.apply_gradients(zip(grads, theirs))

    rng = np.random.default_rng(1)
    start = [v.numpy() for v in ours]
    for i in range(6):
        if i == 3:
            for optimizer in (fused, plain):
                optimizer.learning_rate.assign(optimizer.learning_rate * 0.5)
        step(gradients(rng))
    for a, b, before in zip(ours, theirs, start):
        assert np.max(np.abs(a.numpy() - before)) > 1e-4  # they moved
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(fused.variables, plain.variables):
        assert a.name == b.name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    graph = step.get_concrete_function(gradients(rng)).graph
    kinds = [op.type for f in graph._functions.values() for op in f.graph.get_operations()]
    kinds += [op.type for op in graph.get_operations()]
    assert kinds.count(kernel) == len(SHAPES)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_checkpoint_of_keras_optimizer_restores_into_the_fused_one(kind, tmp_path):
    """Sessions saved before the fused optimizers resume with their slots."""
    make_fused, make_keras, _ = KINDS[kind]
    theirs = variables()
    plain = make_keras()
    plain.build(theirs)
    plain.apply_gradients(zip(gradients(np.random.default_rng(2)), theirs))
    path = tf.train.Checkpoint(optimizer=plain, weights=theirs).write(str(tmp_path / "ckpt"))
    ours = variables(seed=5)
    fused = make_fused()
    fused.build(ours)
    tf.train.Checkpoint(optimizer=fused, weights=ours).read(path).assert_consumed()
    assert int(fused.iterations) == 1
    for a, b in zip(fused.variables, plain.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_sparse_gradients_take_keras_update():
    """An IndexedSlices gradient (an embedding's) updates only its rows, as Keras's does."""
    fused, plain = KINDS["adadelta"][0](), KINDS["adadelta"][1]()
    ours, theirs = variables(), variables()
    fused.build(ours)
    plain.build(theirs)
    rows = tf.IndexedSlices(tf.ones((2, 5)), tf.constant([1, 3]), tf.constant([16, 5]))
    fused.apply_gradients([(rows, ours[2])])
    plain.apply_gradients([(rows, theirs[2])])
    np.testing.assert_allclose(ours[2].numpy(), theirs[2].numpy(), rtol=1e-6)
    moved = np.any(ours[2].numpy() != variables()[2].numpy(), axis=1)
    assert moved.tolist() == [i in (1, 3) for i in range(16)]


def test_under_a_mirrored_strategy_each_replica_updates_as_keras_does():
    """Two logical CPU devices (in a fresh process): every copy of every weight and slot within
    float32 rounding of Keras's optimizer, both replicas' copies identical."""
    result = subprocess.run([sys.executable, "-m", "tests.mirrored_optimizers"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for kind in KINDS:
        assert out[kind]["replicas"] == 2
        assert out[kind]["replicas_agree"]
        assert out[kind]["moved"] > 1e-4
        assert out[kind]["largest_difference"] < 1e-5, (kind, out[kind])
