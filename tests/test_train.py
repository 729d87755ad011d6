"""train.py and phases.py: what each phase updates, and whole tiny runs: resume, finish, extend,
conflicts, --fresh, Ctrl-C, bad photos, non-finite losses, full disks."""
import dataclasses
import errno
import functools
import os
import re
import signal
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import complete
import config as cfg
import data_loader
import devices
import session
import report
import losses
import phases
import train
import utils
import exports
import model
from conftest import (TINY_SETTINGS, run_main, run_script, smooth_photo, tiny_args,
                      working_directory)
from test_report import read_events
from two_devices import fixed_batch

# ---------------------------------------------------------------------------------------------
# The hinge loss's discriminator


def test_a_hinge_session_trains_its_spectral_discriminator_and_checkpoints_it(tiny_config,
                                                                                tmp_path):
    """Phase 2 and 3 steps with --gan-loss hinge: the hinge loss (2 where every logit is 0),
    no batch norm in the discriminator, its power-iteration vectors moved by training and
    restored with it from a checkpoint."""
    config = tiny_config(gan_loss="hinge", batch_size=4)
    keras.utils.set_random_seed(0)
    G, D, g_opt, d_opt, step_opts = phases.build_training(config)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in D.layers)
    vectors = [layer.u for layer in D.layers if hasattr(layer, "u")]
    assert len(vectors) == 14
    start = [v.numpy().copy() for v in vectors]
    steps = phases.make_steps(G, D, *step_opts, config, np.full(3, 0.5, np.float32))
    batch = {k: tf.constant(v) for k, v in fixed_batch(config).items()}
    first = {k: float(v) for k, v in steps[2](batch).items()}
    assert first["discriminator"] == pytest.approx(2.0, abs=0.05)  # logits start near 0
    assert not any(np.allclose(v.numpy(), s) for v, s in zip(vectors, start))
    metrics = [{k: float(v) for k, v in steps[3](batch).items()} for _ in range(3)]
    assert all(m["adversarial"] == pytest.approx(0, abs=0.2) for m in metrics)
    assert metrics[-1]["discriminator"] < first["discriminator"]
    checkpoint = tf.train.Checkpoint(context_discriminator=D)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    x = [tf.constant(batch["image"]), utils.crop_patches(batch["image"], batch["local_real"],
                                                         config.local_size)]
    judged = D(x, training=False).numpy()
    _, again, *_ = phases.build_training(config)
    tf.train.Checkpoint(context_discriminator=again).restore(path).assert_consumed()
    for layer in again.layers:
        if hasattr(layer, "u"):
            np.testing.assert_array_equal(layer.u.numpy(), D.get_layer(layer.name).u.numpy())
    np.testing.assert_allclose(again(x, training=False).numpy(), judged, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The step of each phase


@pytest.fixture(scope="module")
def tiny_batches(tmp_path_factory):
    from conftest import TINY_SETTINGS, write_photos
    folder = tmp_path_factory.mktemp("photos")
    config = cfg.resolve(cfg.preset_config("quick"), dict(TINY_SETTINGS, alpha=1.0))
    files = write_photos(folder, 4, size=(40, 40))
    return config, iter(data_loader.training_dataset(files, config))


def build_steps(config, policy=None, jit_compile=False):
    keras.utils.set_random_seed(0)
    G, D, _, _, step_opts = phases.build_training(config, policy)
    return G, D, phases.make_steps(G, D, *step_opts, config, np.full(3, 0.5, np.float32),
                                  jit_compile)


@pytest.fixture(scope="module")
def networks(tiny_batches):
    config, batches = tiny_batches
    return (*build_steps(config), batches)


def snapshot(model):
    return [v.numpy().copy() for v in model.variables]


def changed(model, before):
    return [not np.array_equal(v.numpy(), b) for v, b in zip(model.variables, before)]


@pytest.mark.parametrize("phase, g_changes, d_changes", [(1, True, False), (2, False, True),
                                                           (3, True, True)])
def test_each_phase_updates_exactly_its_networks(networks, phase, g_changes, d_changes):
    G, D, steps, batches = networks
    g_before, d_before = snapshot(G), snapshot(D)
    metrics = steps[phase](next(batches))
    g_changed, d_changed = changed(G, g_before), changed(D, d_before)
    if g_changes:
        assert all(c for c, v in zip(g_changed, G.variables) if v.trainable)
    else:  # frozen: weights and batch-norm statistics untouched
        assert not any(g_changed)
    if d_changes:
        assert all(c for c, v in zip(d_changed, D.variables) if v.trainable)
    else:
        assert not any(d_changed)
    expected = {1: {"reconstruction", "grad_g"},
                2: {"discriminator", "d_real", "d_completed", "grad_d"},
                3: {"reconstruction", "adversarial", "discriminator", "d_real", "d_completed",
                    "grad_g", "grad_d", "grad_out_reconstruction_sq", "grad_out_adversarial_sq"}}
    assert set(metrics) == expected[phase]
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_gradient_norms_are_those_of_the_updates(tiny_batches):
    """grad_g is the global norm of the completion network's update, computed here on its own;
    at the output, the reconstruction term's gradient is 2 M (C - x) / (pixels x batch), and
    with alpha 0 nothing of the output's gradient is adversarial."""
    config, batches = tiny_batches
    G, D, steps = build_steps(dataclasses.replace(config, alpha=0.0))
    batch = next(batches)
    inputs = utils.completion_input(batch["image"], batch["mask"], tf.fill([3], 0.5))
    with tf.GradientTape() as tape:
        outputs = G(inputs, training=True)
        loss = losses.reconstruction_loss(batch["image"], outputs, batch["mask"], "mse")
    expected = tf.linalg.global_norm(tape.gradient(loss, G.trainable_variables))
    metrics = steps[1](batch)
    assert float(metrics["grad_g"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(metrics["grad_g"]) > 0

    outputs = G(inputs, training=True)  # as phase 3 sees it: the discriminator goes first
    metrics = steps[3](batch)
    at_output = (2 * batch["mask"] * (outputs - batch["image"])
                 / (np.prod(outputs.shape[1:]) * outputs.shape[0]))
    assert float(metrics["grad_out_reconstruction_sq"]) == pytest.approx(
        float(tf.reduce_sum(tf.square(at_output))), rel=1e-4)
    assert float(metrics["grad_out_adversarial_sq"]) == pytest.approx(0, abs=1e-16)
    assert float(metrics["grad_d"]) > 0


def test_step_functions_are_traced_once_per_phase(networks):
    _, _, steps, batches = networks
    for phase in (1, 2, 3):
        for _ in range(3):
            steps[phase](next(batches))
        assert steps[phase].experimental_get_tracing_count() == 1


def test_the_width_divisor_reaches_both_networks(tiny_config):
    G, D, *_ = phases.build_training(tiny_config(width_divisor=8))
    assert G.get_layer("conv1").filters == 8 and G.get_layer("conv17").filters == 3
    assert D.get_layer("global_fc").units == 128 and D.get_layer("logit").units == 1


# Phase 3 updates both networks with both optimizers; the other phases are slow-only.
@pytest.mark.parametrize("phases", [(3,), pytest.param((1, 2), marks=pytest.mark.slow)])
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_keep_float32_losses_and_weights(tiny_batches, policy, phases):
    config, batches = tiny_batches
    G, D, steps = build_steps(config, policy)
    before = [v.numpy().copy() for v in G.trainable_variables + D.trainable_variables]
    for phase in phases:
        # float16 starts with a loss scale of 32768: its first steps may overflow and be skipped
        # while the scale halves (phase 3 here: five steps, down to 1024).
        for _ in range(8):
            metrics = steps[phase](next(batches))
        for name, value in metrics.items():
            # float16's gradient norms are those of the skipped steps while the scale falls
            finite = name in report.LOSSES or policy != "mixed_float16"
            assert value.dtype == tf.float32, (phase, name)
            assert np.isfinite(float(value)) or not finite, (phase, name)
    assert {v.dtype for v in G.weights + D.weights} == {"float32"}
    after = G.trainable_variables + D.trainable_variables
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(after, before))


def test_float16_uses_loss_scaling_and_checkpoints_the_plain_optimizer(tiny_config):
    _, _, g_opt, d_opt, step_opts = phases.build_training(tiny_config(), "mixed_float16")
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in step_opts)
    assert [o.inner_optimizer for o in step_opts] == [g_opt, d_opt]
    assert not isinstance(g_opt, keras.optimizers.LossScaleOptimizer)


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("phases", [(3,), (1, 2)])
def test_xla_and_plain_steps_give_the_same_losses(tiny_batches, phases, accumulate):
    config, batches = tiny_batches
    config = cfg.resolve(config, dict(accumulate=accumulate))
    batch = next(batches)
    plain = build_steps(config)[2]
    compiled = build_steps(config, jit_compile=True)[2]
    for phase in phases:
        expected, got = plain[phase](batch), compiled[phase](batch)
        assert set(got) == set(expected)
        for name in set(expected) - set(report.LOSSES):
            # The gradients' norms: present and finite in both. Phase 3's are taken after the
            # discriminator's update, whose batch norm at these tiny sizes magnifies the two
            # compilers' round-off even more in gradients than in losses (30 % seen).
            assert np.isfinite(float(got[name])) and float(got[name]) >= 0, name
        for name in report.LOSSES:
            if name not in expected:
                continue
            # Phase 3's adversarial loss is taken after the discriminator's update, whose
            # batch norm at these tiny sizes (the deepest maps are 1x1, two images, epsilon
            # 1e-5) magnifies the two compilers' round-off, as between one and two devices.
            rtol = 2e-2 if name == "adversarial" else 2e-3
            np.testing.assert_allclose(float(got[name]), float(expected[name]), rtol=rtol,
                                       atol=1e-5, err_msg=f"phase {phase} {name}")


# ---------------------------------------------------------------------------------------------
# Gradient accumulation (--accumulate K): K micro-batches, one update


def in_float64(model, batch_norm_trainable=True):
    """A copy of a network computing every layer in float64 (its last layer included, which
    build_* keep in float32), with the same weights."""
    inputs = [keras.Input(t.shape[1:], dtype="float64") for t in model.inputs]

    def clone(layer):
        trainable = batch_norm_trainable or not isinstance(layer, keras.layers.BatchNormalization)
        return layer.__class__.from_config(dict(layer.get_config(), dtype="float64",
                                                trainable=trainable))
    copy = keras.models.clone_model(model, inputs if len(inputs) > 1 else inputs[0],
                                    clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def float64_steps(accumulate, batch_norm_trainable=True):
    """Tiny networks in float64 with plain SGD, whose update is the gradient itself (Adadelta
    would normalize a wrongly scaled gradient away), and their steps; and a batch of 4."""
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        TINY_SETTINGS, batch_size=4, alpha=1.0, accumulate=accumulate))
    keras.utils.set_random_seed(0)
    G, D, *_ = phases.build_training(config)
    G, D = (in_float64(net, batch_norm_trainable) for net in (G, D))
    optimizers = [keras.optimizers.SGD(learning_rate=0.01) for _ in range(2)]
    for optimizer, network in zip(optimizers, (G, D)):
        optimizer.build(network.trainable_variables)
    steps = phases.make_steps(G, D, *optimizers, config, np.full(3, 0.5))
    batch = {k: tf.constant(v.astype(np.float64) if v.dtype == np.float32 else v)
             for k, v in fixed_batch(config).items()}
    return G, D, steps, batch


def departure_runs():
    """run(phase, **settings) -> (metrics, the completion network's and the discriminator's
    updates) of one step from the same float64 weights and batch, with SGD (the update is the
    gradient), the networks built once; each (phase, settings) computed once."""
    G, D, _, batch = float64_steps(1)
    start = [v.numpy() for v in G.weights + D.weights]
    weights = G.trainable_weights + D.trainable_weights

    @functools.cache
    def run(phase, **settings):
        for v, value in zip(G.weights + D.weights, start):
            v.assign(value)
        config = cfg.resolve(cfg.preset_config("quick"), dict(
            TINY_SETTINGS, batch_size=4, alpha=1.0, **settings))
        optimizers = [keras.optimizers.SGD(learning_rate=0.01) for _ in range(2)]
        for optimizer, network in zip(optimizers, (G, D)):
            optimizer.build(network.trainable_variables)
        steps = phases.make_steps(G, D, *optimizers, config, np.full(3, 0.5))
        before = [v.numpy() for v in weights]
        metrics = {k: float(v) for k, v in steps[phase](batch).items()}
        moves = [v.numpy() - b for v, b in zip(weights, before)]
        return metrics, moves[:len(G.trainable_weights)], moves[len(G.trainable_weights):]
    return run


def check_d_loss_scale(run, phase):
    """--d-loss-scale 0.25 multiplies the discriminator's update (and its norm, grad_d) by 0.25
    in phase 3 and by 1 in phase 2, and leaves the discriminator's losses alone (the completion
    network's phase-3 update then meets another discriminator)."""
    paper, scaled = run(phase), run(phase, d_loss_scale=0.25)
    factor = 0.25 if phase == 3 else 1.0
    for key in ("discriminator", "d_real", "d_completed"):  # the loss, not the update's
        assert scaled[0][key] == pytest.approx(paper[0][key], rel=1e-12), key
    assert scaled[0]["grad_d"] == pytest.approx(factor * paper[0]["grad_d"], rel=1e-9)
    for a, b in zip(paper[2], scaled[2], strict=True):
        np.testing.assert_allclose(b, factor * a, rtol=1e-9, atol=1e-15)


def test_d_loss_scale_scales_the_discriminators_phase_3_update():
    check_d_loss_scale(departure_runs(), 3)


@pytest.mark.slow
def test_the_departures_from_the_paper_change_exactly_their_terms():
    """--d-loss-scale leaves phase 2 alone; --label-smoothing changes the discriminator's loss
    and not what it outputs; --checkerboard-penalty and --stripes-penalty add their terms to the
    completion network's phase-3 update, logged as "checkerboard" and "stripes", and nothing to
    the discriminator's (phase 1:
    test_a_session_departing_from_the_paper_...)."""
    run = departure_runs()
    check_d_loss_scale(run, 2)

    paper, smooth = run(2), run(2, label_smoothing=0.2)
    assert smooth[0]["discriminator"] != pytest.approx(paper[0]["discriminator"], rel=1e-6)
    for key in ("d_real", "d_completed"):
        assert smooth[0][key] == pytest.approx(paper[0][key], rel=1e-12), key

    blind = run(2, d_lowpass=True)  # the discriminator sees other images: another loss
    assert blind[0]["discriminator"] != pytest.approx(paper[0]["discriminator"], rel=1e-6)
    assert any(not np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(paper[2], blind[2]))

    paper, penalized = run(3), run(3, checkerboard_penalty=10.0, stripes_penalty=10.0)
    assert "checkerboard" not in paper[0] and penalized[0]["checkerboard"] > 0
    assert "stripes" not in paper[0] and penalized[0]["stripes"] > 0
    assert penalized[0]["reconstruction"] == pytest.approx(paper[0]["reconstruction"], rel=1e-12)
    assert any(not np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(paper[1], penalized[1]))
    for a, b in zip(paper[2], penalized[2], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-15)


def test_joint_discriminator_batches_normalize_photos_and_fills_together():
    """--d-batches joint: phase 2 judges the photos and the completed images in one batch (its
    batch-norm statistics over both); separate, each in a batch of its own, as the logits of
    the discriminator called on each show."""
    G, D, _, batch = float64_steps(1)
    start = [v.numpy() for v in G.weights + D.weights]
    inputs = utils.completion_input(batch["image"], batch["mask"],
                                    tf.constant([0.5] * 3, tf.float64))
    completed = utils.blend(batch["image"], G(inputs, training=False), batch["mask"])
    L = TINY_SETTINGS["local_size"]

    def judged(images, at):
        return tf.sigmoid(D.stateless_call(D.trainable_variables, D.non_trainable_variables,
                                           [images, utils.crop_patches(images, at, L)],
                                           training=True)[0]).numpy()[:, 0]
    both = judged(tf.concat([batch["image"], completed], 0),
                  tf.concat([batch["local_real"], batch["local_fake"]], 0))
    expected = {"joint": (both[:4].mean(), both[4:].mean()),
                "separate": (judged(batch["image"], batch["local_real"]).mean(),
                             judged(completed, batch["local_fake"]).mean())}
    assert abs(expected["joint"][1] - expected["separate"][1]) > 1e-6
    for d_batches, (real, fake) in expected.items():
        for v, value in zip(G.weights + D.weights, start):
            v.assign(value)
        config = cfg.resolve(cfg.preset_config("quick"), dict(
            TINY_SETTINGS, batch_size=4, alpha=1.0, d_batches=d_batches))
        optimizers = [keras.optimizers.SGD(learning_rate=0.01) for _ in range(2)]
        for optimizer, network in zip(optimizers, (G, D)):
            optimizer.build(network.trainable_variables)
        metrics = phases.make_steps(G, D, *optimizers, config, np.full(3, 0.5))[2](batch)
        assert float(metrics["d_real"]) == pytest.approx(real, rel=1e-9), d_batches
        assert float(metrics["d_completed"]) == pytest.approx(fake, rel=1e-9), d_batches


def test_accumulated_gradients_are_those_of_the_whole_batch():
    """With batch norm in inference mode (each image's gradient then independent of the
    others), each phase's update from 2 micro-batches of 2 is the update from the batch of 4,
    to float64 round-off, and so are the losses."""
    runs = []
    for accumulate in (1, 2):
        G, D, steps, batch = float64_steps(accumulate, batch_norm_trainable=False)
        assert {v.dtype for v in G.weights + D.weights} == {"float64"}
        updates = []
        for phase in (1, 2, 3):
            before = [v.numpy() for v in G.weights + D.weights]
            metrics = steps[phase](batch)
            updates.append(({k: float(v) for k, v in metrics.items()},
                            [v.numpy() - b for v, b in zip(G.weights + D.weights, before)]))
        runs.append(updates)
    for phase, ((whole, expected), (accumulated, got)) in enumerate(zip(*runs), 1):
        assert set(accumulated) == set(whole)
        for name in whole:
            assert accumulated[name] == pytest.approx(whole[name], rel=1e-12), (phase, name)
        moved = 0
        for a, b in zip(expected, got, strict=True):
            largest = np.max(np.abs(a))
            moved += largest > 0
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * largest, err_msg=phase)
        assert moved == {1: 34, 2: 28, 3: 62}[phase]  # every trainable weight of its networks


def test_each_micro_batch_normalizes_with_its_statistics_and_updates_the_averages_once():
    """The first batch-norm layer's moving mean after one step of 2 micro-batches: two updates
    (momentum 0.9), each with the mean of its own micro-batch; in phase 3 too, where the
    completion network runs forward twice per micro-batch."""
    G, _, steps, batch = float64_steps(2)
    first_conv = keras.Model(G.inputs, G.get_layer("conv1").output)
    for phase in (1, 3):
        moving = G.get_layer("bn1").moving_mean
        expected = moving.numpy()
        for i in range(2):
            part = {k: v[2 * i:2 * i + 2] for k, v in batch.items()}
            inputs = utils.completion_input(part["image"], part["mask"],
                                            tf.constant([0.5] * 3, tf.float64))
            mean = np.mean(first_conv(inputs).numpy(), axis=(0, 1, 2))
            expected = 0.9 * expected + 0.1 * mean
        steps[phase](batch)
        np.testing.assert_allclose(moving.numpy(), expected, rtol=1e-12, err_msg=phase)


@pytest.mark.slow
def test_accumulation_keeps_float16_loss_scaling(tiny_batches):
    config, batches = tiny_batches
    config = cfg.resolve(config, dict(batch_size=4, accumulate=2))
    G, D, steps = build_steps(config, "mixed_float16")
    before = [v.numpy().copy() for v in G.trainable_variables + D.trainable_variables]
    applied = 0
    for _ in range(8):  # the loss scale halves from 32768 while the first steps overflow
        pair = next(batches), next(batches)
        metrics = steps[3]({k: tf.concat([pair[0][k], pair[1][k]], 0) for k in pair[0]})
        assert all(v.dtype == tf.float32 for v in metrics.values())
        # The losses stay finite; a gradient norm is not on a step whose scaled gradients
        # overflowed, which the optimizer skips while it halves the scale.
        assert all(np.isfinite(float(metrics[k])) for k in report.LOSSES if k in metrics)
        applied += np.isfinite(float(metrics["grad_g"])) and np.isfinite(float(metrics["grad_d"]))
    assert applied >= 1
    # Every kernel (biases before batch norm have no gradient, their float16 round-off none
    # on the deepest 1x1 maps of micro-batches of 2).
    after = G.trainable_variables + D.trainable_variables
    assert all(not np.array_equal(v.numpy(), b) for v, b in zip(after, before)
               if v.path.endswith("kernel"))


def test_micro_batches_must_divide_each_replicas_share(tiny_config):
    two_replicas = SimpleNamespace(num_replicas_in_sync=2)
    devices.check_strategy(tiny_config(batch_size=8, accumulate=4), two_replicas)
    with pytest.raises(cfg.ConfigError) as info:
        devices.check_strategy(tiny_config(batch_size=4, accumulate=4), two_replicas)
    assert str(info.value) == ("--accumulate: expected a divisor of the 2 images that each of the"
                               " 2 replicas of --strategy auto computes, got 4")


def test_a_run_with_accumulation_and_several_holes_resumes_with_others(tmp_path, make_photos,
                                                                       capsys):
    make_photos(tmp_path / "photos", 4)
    # Phases 1 and 3 (phase 2's step is checked above), a checkpoint at each iteration.
    args = tiny_args("photos", session="acc", tc=1, td=0, total=2, every=1) + [
        "--batch-size", "4", "--eval-every", "1"]
    assert run_main(train, args + ["--accumulate", "2", "--max-holes", "2"], tmp_path) == 0
    out = capsys.readouterr().out
    assert "holes 6-12 (rect), 1 to 2 per image, batch 4 in 2 micro-batches of 2," in out
    assert "Finished 2 iterations" in out
    # Neither setting is part of the networks: the session resumes with others.
    args[args.index("--total-iters") + 1] = "3"
    assert run_main(train, args + ["--accumulate", "1", "--max-holes", "3"], tmp_path) == 0
    out = capsys.readouterr().out
    assert "Changed on resume: --max-holes 2 -> 3" in out
    assert "Changed on resume: --accumulate 2 -> 1" in out
    assert "Resuming session 'acc' at iteration 2 (phase 3 joint)" in out
    assert "Finished 3 iterations" in out
    # One iteration, checkpoint and row of losses.csv per update, whatever the micro-batches.
    for n in (1, 2, 3):
        path = in_session(tmp_path, "acc", session.PHASE_ENDS, f"ckpt-{n}")
        assert tf.train.load_variable(path, "iteration/.ATTRIBUTES/VARIABLE_VALUE") == n
    rows = open(os.path.join(tmp_path, session.results_dir("acc"), "losses.csv")).read()
    assert [int(r.split(",")[0]) for r in rows.splitlines()[1:]] == [1, 2, 3]
    # The held-out curve goes on where it stopped: one evaluation per iteration (--eval-every 1
    # of the tiny flags), in the csv and in TensorBoard.
    rows = open(os.path.join(tmp_path, session.results_dir("acc"), "eval.csv")).read()
    assert [r.split(",")[0] for r in rows.splitlines()[1:] if ",model," in r] == ["1", "2", "3"]
    from test_report import read_events
    events = read_events(os.path.join(tmp_path, session.logs_dir("acc"), "eval_telea"))
    assert [e.step for e in events.Tensors("eval/l1_hole")] == [1, 2, 3]


@pytest.mark.slow
def test_each_replica_accumulates_its_share(tmp_path, make_photos):
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="two", tc=1, td=1, total=3) + [
        "--batch-size", "4", "--strategy", "mirrored", "--cpu-devices", "2"]
    result = run_script("train.py", args + ["--accumulate", "4"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --accumulate: expected a divisor of the 2 images that each of the 2 replicas of"
        " --strategy mirrored computes, got 4")
    assert not os.path.exists(tmp_path / session.SESSIONS)
    result = run_script("train.py", args + ["--accumulate", "2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 4 in 2 micro-batches of 2" in result.stdout
    assert "strategy mirrored, 2 replica(s), 2 images each" in result.stdout
    assert "Finished 3 iterations" in result.stdout


# ---------------------------------------------------------------------------------------------
# A whole tiny run (the shared tiny_training fixture: phases of 2, 2 and 1 iterations)


def in_session(root, name, *parts):
    return os.path.join(str(root), session.folder(name), *parts)


def test_a_run_keeps_a_checkpoint_at_every_phase_end(tiny_training):
    root, out = tiny_training
    ends = sorted(n for n in os.listdir(in_session(root, "tiny", session.PHASE_ENDS)) if n.endswith(".index"))
    assert ends == ["ckpt-2.index", "ckpt-4.index", "ckpt-5.index"]
    saved = utils.read_json(os.path.join(str(root), session.session_file("tiny")))
    config = cfg.Config.from_dict(saved["config"])
    assert (config.image_size, config.total_iters, config.preset, config.width_divisor) == \
        (32, 5, "quick", 8)
    assert len(saved["mean_pixel"]) == 3
    line = next(line for line in out.splitlines() if line.startswith("Photos: "))
    assert line.startswith("Photos: 4 for training, 1 for validation (--val-split 0.05 of"
                           " --data-dir); mean pixel [")
    # Printed to 4 decimals; session.json keeps the float32 values whole.
    printed = line.split("; mean pixel [")[1].rstrip("]").split(", ")
    assert [float(v) for v in printed] == [round(v, 4) for v in saved["mean_pixel"]]
    assert all(len(v) <= 6 for v in printed) and all(len(repr(v)) > 6 for v in saved["mean_pixel"])
    assert "Finished 5 iterations of session 'tiny'" in out


def test_a_finished_session_says_so_and_can_be_extended(copy_training, capsys):
    assert run_main(train, tiny_args("photos"), copy_training) == 0
    assert "already finished 5 iterations" in capsys.readouterr().out
    assert run_main(train, tiny_args("photos", total=6), copy_training) == 0
    out = capsys.readouterr().out
    assert "Changed on resume: --total-iters 5 -> 6" in out
    assert "Resuming session 'tiny' at iteration 5 (phase 3 joint)" in out
    assert "Finished 6 iterations" in out
    assert os.path.exists(in_session(copy_training, "tiny", session.PHASE_ENDS, "ckpt-6.index"))
    rows = open(os.path.join(copy_training, session.results_dir("tiny"), "losses.csv")).read()
    assert [r.split(",")[0] for r in rows.splitlines()[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_learning_rate_changes_on_resume_and_drops_where_lr_drops_say(copy_training, capsys):
    """The optimizers' checkpoints hold their learning rate: --learning-rate on resume wins over
    it, and --lr-drops 6 multiplies it by --lr-drop-factor from the 7th step on."""
    args = tiny_args("photos", total=7) + ["--learning-rate", "0.5", "--lr-drops", "6",
                                           "--lr-drop-factor", "0.5"]
    assert run_main(train, args, copy_training) == 0
    out = capsys.readouterr().out
    assert "Changed on resume: --learning-rate 1.0 -> 0.5" in out
    assert "Changed on resume: --lr-drops [] -> [6]" in out
    assert "adadelta lr 0.5 (x 0.5 after iteration 6)" in out
    assert "Iteration 6: learning rate 0.25 (--lr-drops)" in out
    for folder, iteration, expected in ((session.ROLLING, 6, 0.5), (session.PHASE_ENDS, 7, 0.25)):
        assert saved_learning_rates(copy_training, folder, iteration) == [np.float32(expected)] * 2


def test_d_learning_rate_keeps_the_discriminator_at_its_own_constant_rate(copy_training,
                                                                         capsys):
    args = tiny_args("photos", total=7) + ["--learning-rate", "0.5", "--lr-drops", "6",
                                           "--d-learning-rate", "0.3"]
    assert run_main(train, args, copy_training) == 0
    out = capsys.readouterr().out
    assert "Changed on resume: --d-learning-rate 0.0 -> 0.3" in out
    assert "adadelta lr 0.5 (x 0.25 after iteration 6), discriminator lr 0.3" in out
    assert "Iteration 6: learning rate 0.125 (--lr-drops)" in out
    for folder, iteration, expected in ((session.ROLLING, 6, 0.5), (session.PHASE_ENDS, 7, 0.125)):
        assert saved_learning_rates(copy_training, folder, iteration) == [
            np.float32(expected), np.float32(0.3)], iteration


def eval_rows(*scores, phase=1):
    """eval.csv rows of the model's hole L1 at (iteration, value), with Telea's beside them."""
    return [row for iteration, value in scores for row in (
        {"iteration": str(iteration), "phase": str(phase), "method": "model",
         "l1_hole": str(value)},
        {"iteration": str(iteration), "phase": str(phase), "method": "OpenCV Telea",
         "l1_hole": "0.01"})]


@pytest.mark.parametrize("scores, drops, patience, expected", [
    ([(2, 0.30), (4, 0.20), (6, 0.25)], [], 1, (0.25, 0.20, 1)),
    ([(2, 0.30), (4, 0.20), (6, 0.20)], [], 1, (0.20, 0.20, 1)),  # equal is not below
    ([(2, 0.30), (4, 0.20), (6, 0.25)], [], 2, None),
    ([(2, 0.30), (4, 0.20), (6, 0.25), (8, 0.21)], [], 2, (0.21, 0.20, 2)),
    ([(2, 0.30), (4, 0.20), (6, 0.25), (8, 0.19)], [], 1, None),  # a new best
    ([(2, 0.30), (4, 0.20), (6, 0.25), (8, 0.21)], [6], 1, (0.21, 0.20, 1)),
    ([(2, 0.30), (4, 0.20), (6, 0.25), (8, 0.21)], [6], 2, None),  # counted since the drop
    ([(2, 0.30), (4, 0.20), (6, 0.25)], [6], 1, None),  # dropped here already
    ([(2, 0.30)], [], 1, None),  # the first evaluation is the best
])
def test_lr_plateau_counts_evaluations_not_below_the_best_since_the_last_drop(
        scores, drops, patience, expected):
    config = cfg.resolve(cfg.preset_config("quick"), dict(lr_plateau=patience, lr_drops=drops,
                                                          tc=100, total_iters=200))
    reporter = SimpleNamespace(eval_history=eval_rows(*scores) + eval_rows((1, 0.1), phase=3))
    assert train.plateau(config, reporter, scores[-1][0]) == expected
    assert train.plateau(config, reporter, scores[-1][0] + 1) is None  # no evaluation there
    assert train.plateau_due(config, 40) and not train.plateau_due(config, 50)
    assert not train.plateau_due(config, 100)  # phase 1 has ended


def test_lr_plateau_drops_the_rate_and_a_resumed_run_keeps_the_drop(copy_training, capsys,
                                                                     monkeypatch):
    """A plateau at the evaluation of iteration 2 (held-out hole L1 not below its best): the
    rate drops from the 3rd step on, session.json's --lr-drops records it, the checkpoints
    hold the lower rate, TensorBoard and losses.csv show it; a resumed run keeps it."""
    seen = []

    def stalled_at_2(config, reporter, n):
        seen.append((n, int(reporter.eval_history[-1]["iteration"])))
        return (0.25, 0.2, 1) if n == 2 else None
    monkeypatch.setattr(train, "plateau", stalled_at_2)

    def args(total):
        return tiny_args("photos", session="flat", tc=4, td=1, total=total) + [
            "--learning-rate", "0.5", "--lr-drop-factor", "0.5", "--lr-plateau", "1",
            "--eval-every", "2"]
    assert run_main(train, args(5), copy_training) == 0
    out = capsys.readouterr().out
    assert seen == [(2, 2)]  # asked inside phase 1 only, after each evaluation
    assert ("Iteration 2: hole L1 0.2500 on the validation photos, 1 evaluation(s) in a row not"
            " below the best 0.2000; learning rate 0.25 from the next step (--lr-plateau 1;"
            " session.json's --lr-drops now 2)") in out
    saved = utils.read_json(os.path.join(copy_training, session.session_file("flat")))
    assert saved["config"]["lr_drops"] == [2] and saved["config"]["lr_plateau"] == 1
    assert saved_learning_rates(copy_training, session.PHASE_ENDS, 4, "flat") == [
        np.float32(0.25)] * 2
    rows = report.read_csv(os.path.join(copy_training, session.results_dir("flat"), "losses.csv"))
    assert [float(r["learning_rate"]) for r in rows] == [0.5, 0.5, 0.25, 0.25, 0.25]
    events = read_events(os.path.join(copy_training, session.logs_dir("flat")))
    assert [float(tf.make_ndarray(e.tensor_proto)) for e in
            events.Tensors("learning_rate/completion_network")] == [0.5, 0.5, 0.25, 0.25, 0.25]
    monkeypatch.setattr(train, "plateau", lambda config, reporter, n: None)
    assert run_main(train, args(6), copy_training) == 0
    out = capsys.readouterr().out
    assert "adadelta lr 0.5 (x 0.5 after iteration 2)" in out
    assert "Resuming session 'flat' at iteration 5 (phase 3 joint)" in out
    assert saved_learning_rates(copy_training, session.PHASE_ENDS, 6, "flat") == [
        np.float32(0.25)] * 2


def saved_learning_rates(root, folder, iteration, name="tiny"):
    """[completion network's, discriminator's] learning rate in the tiny session's checkpoint."""
    reader = tf.train.load_checkpoint(in_session(root, name, folder, f"ckpt-{iteration}"))
    return [reader.get_tensor(f"{optimizer}/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
            for optimizer in ("completion_optimizer", "discriminator_optimizer")]


def test_a_conflicting_resume_names_the_setting_and_changes_nothing(copy_training, capsys):
    args = tiny_args("photos")
    args[args.index("--image-size") + 1] = "48"
    assert run_main(train, args, copy_training) == 2
    assert capsys.readouterr().err == (
        "error: --image-size 48 conflicts with session 'tiny', which was trained with"
        " --image-size 32; drop the flag, or use --fresh or another --session\n")
    saved = utils.read_json(os.path.join(str(copy_training), session.session_file("tiny")))
    assert saved["config"]["image_size"] == 32


def test_the_moving_average_copies_the_network_then_follows_it(tiny_config):
    """--ema-decay D: the first update copies every weight of the network (batch-norm
    statistics included), each later one moves the average by 1 - D towards it; phase 2's
    discriminator-only iterations are not counted by the loop (tested with a session below)."""
    G = model.build_completion_network(width_divisor=8)
    average = train.MovingAverage(G, tiny_config(ema_decay=0.75))
    assert len(average.network.weights) == len(G.weights) == 99
    # Samples and evaluations show the network until the average's first update (a phase 2
    # that comes first, as after --init-from, must not show an average never made).
    run = train.Training(G, None, {}, None, None, None, average)
    assert run.shown is G
    first = G.get_weights()
    average.update()
    assert run.shown is average.network
    for a, w in zip(average.network.get_weights(), first):
        np.testing.assert_array_equal(a, w)
    G.set_weights([w + 1.0 for w in first])
    average.update()
    for a, w in zip(average.network.get_weights(), first):
        np.testing.assert_allclose(a, w + 0.25, rtol=0, atol=1e-6)
    assert (int(average.updates), float(average.decay)) == (2, 0.75)


@pytest.mark.slow
def test_a_session_with_a_moving_average_uses_it_and_may_drop_it(tmp_path, make_photos, capsys):
    """--ema-decay 0.5: updated after phase 1's and phase 3's iterations, kept in checkpoints,
    what loading the session and its exports give (the network itself with --raw); dropped on
    a resume with 0 (without warnings about the checkpoint's unused values), and started again
    from the network when turned on again."""
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="ema", tc=1, td=1, total=3, every=1)
    # Without --bn-batches, which would estimate the average's statistics afresh.
    assert run_main(train, args + ["--ema-decay", "0.5", "--bn-batches", "0"], tmp_path) == 0
    assert ", widths / 8, moving average of the completion network (decay 0.5)\n" in (
        capsys.readouterr().out)

    def networks(iteration):
        with working_directory(tmp_path):
            path = session.checkpoint_path("ema", iteration)
            return (session.moving_average(path),
                    session.load_completion_network("ema", iteration)[0].get_weights(),
                    session.load_completion_network("ema", iteration, raw=True)[0].get_weights())
    first, after_first, raw_first = networks(1)
    assert first == {"decay": 0.5, "updates": 1}
    for a, w in zip(after_first, raw_first):  # the first update copied the network
        np.testing.assert_array_equal(a, w)
    third, average, raw = networks(3)
    assert third == {"decay": 0.5, "updates": 2}  # iterations 1 and 3; not 2 (phase 2)
    assert not all(np.array_equal(a, w) for a, w in zip(average, raw))
    for a, w1, w3 in zip(average, raw_first, raw):
        np.testing.assert_allclose(a, 0.5 * w1 + 0.5 * w3, rtol=1e-6, atol=1e-7)

    assert run_main(complete, ["--session", "ema", "--export", "avg"], tmp_path) == 0
    assert run_main(complete, ["--session", "ema", "--export", "raw", "--raw"], tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "Exported the completion network of session 'ema' (the moving average of its weights)"
        " to avg/",
        "Exported the completion network of session 'ema' (its own weights) to raw/"]
    with working_directory(tmp_path):
        for folder, expected in (("avg", average), ("raw", raw)):
            for a, w in zip(exports.read(folder)[0].get_weights(), expected):
                np.testing.assert_array_equal(a, w)
        assert utils.read_json("avg/glcic.json")["training"]["moving_average"] == {
            "decay": 0.5, "updates": 2}
        assert "moving_average" not in utils.read_json("raw/glcic.json")["training"]

    dropped = tiny_args("photos", session="ema", tc=1, td=1, total=4, every=1)
    assert run_main(train, dropped + ["--ema-decay", "0"], tmp_path) == 0
    out, err = capsys.readouterr()
    assert "Changed on resume: --ema-decay 0.5 -> 0.0" in out
    assert "could not be found" not in err
    fourth, loaded, raw = networks(4)
    assert fourth is None
    for a, w in zip(loaded, raw):
        np.testing.assert_array_equal(a, w)
    again = tiny_args("photos", session="ema", tc=1, td=1, total=5, every=1)
    assert run_main(train, again + ["--ema-decay", "0.9", "--bn-batches", "2"], tmp_path) == 0
    fifth, average, raw = networks(5)
    assert fifth == {"decay": pytest.approx(0.9), "updates": 1}  # started again: a copy
    for a, w in zip(average, raw):
        np.testing.assert_array_equal(a, w)


@pytest.mark.slow
def test_a_hinge_session_says_so_resumes_and_keeps_its_loss(tmp_path, make_photos, capsys):
    """--gan-loss hinge: named in the start-up line, kept on resume without the flag (its
    discriminator's weights are the checkpoint's), and refused a change to bce."""
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="hinge", tc=1, td=1, total=3) + ["--gan-loss", "hinge"]
    assert run_main(train, args, tmp_path) == 0
    assert (", alpha 0.0004, widths / 8, hinge loss, spectrally normalized discriminator\n"
            in capsys.readouterr().out)
    resumed = tiny_args("photos", session="hinge", tc=1, td=1, total=4)
    assert run_main(train, resumed, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Resuming session 'hinge' at iteration 3 (phase 3 joint)" in out
    assert "hinge loss, spectrally normalized discriminator" in out
    rows = report.read_csv(os.path.join(tmp_path, session.results_dir("hinge"), "losses.csv"))
    assert [r["iteration"] for r in rows][-1] == "4"
    assert run_main(train, resumed + ["--gan-loss", "bce", "--total-iters", "5"], tmp_path) == 2
    assert capsys.readouterr().err == (
        "error: --gan-loss bce conflicts with session 'hinge', which was trained with"
        " --gan-loss hinge; drop the flag, or use --fresh or another --session\n")


@pytest.mark.slow
def test_a_session_departing_from_the_paper_says_so_resumes_and_exports(tmp_path, make_photos,
                                                                         capsys):
    """--upsampling resize with the three loss options: the start-up line names them, phases 1
    and 3 log the penalty, the loss options may change on resume and the upsampling may not,
    and the session's export completes and refuses to seed a transposed session."""
    make_photos(tmp_path / "photos", 4)
    departures = ["--upsampling", "resize", "--d-loss-scale", "0.5", "--label-smoothing", "0.1",
                  "--checkerboard-penalty", "1", "--stripes-penalty", "0.5", "--d-batches",
                  "joint", "--d-lowpass", "--coarse-loss", "2", "--ssim-loss", "1",
                  "--colour-loss", "0.5", "--recon-colour", "whitened"]
    args = tiny_args("photos", session="gan", tc=1, td=1, total=3) + departures
    assert run_main(train, args, tmp_path) == 0
    out = capsys.readouterr().out
    assert (", alpha 0.0004, widths / 8, joint discriminator batches, discriminator phase-3 loss"
            " x 0.5, label smoothing 0.1, checkerboard penalty 1, stripes penalty 0.5, coarse loss"
            " 2, structural loss 1, colour loss 0.5, reconstruction on whitened colours, low-passed"
            " discriminator input, resize"
            " upsampling\n") in out
    rows = report.read_csv(os.path.join(tmp_path, session.results_dir("gan"), "losses.csv"))
    assert [(r["phase"], r["checkerboard"] != "", r["stripes"] != "", r["coarse"] != "",
             r["ssim"] != "", r["colour"] != "") for r in rows] == [
        ("1", True, True, True, True, True), ("2", False, False, False, False, False),
        ("3", True, True, True, True, True)]

    resumed = tiny_args("photos", session="gan", tc=1, td=1, total=4) + departures
    resumed[resumed.index("--label-smoothing") + 1] = "0"
    resumed[resumed.index("--stripes-penalty") + 1] = "0"
    resumed[resumed.index("--recon-colour") + 1] = "rgb"
    resumed[resumed.index("--d-lowpass")] = "--no-d-lowpass"
    assert run_main(train, resumed, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Changed on resume: --label-smoothing 0.1 -> 0.0" in out
    assert "Changed on resume: --stripes-penalty 0.5 -> 0.0" in out
    assert "Changed on resume: --recon-colour whitened -> rgb" in out
    assert "Changed on resume: --d-lowpass True -> False" in out
    rows = report.read_csv(os.path.join(tmp_path, session.results_dir("gan"), "losses.csv"))
    assert (rows[-1]["iteration"], rows[-1]["checkerboard"] != "", rows[-1]["stripes"]) == (
        "4", True, "")
    assert "Resuming session 'gan' at iteration 3 (phase 3 joint)" in out
    resumed[resumed.index("--upsampling") + 1] = "transposed"
    assert run_main(train, resumed, tmp_path) == 2
    assert capsys.readouterr().err == (
        "error: --upsampling transposed conflicts with session 'gan', which was trained with"
        " --upsampling resize; drop the flag, or use --fresh or another --session\n")

    assert run_main(complete, ["--session", "gan", "--export", "exported"], tmp_path) == 0
    assert run_main(complete, ["--session", "gan", "--export", "compact", "--float16"],
                    tmp_path) == 0
    with working_directory(tmp_path):
        network, compact = exports.read("exported")[0], exports.read("compact")[0]
    assert network.get_layer("up13") and compact.get_layer("up15")
    x = tf.constant(np.random.default_rng(0).uniform(size=(1, 32, 32, 4)), tf.float32)
    assert np.max(np.abs(compact(x).numpy() - network(x).numpy())) < 0.01
    seeded = tiny_args("photos", session="tuned", tc=0, td=1, total=1) + ["--init-from", "exported"]
    assert run_main(train, seeded, tmp_path) == 2
    assert capsys.readouterr().err == ("error: --init-from exported: a network of --upsampling"
                                       " resize, not this session's transposed\n")
    assert run_main(train, seeded + ["--upsampling", "resize"], tmp_path) == 0


def test_fresh_moves_the_old_session_aside(copy_training, capsys):
    before = set(os.listdir(os.path.dirname(in_session(copy_training, "tiny"))))
    assert run_main(train, tiny_args("photos", tc=1, td=0, total=1) + ["--fresh"],
                    copy_training) == 0
    out = capsys.readouterr().out
    moved = set(os.listdir(os.path.dirname(in_session(copy_training, "tiny")))) - before
    assert len(moved) == 1 and re.fullmatch(r"tiny\.old-\d{8}-\d{6}", moved.pop())
    assert f"Moved the old {session.folder('tiny')} aside" in out
    assert "Resuming" not in out
    assert os.path.exists(in_session(copy_training, "tiny", session.PHASE_ENDS, "ckpt-1.index"))


def test_ctrl_c_saves_and_the_same_command_resumes(tmp_path, make_photos, monkeypatch, capsys):
    """A real SIGINT, delivered to this process during iteration 3 (of 7)."""
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="stop", tc=4, td=2, total=7, every=100)
    record = train.report.Reporter.record

    def interrupt_at_3(self, phase, iteration, *rest):
        record(self, phase, iteration, *rest)
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(train.report.Reporter, "record", interrupt_at_3)
    handler = signal.getsignal(signal.SIGINT)
    assert run_main(train, args, tmp_path) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back
    out = capsys.readouterr().out
    assert ("Ctrl-C at iteration 3: saving a checkpoint, its batch-norm statistics over 4 batches"
            " first (--bn-batches); press Ctrl-C again to quit at once without it\n") in out
    assert out.index("Ctrl-C at iteration 3: saving") < out.index("Ctrl-C: saved iteration")
    assert (f"Ctrl-C: saved iteration 3 of 7 to {session.folder('stop')}/{session.ROLLING}/ckpt-3; run"
            " the same command to resume") in out
    monkeypatch.undo()
    assert run_main(train, args, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Resuming session 'stop' at iteration 3 (phase 1 completion)" in out
    assert "Finished 7 iterations" in out
    rows = open(os.path.join(tmp_path, session.results_dir("stop"), "losses.csv")).read()
    assert [int(r.split(",")[0]) for r in rows.splitlines()[1:]] == list(range(1, 8))


def test_a_second_ctrl_c_quits_without_saving(tmp_path, make_photos, monkeypatch, capsys):
    """A real SIGINT during iteration 3, a second during the stop's batch-norm estimate."""
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="quit", tc=4, td=2, total=7, every=100)
    record, make_estimator, first_sent = train.report.Reporter.record, train.batch_norm_estimator, []

    def interrupt_at_3(self, phase, iteration, *rest):
        record(self, phase, iteration, *rest)
        if iteration == 3:
            first_sent.append(iteration)
            os.kill(os.getpid(), signal.SIGINT)

    def interrupted_estimator(*args, **kwargs):
        estimate = make_estimator(*args, **kwargs)

        def estimate_once_stopped():
            if first_sent:
                os.kill(os.getpid(), signal.SIGINT)
            estimate()
        return estimate_once_stopped
    monkeypatch.setattr(train.report.Reporter, "record", interrupt_at_3)
    monkeypatch.setattr(train, "batch_norm_estimator", interrupted_estimator)
    handler = signal.getsignal(signal.SIGINT)
    assert run_main(train, args, tmp_path) == 130
    assert signal.getsignal(signal.SIGINT) is handler
    out, err = capsys.readouterr()
    assert "Ctrl-C at iteration 3: saving a checkpoint, its batch-norm statistics" in out
    assert "saved iteration" not in out
    assert err.endswith("Interrupted before the next checkpoint could be written\n")
    assert not os.path.exists(in_session(tmp_path, "quit", session.ROLLING, "ckpt-3.index"))
    events = read_events(tmp_path / session.logs_dir("quit"))
    assert [e.step for e in events.Tensors("loss/reconstruction")] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written


def test_bad_data_folders_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a photo")
    (tmp_path / "broken" / "b.png").write_bytes(b"")
    Image.new("1", (20000, 20000)).save(tmp_path / "broken" / "c.png")
    cases = [("missing", "error: --data-dir missing: not a folder\n"),
             ("empty", "error: --data-dir empty: no image files (jpg, jpeg, png, bmp, gif, webp,"
                       " tif, tiff) found\n"),
             ("broken", "error: --data-dir broken: no decodable image among 3 files tried\n")]
    for folder, message in cases:
        assert run_main(train, ["--data-dir", folder, "--preset", "quick", "--session", folder],
                        tmp_path) == 2
        assert capsys.readouterr().err.endswith(message)
    assert not os.path.exists(tmp_path / session.folder("broken"))


def test_the_command_line_exits_2_without_traceback(tmp_path, capsys):
    result = run_script("train.py", ["--data-dir", "nowhere"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stdout.splitlines()[0].startswith("No GPU visible: using the cpu preset")
    assert result.stderr.strip().splitlines()[-1] == "error: --data-dir nowhere: not a folder"
    assert "Traceback" not in result.stderr
    # argparse's refusal exits with status 2 itself (in this process: one TensorFlow start less)
    with pytest.raises(SystemExit) as exit:
        run_main(train, ["--preset", "fast"], tmp_path)
    assert exit.value.code == 2 and "--preset: invalid choice: 'fast'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Photos from anywhere


def bad_photo_folder(folder):
    """Good photos in odd formats plus files that cannot be decoded; returns the bad ones."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / "sub")
    photo = smooth_photo(rng, 40, 56)
    Image.fromarray(photo).save(folder / "good.jpg")
    Image.fromarray(photo).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(photo).convert("P").save(folder / "palette.png")
    Image.fromarray(photo).convert("L").save(folder / "gray.png")
    Image.fromarray(photo).convert("RGBA").save(folder / "sub" / "rgba.png")
    Image.fromarray((photo[..., 0].astype(np.uint16) * 257)).save(folder / "sixteen.png")
    Image.fromarray(smooth_photo(rng, 9, 12)).save(folder / "tiny.png")  # upscaled
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_photo(rng, 30, 60)).save(folder / "rotated.jpg", exif=exif)
    bad = {"empty.jpg": b"", "text.jpg": b"this is not a photo\n",
           "truncated.jpg": (folder / "good.jpg").read_bytes()[:300]}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    return sorted(str(folder / name) for name in [*bad, "huge.png"])


def test_a_folder_of_bad_photos_trains_and_names_every_bad_file(tmp_path, capsys):
    bad = bad_photo_folder(tmp_path / "photos")
    assert run_main(train, tiny_args("photos", session="bad", tc=2, td=1, total=3),
                    tmp_path) == 0
    out, err = capsys.readouterr()
    relative = sorted(os.path.join("photos", os.path.basename(p)) for p in bad)
    for path in relative:
        assert sum(f"warning: skipping {path}:" in line for line in err.splitlines()) == 1, path
    assert "warning: skipping photos/huge.png: cannot decode it (ValueError: 20000x20000 pixels" \
        in err
    assert out.strip().splitlines()[-1] == (
        f"Skipped 4 undecodable file(s): {', '.join(relative)}")


def test_photos_deleted_while_training_are_skipped(tmp_path, make_photos, tiny_config, capsys):
    files = make_photos(tmp_path / "photos", 3)
    batches = iter(data_loader.training_dataset(files, tiny_config(batch_size=4)))
    next(batches)
    os.remove(files[1])
    for _ in range(5):
        assert next(batches)["image"].shape == (4, 32, 32, 3)
    assert capsys.readouterr().err.count(f"warning: skipping {files[1]}: cannot decode it") == 1


# ---------------------------------------------------------------------------------------------
# Non-finite losses, full disks


def nan_at(call_number):
    """Wrap make_steps so that the given call of a step reports a NaN reconstruction loss."""
    real_make_steps = phases.make_steps
    calls = []

    def make_steps(*args):
        steps = real_make_steps(*args)

        def wrap(step):
            def run(batch):
                metrics = step(batch)
                calls.append(1)
                return dict(metrics, reconstruction=float("nan")) if len(calls) == call_number \
                    else metrics
            return run
        return {phase: wrap(step) for phase, step in steps.items()}
    return make_steps


@pytest.mark.parametrize("on_nan", ["stop", "rollback"])
def test_a_nan_loss_stops_or_rolls_back(tmp_path, monkeypatch, capsys, make_photos, on_nan):
    make_photos(tmp_path / "photos", 3)
    monkeypatch.setattr(train, "make_steps", nan_at(5))
    args = tiny_args("photos", session="nan", tc=6, td=0, total=6, every=3) + ["--on-nan", on_nan]
    code = run_main(train, args, tmp_path)
    out, err = capsys.readouterr()
    folder = in_session(tmp_path, "nan")
    if on_nan == "stop":
        assert code == 3
        assert err.strip().splitlines()[-1] == (
            f"error: reconstruction loss is nan at iteration 5; stopped without saving, the"
            f" newest good checkpoint is {session.folder('nan')}/{session.ROLLING}/ckpt-3. Resume with"
            " --on-nan rollback, or a lower --learning-rate")
        assert sorted(os.listdir(os.path.join(folder, session.ROLLING))) == [
            "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    else:
        assert code == 0, err[-2000:]
        assert ("warning: reconstruction loss is nan at iteration 5; rolled back to iteration 3"
                " and skipped the 2 batch(es) since") in err
        assert "Finished 6 iterations" in out
        offset = tf.train.load_variable(os.path.join(folder, session.PHASE_ENDS, "ckpt-6"),
                                        "data_offset/.ATTRIBUTES/VARIABLE_VALUE")
        assert offset == 2
        rows = open(os.path.join(tmp_path, session.results_dir("nan"), "losses.csv")).read()
        assert [int(r.split(",")[0]) for r in rows.splitlines()[1:]] == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_while_writing_results_is_one_line(tmp_path, monkeypatch, capsys, make_photos):
    make_photos(tmp_path / "photos", 3)

    def disk_full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(train.report.utils, "save_png", disk_full)
    code = run_main(train, tiny_args("photos", session="full", tc=3, td=0, total=3), tmp_path)
    assert code == 1
    grid = os.path.join(session.results_dir("full"), "phase1_iter0000002.png")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot write {grid}: No space left on device; the checkpoints written so far"
        " are intact")


@pytest.mark.soak
def test_memory_does_not_grow_over_steps():
    from tests.memory import measure
    for phase, values in measure(steps=300, warmup=20, every=100).items():
        # Allocator pools fill during the first hundred steps; after that, no growth.
        assert values[-1] - values[1] < 64, (phase, values)  # MB



# ---------------------------------------------------------------------------------------------
# Fine-tuning from an export


def test_init_from_an_export_starts_a_session_from_its_network(tmp_path, make_session,
                                                                make_photos, capsys):
    make_session(tmp_path, "pretrained", mean_pixel=(0.4, 0.5, 0.6))
    make_photos(tmp_path / "photos", 4)
    assert run_main(complete, ["--session", "pretrained", "--export", "exported"], tmp_path) == 0
    args = tiny_args("photos", session="tuned", tc=0, td=2, total=2) + ["--init-from", "exported"]
    assert run_main(train, args, tmp_path) == 0
    assert "Starting from the completion network of exported" in capsys.readouterr().out
    # Phase 2 leaves the completion network alone: the session holds the export's network,
    # mean pixel included.
    with working_directory(tmp_path):
        tuned, mean_pixel, _ = session.load_completion_network("tuned")
        exported = exports.read("exported")[0]
    np.testing.assert_allclose(mean_pixel, [0.4, 0.5, 0.6])
    for got, want in zip(tuned.get_weights(), exported.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # The same command with more iterations resumes the session; the export is not read again.
    args[args.index("--total-iters") + 1] = "3"
    assert run_main(train, args, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Resuming session 'tuned' at iteration 2 (phase 3 joint)" in out
    assert "Starting from" not in out and "Finished 3 iterations" in out


def test_init_from_what_does_not_fit_is_one_line(tmp_path, make_session, make_photos, capsys):
    make_session(tmp_path, "pretrained")
    make_photos(tmp_path / "photos", 4)
    assert run_main(complete, ["--session", "pretrained", "--export", "exported"], tmp_path) == 0
    base = tiny_args("photos", session="tuned", tc=0, td=1, total=1)
    assert run_main(train, base + ["--init-from", "missing"], tmp_path) == 2
    assert capsys.readouterr().err == ("error: --init-from missing: not an export of complete.py"
                                       " (glcic.json missing or unreadable)\n")
    assert not os.path.exists(tmp_path / session.folder("tuned"))
    wider = base + ["--init-from", "exported", "--width-divisor", "4"]
    assert run_main(train, wider, tmp_path) == 2
    assert capsys.readouterr().err == ("error: --init-from exported: a network of"
                                       " --width-divisor 8, not this session's 4\n")
    assert not os.path.exists(tmp_path / session.folder("tuned"))


def test_checkpoints_hold_the_batch_norm_statistics_of_bn_batches(copy_training):
    """The quick preset's --bn-batches 4: the saved statistics are the mean over the 4 fixed
    batches under the saved weights (estimating them again changes nothing), not the running
    averages training left."""
    with working_directory(copy_training):
        G, mean_pixel, config = session.load_completion_network("tiny")
        assert config.bn_batches == 4
        saved = [w.numpy() for w in G.non_trainable_weights]
        files = data_loader.split_validation(data_loader.find_images(config.data_dir),
                                             config.seed, config.val_split)[0]  # training
        again = train.batch_norm_estimator(config, files, mean_pixel, G)
        again()
        for before, after in zip(saved, G.non_trainable_weights):
            np.testing.assert_allclose(after.numpy(), before, rtol=1e-4, atol=1e-6)
        # With other batches the statistics differ: the check above can fail.
        other = train.batch_norm_estimator(cfg.resolve(config, {"bn_batches": 1}), files,
                                           mean_pixel, G)
        other()
        assert max(float(np.max(np.abs(a.numpy() - b)))
                   for a, b in zip(G.non_trainable_weights, saved)) > 1e-3
    assert train.batch_norm_estimator(cfg.resolve(config, {"bn_batches": 0}), files,
                                      mean_pixel, G) is None
