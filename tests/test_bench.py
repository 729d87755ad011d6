"""Performance features: the FLOP count, bench.py, mixed precision, XLA and the runtime settings."""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import bench
import config as cfg
import data_loader
import model
import train
from conftest import REPO, run_script

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
    # The first layer alone, and the scaling with image area.
    assert 2 * 256 * 256 * 25 * 4 * 64 == 838_860_800
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


def test_phase_flops_count_backward_as_two_forwards():
    config = cfg.resolve(cfg.preset_config("cpu"), {})
    g = model.completion_flops(128)
    d = model.discriminator_flops(128, 64)
    assert bench.phase_flops(config) == {"phase1": 3 * g, "phase2": g + 6 * d,
                                         "phase3": 3 * g + 9 * d, "inference": g}


# ---------------------------------------------------------------------------------------------
# bench.py as a user runs it


FIGURE_LINES = ["phase 1 (completion update)", "phase 2 (discriminator update)",
                "phase 3 (joint update)", "inference (completion forward)",
                "input pipeline alone", "float32 matmul peak", "peak resident memory"]


def test_bench_prints_every_figure(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", ["--image-size", "32", "--local-size", "16", "--batch-size", "2",
                                     "--steps", "2", "--warmup", "1", "--data-dir", "photos",
                                     "--json", "bench.json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("glcic bench: 32 px, local 16, batch 2, CPU, float32, XLA off")
    for label in FIGURE_LINES:
        [line] = [line for line in lines if line.startswith(label)]
        first_number = float(re.findall(r"\d+\.?\d*", line[len(label):])[0])
        assert first_number > 0, line
    for label in FIGURE_LINES[:4]:
        [line] = [line for line in lines if line.startswith(label)]
        assert re.search(r"images/s +[\d.]+ GFLOP/s +\d+ % of matmul peak$", line), line

    saved = json.loads((tmp_path / "bench.json").read_text())
    figures = saved["figures"]
    for name in ("phase1", "phase2", "phase3", "inference"):
        assert figures[f"{name}_images_per_second"] > 0
        assert figures[f"{name}_gflops"] > 0
        assert figures[f"{name}_fraction_of_matmul_peak"] == pytest.approx(
            figures[f"{name}_gflops"] / figures["matmul_peak_gflops"])
    assert figures["pipeline_images_per_second"] > 0 and figures["peak_resident_mib"] > 0
    # The steps were traced once each: timing never included a retrace.
    assert saved["settings"]["traces"] == {"phase1": 1, "phase2": 1, "phase3": 1}


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "error: --steps: expected at least 1, got 0"),
    (["--data-dir", "missing"], "error: --data-dir"),
])
def test_bench_rejects_bad_flags_in_one_line(tmp_path, args, message):
    result = run_script("bench.py", args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# ---------------------------------------------------------------------------------------------
# Mixed precision


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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    for i in range(3):
        keras.utils.save_img(str(folder / f"{i}.png"), rng.integers(0, 255, (40, 40, 3)))
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=2, alpha=1.0))
    batch = next(iter(data_loader.training_dataset(data_loader.find_images([str(folder)]),
                                                   config)))
    return config, batch


def build_steps(config, policy=None, jit_compile=False):
    keras.utils.set_random_seed(0)
    G, D, _, _, step_opts = train.build_training(config, policy)
    return G, D, train.make_steps(G, D, *step_opts, config, np.full(3, 0.5, np.float32),
                                  jit_compile)


# Phase 3 updates both networks with both optimizers; the other phases are slow-only.
@pytest.mark.parametrize("phases", [(3,), pytest.param((1, 2), marks=pytest.mark.slow)])
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_keep_float32_losses_and_weights(tiny, policy, phases):
    config, batch = tiny
    G, D, steps = build_steps(config, policy)
    before = [v.numpy().copy() for v in G.trainable_variables + D.trainable_variables]
    for phase in phases:
        metrics = steps[phase](batch)
        for name, value in metrics.items():
            assert value.dtype == tf.float32 and np.isfinite(float(value)), (phase, name)
    assert {v.dtype for v in G.weights + D.weights} == {"float32"}
    after = G.trainable_variables + D.trainable_variables
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(after, before))


def test_float16_uses_loss_scaling_and_checkpoints_the_plain_optimizer(tiny):
    config, _ = tiny
    _, _, g_opt, d_opt, step_opts = train.build_training(config, "mixed_float16")
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in step_opts)
    assert [o.inner_optimizer for o in step_opts] == [g_opt, d_opt]
    assert not isinstance(g_opt, keras.optimizers.LossScaleOptimizer)


def test_device_settings_follow_the_flags_on_a_cpu():
    settings = lambda **kw: train.device_settings(cfg.Config(**kw))
    assert settings() == (False, None)  # auto: no XLA on a CPU, float32
    assert settings(xla="on", mixed_precision=True) == (True, "mixed_bfloat16")
    assert settings(xla="off") == (False, None)


def test_mixed_precision_and_xla_flags_parse_and_turn_off_again():
    parser = cfg.build_parser("test")
    assert vars(parser.parse_args(["--mixed-precision", "--xla", "on"])) == {
        "mixed_precision": True, "xla": "on", "fresh": False}
    assert vars(parser.parse_args(["--no-mixed-precision"]))["mixed_precision"] is False
    with pytest.raises(cfg.ConfigError, match="^--xla: expected one of auto, on, off, got 'yes'$"):
        cfg.Config(xla="yes").validate()


# ---------------------------------------------------------------------------------------------
# XLA


@pytest.mark.parametrize("phases", [(3,), pytest.param((1, 2), marks=pytest.mark.slow)])
def test_xla_and_plain_steps_give_the_same_losses(tiny, phases):
    config, batch = tiny
    plain = build_steps(config)[2]
    compiled = build_steps(config, jit_compile=True)[2]
    for phase in phases:
        expected, got = plain[phase](batch), compiled[phase](batch)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_allclose(float(got[name]), float(expected[name]), rtol=2e-3,
                                       atol=1e-5, err_msg=f"phase {phase} {name}")


# ---------------------------------------------------------------------------------------------
# Runtime settings


def test_runtime_turns_on_onednn_and_hides_only_its_notice():
    code = ("import sys; sys.stderr.write('before\\n'); import runtime, os;"
            " print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert "before" in result.stderr
    assert "oneDNN custom operations" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr
    # The user's own choice wins.
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "0"
