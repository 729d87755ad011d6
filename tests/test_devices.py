"""devices.py: what this machine or cluster can run with a configuration: XLA, precision, the
tf.distribute strategy and TF_CONFIG; and the TensorFlow settings made at import (runtime.py)."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import tensorflow as tf

import config as cfg
import devices
import session
from conftest import CPUINFO, REPO, TINY, run_script

cpu_only = pytest.mark.skipif(devices.has_gpu(), reason="what a machine without a GPU does")


# ---------------------------------------------------------------------------------------------
# XLA and precision


@cpu_only
def test_device_settings_follow_the_flags_on_a_cpu(monkeypatch):
    settings = lambda **kw: devices.device_settings(cfg.Config(**kw))  # noqa: E731
    assert settings() == (False, None)  # no XLA on a CPU; float32 by default
    assert settings(precision="auto") == (False, None)  # float32 without bfloat16
    assert settings(xla="on", precision="mixed") == (True, "mixed_bfloat16")
    assert settings(xla="off", precision="bfloat16") == (False, "mixed_bfloat16")
    assert settings(xla="auto", precision="float16") == (False, "mixed_float16")
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx512_bf16.txt"))
    assert settings(precision="auto") == (False, "mixed_bfloat16")
    assert settings() == settings(precision="float32") == (False, None)  # training's default


@pytest.mark.parametrize("cpuinfo, flags", [
    ("avx2.txt", []), ("avx512_bf16.txt", ["avx512_bf16"]), ("arm_bf16.txt", ["bf16"]),
    ("missing.txt", [])])
def test_bfloat16_flags_are_read_from_cpuinfo(cpuinfo, flags):
    assert devices.bfloat16_flags(os.path.join(CPUINFO, cpuinfo)) == flags


def test_auto_precision_follows_the_device_and_the_cpu_flags():
    avx2, bf16 = (os.path.join(CPUINFO, name) for name in ("avx2.txt", "avx512_bf16.txt"))
    resolve = devices.resolve_precision
    assert resolve("auto", gpu=True, path=avx2) == (
        "float16", "auto: a GPU computes float16 natively")
    assert resolve("auto", gpu=False, path=bf16) == (
        "bfloat16", "auto: this CPU computes bfloat16 natively (avx512_bf16)")
    assert resolve("auto", gpu=False, path=avx2) == (
        "float32", "auto: this CPU has no native bfloat16")
    assert resolve("mixed", gpu=True, path=avx2) == ("float16", "--mixed-precision on a GPU")
    assert resolve("mixed", gpu=False, path=avx2) == ("bfloat16", "--mixed-precision on a CPU")
    for asked in ("float32", "bfloat16", "float16"):
        for path in (avx2, bf16):
            assert resolve(asked, gpu=False, path=path) == (asked, f"--precision {asked}")


def test_the_cpuinfo_file_can_be_named_in_the_environment(monkeypatch):
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx512_bf16.txt"))
    assert devices.cpu_has_bfloat16() and devices.resolve_precision("auto", gpu=False)[0] == (
        "bfloat16")
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx2.txt"))
    assert not devices.cpu_has_bfloat16()


def test_bfloat16_is_worth_a_warning_only_on_cpus_without_it(monkeypatch):
    warning = ("warning: --precision bfloat16: this CPU has no bfloat16 instructions"
               " (avx512_bf16, amx_bf16, bf16), so bfloat16 is emulated and much slower than"
               " float32 here")
    for cpuinfo, has_bfloat16 in (("avx2.txt", False), ("avx512_bf16.txt", True)):
        monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, cpuinfo))
        assert devices.precision_warning("float32", gpu=False) is None
        assert devices.precision_warning("bfloat16", gpu=False) == (
            None if has_bfloat16 else warning)
        assert devices.precision_warning("bfloat16", gpu=True) is None
        assert devices.precision_warning("float16", gpu=True) is None
        assert devices.precision_warning("float16", gpu=False) == (
            "warning: --precision float16: a CPU computes float16 by emulation, much slower than"
            " float32")


# ---------------------------------------------------------------------------------------------
# Strategies


def test_split_cpu_needs_at_least_one_device():
    with pytest.raises(cfg.ConfigError) as info:
        devices.split_cpu(0)
    assert str(info.value) == "--cpu-devices: expected at least 1, got 0"
    devices.split_cpu(1)  # one device: nothing to configure (TensorFlow is already running)


@pytest.mark.parametrize("tf_config, workers", [
    (None, 0),
    ({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker",
                                                                      "index": 0}}, 2),
    ({"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"]},
      "task": {"type": "chief", "index": 0}}, 2),
])
def test_tf_config_workers_counts_the_chief_and_the_workers(monkeypatch, tf_config, workers):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert devices.tf_config_workers() == workers


@pytest.mark.parametrize("text", ['{"cluster": {"worker": [', "[1, 2]"])
def test_a_malformed_tf_config_is_a_config_error(monkeypatch, text):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(cfg.ConfigError) as info:
        devices.tf_config_workers()
    assert str(info.value).startswith('TF_CONFIG: expected JSON with a "cluster" and a "task" (')


def test_multiworker_without_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(cfg.ConfigError) as info:
        devices.make_strategy("multiworker")
    assert str(info.value) == (
        "--strategy multiworker: TF_CONFIG is not set; set it on every machine as in"
        " docs/distributed.md")


@cpu_only
def test_default_and_auto_on_one_cpu_are_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in ("default", "auto"):
        strategy = devices.make_strategy(name)
        assert strategy is tf.distribute.get_strategy()
        assert devices.strategy_name(strategy) == "default"
        assert devices.worker(strategy) == (None, True)  # one process: the chief
    assert devices.strategy_name(tf.distribute.MirroredStrategy(["/cpu:0"])) == "mirrored"


def test_any_worker_of_the_default_strategy_is_bool():
    assert devices.any_worker(tf.distribute.get_strategy()) is bool


@cpu_only
def test_describe_says_where_training_runs(tiny_config):
    assert devices.describe(tiny_config(), tf.distribute.get_strategy()) == (
        "Compute: CPU, float32, XLA off (--xla auto); strategy default, 1 replica(s), 2 images"
        " each")


def two_devices(kind="cpu"):
    """What check_strategy reads of a MirroredStrategy over two devices: logical devices cannot
    be added to TensorFlow once it runs, as it does in this process."""
    return SimpleNamespace(num_replicas_in_sync=2, extended=SimpleNamespace(
        worker_devices=(f"/{kind}:0", f"/{kind}:1")))


@cpu_only
def test_what_two_cpu_devices_cannot_run_is_refused(tiny_config):
    with pytest.raises(cfg.ConfigError) as info:
        devices.check_strategy(tiny_config(strategy="mirrored", batch_size=3), two_devices())
    assert str(info.value) == (
        "--batch-size: expected a multiple of the 2 replicas of --strategy mirrored, got 3")
    with pytest.raises(cfg.ConfigError) as info:
        devices.check_strategy(tiny_config(strategy="mirrored", xla="on"), two_devices())
    assert str(info.value) == (
        "--xla on: XLA cannot compile the all-reduces between the CPU devices of --strategy"
        " mirrored (2 replicas); use --xla off (XLA is slower on a CPU anyway)")
    # What they can run, and XLA between GPUs.
    devices.check_strategy(tiny_config(strategy="mirrored", batch_size=4), two_devices())
    devices.check_strategy(tiny_config(strategy="mirrored", xla="on"), two_devices("GPU"))
    devices.check_strategy(tiny_config(batch_size=3, xla="on"), tf.distribute.get_strategy())


def test_two_cpu_devices_refuse_an_odd_batch_before_writing(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("train.py", ["--data-dir", "photos", "--preset", "quick", *TINY,
                                     "--strategy", "mirrored", "--cpu-devices", "2",
                                     "--batch-size", "3"], cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --batch-size: expected a multiple of the 2 replicas of --strategy mirrored, got 3")
    # Nothing written: the same command with the flag corrected starts a new session.
    assert not (tmp_path / os.path.dirname(session.folder("default"))).exists()


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
