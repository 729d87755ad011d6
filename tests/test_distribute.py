"""tf.distribute: the same mathematics on one device, two logical devices and two workers."""
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import config as cfg
import data_loader
import train
from conftest import REPO, TINY, run_script


# ---------------------------------------------------------------------------------------------
# The input pipeline: each pipeline yields its replicas' slices of the single-device batches


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(5):
        tf.keras.utils.save_img(str(folder / f"{i}.png"), rng.integers(0, 255, (40, 44, 3)))
    return data_loader.find_images([str(folder)])


def first_batches(files, config, count, start=0, context=None):
    stream = iter(data_loader.training_dataset(files, config, start, context))
    return [next(stream) for _ in range(count)]


@pytest.mark.parametrize("start_step", [0, 3])
def test_two_workers_split_each_global_batch_without_duplicates(photo_files, start_step):
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=4))
    start = start_step * config.batch_size
    single = first_batches(photo_files, config, 2, start)
    workers = [first_batches(photo_files, config, 2, start, tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)) for i in range(2)]
    for step in range(2):
        for key in ("image", "mask", "hole", "local_fake", "local_real"):
            assert workers[0][step][key].shape[0] == 2
            joined = np.concatenate([workers[0][step][key], workers[1][step][key]])
            np.testing.assert_array_equal(joined, single[step][key])
    # Different workers never see the same element within a step.
    assert not np.array_equal(workers[0][0]["image"], workers[1][0]["image"])


def test_one_pipeline_feeding_two_replicas_yields_replica_sized_batches(photo_files):
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=4))
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    halves = first_batches(photo_files, config, 2, 0, context)
    [single] = first_batches(photo_files, config, 1)
    # Replica 0 takes the first half of the global batch, replica 1 the second.
    np.testing.assert_array_equal(np.concatenate([halves[0]["image"], halves[1]["image"]]),
                                  single["image"])


# ---------------------------------------------------------------------------------------------
# Two logical CPU devices compute what one device computes


def max_relative_difference(one_largest, two_largest, largest_difference):
    """Largest difference of two updates of a weight, relative to the largest update on one
    device, above float32 round-off of weights near 1 (batch-norm scales)."""
    if one_largest == 0:
        return float(two_largest > 0)
    return max(largest_difference - 2.4e-7, 0.0) / one_largest


# The joint phase in float64 by default: it runs everything phases 1 and 2 run (the completion
# network's training-mode forward and backward through synchronized batch norm, the
# discriminator's update) and is the one that needs float64 for a weight-by-weight comparison
# (see tests/two_devices.py). All phases in both precisions with GLCIC_SLOW=1.
@pytest.mark.parametrize("args", [
    ["--float64", "3"],
    pytest.param(["--float64", "1", "2", "3"], marks=pytest.mark.slow),
    pytest.param(["1", "2", "3"], marks=pytest.mark.slow),
])
def test_mirrored_on_two_devices_matches_one_device(args):
    result = subprocess.run([sys.executable, "-m", "tests.two_devices", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["dtype"] == ("float64" if "--float64" in args else "float32")
    phases = [f"phase{p}" for p in args if p != "--float64"]
    assert sorted(out["phases"]) == phases
    for phase in phases:
        compared = out["phases"][phase]
        one, two = compared["metrics"]["default"], compared["metrics"]["mirrored"]
        assert set(one) == set(two)
        # In float32 the joint phase's discriminator is updated from completions rounded
        # differently by the two strategies, so the adversarial loss, taken after that update,
        # and the joint phase's weights are compared in float64 only.
        exact = out["dtype"] == "float64" or phase != "phase3"
        for name, value in one.items():
            rel = 1e-5 if exact or name != "adversarial" else 5e-3
            assert two[name] == pytest.approx(value, rel=rel, abs=1e-7), (phase, name)
        if exact:
            # The same update of every weight (trainable or batch-norm statistic), to
            # round-off: the two replicas' gradients add up to the one-device gradient, and the
            # synchronized batch-norm statistics equal the one-device ones.
            differences = [max_relative_difference(*weight) for net in ("G", "D")
                           for weight in compared[net]]
            assert len(differences) == 98 + 72  # every weight of both networks
            assert max(differences) < 1e-2, (phase, max(differences))


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "3"],
     "error: --batch-size: expected a multiple of the 2 replicas of --strategy mirrored, got 3"),
    (["--xla", "on"],
     "error: --xla on: XLA cannot compile the all-reduces between the CPU devices of --strategy"
     " mirrored (2 replicas); use --xla off (XLA is slower on a CPU anyway)"),
])
def test_what_two_cpu_devices_cannot_run_is_refused_before_writing(tmp_path, make_photos,
                                                                  flags, message):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("train.py", ["--data-dir", "photos", "--preset", "quick", *TINY, *flags,
                                     "--strategy", "mirrored", "--cpu-devices", "2"],
                        cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    # Nothing written: the same command with the flag corrected starts a new session.
    assert not (tmp_path / "saved_sessions").exists()


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = run_script("train.py", ["--data-dir", "photos", "--preset", "quick", *TINY,
                                     "--strategy", "multiworker"], cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --strategy multiworker: TF_CONFIG is not set")


@pytest.mark.slow
def test_a_session_moves_from_one_device_to_two(tmp_path, make_photos):
    # (From two workers to one device: test_two_workers_train_write_once_and_resume_on_one_device.)
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    base = ["--data-dir", "photos", "--preset", "quick", *TINY, "--tc", "2", "--td", "1"]
    first = run_script("train.py", [*base, "--total-iters", "3", "--strategy", "default"],
                       cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "strategy default, 1 replica(s), 2 images each" in first.stdout
    second = run_script("train.py", [*base, "--total-iters", "4", "--strategy", "mirrored",
                                     "--cpu-devices", "2"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Changed on resume: --strategy default -> mirrored" in second.stdout
    assert "strategy mirrored, 2 replica(s), 1 images each" in second.stdout
    assert "Resuming session 'default' at iteration 3 (phase 3 joint)" in second.stdout
    assert "Finished 4 iterations" in second.stdout
    assert os.path.exists(tmp_path / "saved_sessions" / "default" / "phase_ends" / "ckpt-4.index")


# ---------------------------------------------------------------------------------------------
# Two worker processes on localhost (TF_CONFIG), as on two machines


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_write_once_and_resume_on_one_device(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=6, size=(40, 48))
    args = [sys.executable, os.path.join(REPO, "train.py"), "--data-dir", "photos",
            "--preset", "quick", *TINY, "--tc", "2", "--td", "1", "--total-iters", "4",
            "--checkpoint-every", "2", "--strategy", "multiworker", "--session", "pair"]
    workers = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        # Output to files, not pipes: a worker never blocks on a full pipe nobody reads.
        with open(tmp_path / f"worker{index}.out", "w") as out, \
                open(tmp_path / f"worker{index}.err", "w") as err:
            processes.append(subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out,
                                              stderr=err))
    try:
        for process in processes:
            process.wait(timeout=600)
    finally:
        for process in processes:
            process.kill()
    outputs = [tuple((tmp_path / f"worker{i}.{kind}").read_text() for kind in ("out", "err"))
               for i in range(2)]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "strategy multiworker, 2 replica(s), 1 images each; this is worker0" in outputs[0][0]
    assert "this is worker1" in outputs[1][0]
    assert "Finished 4 iterations" in outputs[0][0]

    session = tmp_path / "saved_sessions" / "pair"
    # Only the chief's files: no scratch copy of the other worker's checkpoint is left.
    assert sorted(os.listdir(session)) == ["phase_ends", "session.json"]
    assert sorted(os.path.basename(p) for p in glob.glob(str(session / "*" / "ckpt-*.index"))) \
        == ["ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]
    assert len(glob.glob(str(tmp_path / "logs" / "pair" / "events.out.tfevents.*"))) == 1
    assert os.path.exists(tmp_path / "results" / "pair" / "losses.csv")

    single = run_script("train.py", [*args[2:-4], "--session", "pair", "--total-iters", "5",
                                     "--strategy", "default"], cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "Resuming session 'pair' at iteration 4 (phase 3 joint)" in single.stdout
    assert "Finished 5 iterations" in single.stdout
