"""Training survives what happens to long runs: a second process, a full disk, damaged
checkpoints, bad photos, non-finite losses; and it is reproducible."""
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_loader
import train
from conftest import REPO, TINY, run_script, smooth_photo


@pytest.fixture(autouse=True)
def forget_reported_files():
    data_loader._reported.clear()
    yield
    data_loader._reported.clear()


# ---------------------------------------------------------------------------------------------
# One process per session


def test_a_second_process_on_the_same_session_stops_at_once(tmp_path, monkeypatch, make_photos):
    make_photos(tmp_path / "photos", 3)
    monkeypatch.chdir(tmp_path)
    holder = train.lock_session("busy")
    try:
        result = run_script("train.py", ["--data-dir", "photos", "--session", "busy",
                                         "--preset", "quick"], cwd=tmp_path, timeout=120)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: --session busy: already being trained by train.py (pid {os.getpid()} on"
            f" {os.uname().nodename}); wait for it to finish or stop it (Ctrl-C), or choose"
            " another --session")
        assert not os.path.exists(tmp_path / "saved_sessions" / "busy")
    finally:
        holder.close()
    train.lock_session("busy").close()  # released: free again


def test_a_killed_process_does_not_leave_the_session_locked(tmp_path, monkeypatch):
    code = ("import sys, time; sys.path.insert(0, %r); import train;"
            " h = train.lock_session('s'); print('locked', flush=True); time.sleep(60)" % REPO)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "locked"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(train.SessionError, match="already being trained by train.py"):
        train.lock_session("s")
    process.send_signal(signal.SIGKILL)
    process.wait()
    train.lock_session("s").close()


# ---------------------------------------------------------------------------------------------
# Checkpoints are whole or ignored


def tiny_checkpoints(tmp_path):
    value = tf.Variable(0.0)
    return value, train.Checkpoints(tf.train.Checkpoint(value=value), str(tmp_path / "session"))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    value, checkpoints = tiny_checkpoints(tmp_path)
    value.assign(1.0)
    checkpoints.save(1)
    value.assign(2.0)

    def disk_full(self, checkpoint_number=None, **kwargs):
        with open(os.path.join(self.directory, f"ckpt-{checkpoint_number}.index"), "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_full)
    with pytest.raises(train.SaveError) as info:
        checkpoints.save(2)
    folder = str(tmp_path / "session" / "checkpoints")
    assert str(info.value) == (f"could not write checkpoint 2 to {folder} (No space left on"
                               f" device); the previous checkpoint {folder}/ckpt-1 is intact")
    assert sorted(os.listdir(folder)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    monkeypatch.undo()
    assert checkpoints.restore() == f"{folder}/ckpt-1" and float(value) == 1.0


def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, capsys):
    value, checkpoints = tiny_checkpoints(tmp_path)
    for number in (1, 2, 3):
        value.assign(float(number))
        checkpoints.save(number, phase_end=number == 1)
    folder = tmp_path / "session" / "checkpoints"
    (folder / "ckpt-3.data-00000-of-00001").write_bytes(b"")  # killed mid-write
    value.assign(0.0)
    assert checkpoints.restore() == str(folder / "ckpt-2")
    assert float(value) == 2.0
    assert f"warning: skipping damaged checkpoint {folder}/ckpt-3" in capsys.readouterr().err
    for number in (2, 1):  # every rolling checkpoint damaged: the phase-end one is used
        (folder / f"ckpt-{number}.index").write_bytes(b"garbage") if number == 2 else None
    assert checkpoints.restore() == str(tmp_path / "session" / "phase_ends" / "ckpt-1")
    assert float(value) == 1.0


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


def test_a_folder_of_bad_photos_trains_and_names_every_bad_file(tmp_path):
    bad = bad_photo_folder(tmp_path / "photos")
    args = ["--data-dir", "photos", "--session", "bad", "--preset", "quick", *TINY,
            "--tc", "2", "--td", "1", "--total-iters", "3"]
    result = run_script("train.py", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    relative = sorted(os.path.join("photos", os.path.basename(p)) for p in bad)
    for path in relative:
        assert sum(f"warning: skipping {path}:" in line
                   for line in result.stderr.splitlines()) == 1, path
    assert "warning: skipping photos/huge.png: cannot decode it (ValueError: 20000x20000 pixels" \
        in result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"Skipped 4 undecodable file(s): {', '.join(relative)}")


def test_photos_deleted_while_training_are_skipped(tmp_path, make_photos, capsys):
    files = make_photos(tmp_path / "photos", 3)
    config = train.cfg.resolve(train.cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=4))
    batches = iter(data_loader.training_dataset(files, config))
    next(batches)
    os.remove(files[1])
    for _ in range(5):
        assert next(batches)["image"].shape == (4, 32, 32, 3)
    assert capsys.readouterr().err.count(f"warning: skipping {files[1]}: cannot decode it") == 1


def test_every_photo_bad_is_an_error_before_training(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    Image.new("1", (20000, 20000)).save(tmp_path / "photos" / "b.png")
    result = run_script("train.py", ["--data-dir", "photos", "--preset", "quick"], cwd=tmp_path,
                        timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --data-dir photos: no decodable image among 2 files tried")
    assert not os.path.exists(tmp_path / "saved_sessions" / "default")


# ---------------------------------------------------------------------------------------------
# Non-finite losses


def nan_at(call_number):
    """Wrap make_steps so that the given call of a step reports a NaN reconstruction loss."""
    real_make_steps = train.make_steps
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
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "make_steps", nan_at(5))
    args = ["--data-dir", "photos", "--session", "nan", "--preset", "quick", *TINY, "--tc", "6",
            "--td", "0", "--total-iters", "6", "--checkpoint-every", "3", "--on-nan", on_nan]
    code = train.main(args)
    out, err = capsys.readouterr()
    folder = tmp_path / "saved_sessions" / "nan"
    if on_nan == "stop":
        assert code == 3
        assert err.strip().splitlines()[-1] == (
            "error: reconstruction loss is nan at iteration 5; stopped without saving, the newest"
            " good checkpoint is saved_sessions/nan/checkpoints/ckpt-3. Resume with --on-nan"
            " rollback, or a lower --learning-rate")
        assert sorted(os.listdir(folder / "checkpoints")) == [
            "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    else:
        assert code == 0, err[-2000:]
        assert ("warning: reconstruction loss is nan at iteration 5; rolled back to iteration 3"
                " and skipped the 2 batch(es) since") in err
        assert "Finished 6 iterations" in out
        offset = tf.train.load_variable(str(folder / "phase_ends" / "ckpt-6"),
                                        "data_offset/.ATTRIBUTES/VARIABLE_VALUE")
        assert offset == 2
        rows = (tmp_path / "results" / "nan" / "losses.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------
# No growth over time, reproducible runs


def test_step_functions_are_traced_once_per_phase(tmp_path, make_photos):
    files = make_photos(tmp_path / "photos", 3)
    config = train.cfg.resolve(train.cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=2))
    from model import build_completion_network, build_context_discriminator
    G, D = build_completion_network(), build_context_discriminator(32, 16)
    g_opt, d_opt = train.make_optimizer(config), train.make_optimizer(config)
    g_opt.build(G.trainable_variables)
    d_opt.build(D.trainable_variables)
    steps = train.make_steps(G, D, g_opt, d_opt, config, np.array([0.5, 0.5, 0.5], np.float32))
    batches = iter(data_loader.training_dataset(files, config))
    for phase in (1, 2, 3):
        for _ in range(4):
            steps[phase](next(batches))
        assert steps[phase].experimental_get_tracing_count() == 1


def test_deterministic_runs_are_bit_identical(tmp_path, make_photos):
    make_photos(tmp_path / "photos", 4)
    args = ["--data-dir", "../photos", "--session", "det", "--preset", "quick", *TINY,
            "--tc", "2", "--td", "1", "--total-iters", "4", "--seed", "3", "--deterministic"]
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args],
                                     cwd=tmp_path / name, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True))
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-2000:]

    def losses(name):
        rows = (tmp_path / name / "results" / "det" / "losses.csv").read_text().splitlines()
        return [row.rsplit(",", 1)[0] for row in rows]  # all but images/s
    assert losses("a") == losses("b")
    assert len(losses("a")) == 5


@pytest.mark.slow
def test_memory_does_not_grow_over_steps():
    from tests.memory import measure
    for phase, values in measure(steps=300, warmup=20, every=100).items():
        # Allocator pools fill during the first hundred steps; after that, no growth.
        assert values[-1] - values[1] < 64, (phase, values)  # MB


def test_older_checkpoints_resume_and_killed_saves_are_cleaned_up(tmp_path):
    value, checkpoints = tiny_checkpoints(tmp_path)
    value.assign(4.0)
    checkpoints.save(4)
    partial = tmp_path / "session" / "checkpoints" / "ckpt-7_temp"
    partial.mkdir()
    (partial / "part-00000-of-00001.data-00000-of-00001.tempstate123").write_bytes(b"x" * 100)
    # A checkpoint written before a variable was added still restores what it has.
    value.assign(0.0)
    added = tf.Variable(5, dtype=tf.int64)
    newer = train.Checkpoints(tf.train.Checkpoint(value=value, data_offset=added),
                              str(tmp_path / "session"))
    assert newer.restore().endswith("ckpt-4")
    assert float(value) == 4.0 and int(added) == 5
    assert not partial.exists()


def test_a_full_disk_while_writing_results_is_one_line(tmp_path, monkeypatch, capsys, make_photos):
    make_photos(tmp_path / "photos", 3)
    monkeypatch.chdir(tmp_path)

    def disk_full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(train.utils, "save_png", disk_full)
    code = train.main(["--data-dir", "photos", "--session", "full", "--preset", "quick", *TINY,
                       "--tc", "3", "--td", "0", "--total-iters", "3"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: cannot write results/full/phase1_iter0000002.png: No space left on device;"
        " the checkpoints written so far are intact")
