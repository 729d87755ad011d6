"""session.py: where a session's files are, starting and resuming it, one process per session,
checkpoints that are whole or ignored, and loading a trained completion network.

This is the one test file that spells the folder names (saved_sessions, logs, results): the
layout test below pins them; every other test reaches them through session.folder() etc."""
import errno
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import config as cfg
import session
import train
import utils
from conftest import REPO, run_main
from model import NETWORK_VERSION


def write_session(name, config, mean_pixel=(0.4, 0.5, 0.6), network_version=NETWORK_VERSION):
    utils.write_json(session.session_file(name), {"config": config, "mean_pixel": list(mean_pixel),
                                                  "network_version": network_version})


# ---------------------------------------------------------------------------------------------
# The layout


def test_the_layout_of_a_session_on_disk():
    assert session.folder("s") == "saved_sessions/s"
    assert session.session_file("s") == "saved_sessions/s/session.json"
    assert session.logs_dir("s") == "logs/s"
    assert session.results_dir("s") == "results/s"
    assert session.eval_dir("s") == "results/s/eval"


def test_move_aside_renames_the_three_folders_with_one_timestamp(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for path in (session.folder("s"), session.logs_dir("s"), session.results_dir("s"),
                 session.folder("other")):
        os.makedirs(path)
        (tmp_path / path / "marker").write_text(path)
    session.move_aside("s")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    stamps = set()
    for line, path in zip(lines, (session.folder("s"), session.logs_dir("s"),
                                  session.results_dir("s"))):
        match = re.fullmatch(rf"Moved the old {path} aside to {path}\.old-(\d{{8}}-\d{{6}})", line)
        assert match, line
        stamps.add(match.group(1))
        moved = tmp_path / f"{path}.old-{match.group(1)}"
        assert (moved / "marker").read_text() == path
        assert not os.path.exists(path)
    assert len(stamps) == 1
    assert (tmp_path / session.folder("other") / "marker").exists()  # other sessions untouched


def test_move_aside_skips_folders_that_do_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.makedirs(session.logs_dir("s"))
    session.move_aside("s")
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"Moved the old {session.logs_dir('s')} aside to")
    assert not os.path.exists(session.folder("s")) and not os.path.exists(session.results_dir("s"))


# ---------------------------------------------------------------------------------------------
# Resuming


@pytest.fixture
def saved(tmp_path, monkeypatch, tiny_config):
    """Session 'r' on disk: the tiny configuration with phases 2 / 2 / 1; returns its config."""
    monkeypatch.chdir(tmp_path)
    config = tiny_config(session="r", tc=2, td=2, total_iters=5)
    write_session("r", config.to_dict())
    return config


def test_resume_applies_the_flags_and_says_what_changed(saved, capsys):
    config, contents = session.resume(session.session_file("r"), {"session": "r",
                                                                   "total_iters": 6})
    assert config.total_iters == 6
    assert cfg.differences(saved, config) == [("total_iters", 5, 6)]
    assert contents["mean_pixel"] == pytest.approx([0.4, 0.5, 0.6])
    assert capsys.readouterr().out == "Changed on resume: --total-iters 5 -> 6\n"


def test_resolve_resumes_a_saved_session_unless_fresh(saved, capsys):
    config, contents = session.resolve({"session": "r"}, fresh=False)
    assert config == saved and "mean_pixel" in contents
    assert capsys.readouterr().out == ""  # nothing changed
    config, contents = session.resolve({"session": "r", "preset": "quick"}, fresh=True)
    assert contents == {}
    assert config == cfg.resolve(cfg.preset_config("quick"), {"session": "r"})


@pytest.mark.parametrize("name, value, old", [
    ("width_divisor", 4, 8), ("image_size", 64, 32), ("local_size", 24, 16),
    ("optimizer", "adam", "adadelta")])
def test_resume_refuses_to_change_the_architecture(saved, capsys, name, value, old):
    flag = cfg.flag(name)
    with pytest.raises(session.SessionError) as info:
        session.resume(session.session_file("r"), {"session": "r", "total_iters": 6,
                                                   name: value})
    assert str(info.value) == (
        f"{flag} {value} conflicts with session 'r', which was trained with {flag} {old}; drop"
        " the flag, or use --fresh or another --session")
    assert info.value.status == 2
    assert capsys.readouterr().out == ""  # no "Changed on resume" before the refusal


@pytest.mark.parametrize("name, value, message", [
    ("optimizer", "adamw", "--optimizer: expected one of adadelta, adam, got 'adamw'"),
    ("recon_loss", "ssim", "--recon-loss: expected one of mse, l1, got 'ssim'")])
def test_a_session_file_with_an_unknown_setting_names_the_flag(saved, name, value, message):
    write_session("r", dict(saved.to_dict(), **{name: value}))
    path = session.session_file("r")
    with pytest.raises(session.SessionError) as info:
        session.resume(path, {"session": "r"})
    assert str(info.value) == (f"{path}: unreadable session file ({message}); use --fresh to"
                               " start over")


def test_a_damaged_session_file_is_a_session_error(saved):
    path = session.session_file("r")
    with open(path, "w") as f:
        f.write('{"config": {"image_si')
    with pytest.raises(session.SessionError, match=f"^{re.escape(path)}: unreadable session file"
                                                   r" \(.*\); use --fresh to start over$"):
        session.resolve({"session": "r"}, fresh=False)


def test_the_validation_split_is_saved_and_may_change_on_resume_as_the_photos_may(
        tmp_path, monkeypatch, capsys, tiny_config, make_photos):
    photos = sorted(make_photos(tmp_path / "photos", 6))
    (tmp_path / "held").mkdir()
    os.symlink(photos[0], tmp_path / "held" / "other.jpg")
    monkeypatch.chdir(tmp_path)

    def prepare(config, saved):
        train_files, val_files, _, handle = train.prepare(config, saved, fresh=False)
        handle.close()
        assert sorted(train_files + val_files) == sorted(set(train_files + val_files))
        line = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("Photos:"))
        return train_files, val_files, line.split(";")[0]

    config = tiny_config(session="v", data_dir=[str(tmp_path / "photos")], val_split=2)
    train_files, val_files, line = prepare(config, {})
    assert line == "Photos: 4 for training, 2 for validation (--val-split 2 of --data-dir)"
    assert sorted(train_files + val_files) == photos
    assert utils.read_json(session.session_file("v"))["config"]["val_split"] == 2
    # Resumed without the flag: the same split, nothing changed.
    resumed, saved = session.resolve({"session": "v"}, fresh=False)
    assert resumed.val_split == 2 and capsys.readouterr().out == ""
    assert prepare(resumed, saved)[:2] == (train_files, val_files)
    # Like --data-dir, it may change on resume (printed); session.json records the new split.
    resumed, saved = session.resolve({"session": "v", "val_split": 0.5}, fresh=False)
    assert capsys.readouterr().out == "Changed on resume: --val-split 2 -> 0.5\n"
    assert prepare(resumed, saved)[2] == (
        "Photos: 3 for training, 3 for validation (--val-split 0.5 of --data-dir)")
    assert utils.read_json(session.session_file("v"))["config"]["val_split"] == 0.5
    # --val-dir takes precedence: every photo of --data-dir is trained on.
    resumed, saved = session.resolve({"session": "v", "val_dir": "held"}, fresh=False)
    train_files, val_files, line = prepare(resumed, saved)
    assert line == "Photos: 6 for training, 1 for validation (--val-dir held)"
    assert (train_files, val_files) == (photos, ["held/other.jpg"])


# ---------------------------------------------------------------------------------------------
# Starting


def test_start_on_another_worker_writes_nothing(tmp_path, monkeypatch, tiny_config):
    monkeypatch.chdir(tmp_path)
    assert session.start(tiny_config(session="w"), [0.5, 0.5, 0.5], fresh=True,
                         chief=False) is None
    assert os.listdir(tmp_path) == []


def test_start_writes_a_session_file_that_reads_back(tmp_path, monkeypatch, tiny_config):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(session="w", hole_shape="free", optimizer="adam", seed=7)
    handle = session.start(config, np.array([0.25, 0.5, 0.75], np.float32), fresh=False)
    try:
        contents = utils.read_json(session.session_file("w"))
        assert cfg.Config.from_dict(contents["config"]) == config
        assert contents["mean_pixel"] == [0.25, 0.5, 0.75]
        # The session is held while training.
        with pytest.raises(session.SessionError, match="already being trained by train.py"):
            session.lock("w")
    finally:
        handle.close()


def test_start_fresh_moves_the_old_session_aside(saved, tmp_path, capsys):
    old = utils.read_json(session.session_file("r"))
    handle = session.start(saved, [0.1, 0.2, 0.3], fresh=True)
    handle.close()
    assert "Moved the old " + session.folder("r") in capsys.readouterr().out
    [moved] = [p for p in os.listdir(os.path.dirname(session.folder("r"))) if ".old-" in p]
    assert utils.read_json(os.path.join(os.path.dirname(session.folder("r")), moved,
                                        "session.json")) == old
    assert utils.read_json(session.session_file("r"))["mean_pixel"] == pytest.approx(
        [0.1, 0.2, 0.3])


# ---------------------------------------------------------------------------------------------
# One process per session


def test_a_second_process_on_the_same_session_stops_at_once(tmp_path, monkeypatch, capsys,
                                                           make_photos):
    make_photos(tmp_path / "photos", 3)
    monkeypatch.chdir(tmp_path)
    holder = session.lock("busy")
    try:
        code = run_main(train, ["--data-dir", "photos", "--session", "busy", "--preset",
                                "quick"], tmp_path)
        assert code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: --session busy: already being trained by train.py (pid {os.getpid()} on"
            f" {os.uname().nodename}); wait for it to finish or stop it (Ctrl-C), or choose"
            " another --session")
        assert not os.path.exists(session.folder("busy"))
    finally:
        holder.close()
    session.lock("busy").close()  # released: free again


def test_a_killed_process_does_not_leave_the_session_locked(tmp_path, monkeypatch):
    code = ("import sys, time; sys.path.insert(0, %r); import runtime, session;"
            " h = session.lock('s'); print('locked', flush=True); time.sleep(60)" % REPO)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = process.stdout.readline().strip()
        assert line == "locked", process.stderr.read() if process.poll() is not None else line
        monkeypatch.chdir(tmp_path)
        with pytest.raises(session.SessionError, match="already being trained by train.py"):
            session.lock("s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    session.lock("s").close()


# ---------------------------------------------------------------------------------------------
# Checkpoints are whole or ignored


def tiny_checkpoints(tmp_path):
    value = tf.Variable(0.0)
    return value, session.Checkpoints(tf.train.Checkpoint(value=value), str(tmp_path / "session"))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    value, checkpoints = tiny_checkpoints(tmp_path)
    value.assign(1.0)
    checkpoints.save(1)
    assert checkpoints.saved_at == 1
    value.assign(2.0)

    def disk_full(self, checkpoint_number=None, **kwargs):
        with open(os.path.join(self.directory, f"ckpt-{checkpoint_number}.index"), "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_full)
    with pytest.raises(session.SaveError) as info:
        checkpoints.save(2)
    folder = str(tmp_path / "session" / "checkpoints")
    assert str(info.value) == (f"could not write checkpoint 2 to {folder} (No space left on"
                               f" device); the previous checkpoint {folder}/ckpt-1 is intact")
    assert info.value.status == 1 and isinstance(info.value, utils.UserError)
    assert checkpoints.saved_at == 1
    assert sorted(os.listdir(folder)) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    monkeypatch.undo()
    assert checkpoints.restore() == f"{folder}/ckpt-1" and float(value) == 1.0


def test_checkpoints_are_saved_when_due_and_phase_ends_are_kept(tmp_path):
    value, checkpoints = tiny_checkpoints(tmp_path)
    for n in range(1, 11):
        value.assign(float(n))
        checkpoints.save_if_due(n, every=2, phase_end=n == 3)
    rolling = tmp_path / "session" / "checkpoints"
    phase_ends = tmp_path / "session" / "phase_ends"
    # The newest 3 rolling ones, and every phase end.
    assert sorted(p for p in os.listdir(rolling) if p.endswith(".index")) == [
        "ckpt-10.index", "ckpt-6.index", "ckpt-8.index"]
    assert [p for p in os.listdir(phase_ends) if p.endswith(".index")] == ["ckpt-3.index"]
    assert checkpoints.latest() == str(rolling / "ckpt-10") and checkpoints.saved_at == 10
    value.assign(0.0)
    assert checkpoints.restore() == str(rolling / "ckpt-10") and float(value) == 10.0


@pytest.mark.parametrize("keep, expected", [(2, [8, 10]), (0, [2, 4, 6, 8, 10])])
def test_keep_checkpoints_sets_how_many_rolling_checkpoints_stay(tmp_path, keep, expected):
    value = tf.Variable(0.0)
    checkpoints = session.Checkpoints(tf.train.Checkpoint(value=value),
                                      str(tmp_path / "session"), keep=keep)
    for n in range(1, 11):
        value.assign(float(n))
        checkpoints.save_if_due(n, every=2, phase_end=n == 3)
    assert [session.checkpoint_number(p) for p in checkpoints.candidates()] == (
        sorted(expected + [3], reverse=True))


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
    # Every rolling checkpoint damaged: the phase-end one is used.
    (folder / "ckpt-2.index").write_bytes(b"garbage")
    assert checkpoints.restore() == str(tmp_path / "session" / "phase_ends" / "ckpt-1")
    assert float(value) == 1.0
    # None whole: an error, not a silent start from scratch.
    (tmp_path / "session" / "phase_ends" / "ckpt-1.index").write_bytes(b"garbage")
    with pytest.raises(session.SessionError) as info:
        checkpoints.restore()
    assert str(info.value) == (f"--session session: every checkpoint in {tmp_path / 'session'}"
                               " is damaged; use --fresh to start over")


def test_older_checkpoints_resume_and_killed_saves_are_cleaned_up(tmp_path):
    value, checkpoints = tiny_checkpoints(tmp_path)
    assert checkpoints.restore() is None  # nothing saved yet
    value.assign(4.0)
    checkpoints.save(4)
    partial = tmp_path / "session" / "checkpoints" / "ckpt-7_temp"
    partial.mkdir()
    (partial / "part-00000-of-00001.data-00000-of-00001.tempstate123").write_bytes(b"x" * 100)
    # A checkpoint written before a variable was added still restores what it has.
    value.assign(0.0)
    added = tf.Variable(5, dtype=tf.int64)
    newer = session.Checkpoints(tf.train.Checkpoint(value=value, data_offset=added),
                                str(tmp_path / "session"))
    assert newer.restore().endswith("ckpt-4")
    assert float(value) == 4.0 and int(added) == 5
    assert not partial.exists()


# ---------------------------------------------------------------------------------------------
# Using a trained session


def test_sessions_that_cannot_be_used(tmp_path, monkeypatch, tiny_config):
    monkeypatch.chdir(tmp_path)
    # A partial configuration does not validate (local size 128 > image size 32): unreadable.
    write_session("partial", {"image_size": 32})
    write_session("untrained", tiny_config(session="untrained").to_dict())
    utils.write_json(session.session_file("no_mean"),
                     {"config": tiny_config(session="no_mean").to_dict()})
    cases = [(name, f"--session {name}: no readable session in {session.folder(name)}/ (train"
                    f" one with python train.py --session {name})")
             for name in ("nothing", "partial", "no_mean")]
    cases.append(("untrained", f"--session untrained: no checkpoint in"
                               f" {session.folder('untrained')}/ yet; train longer first"))
    for name, message in cases:
        with pytest.raises(session.SessionError) as info:
            session.load_completion_network(name)
        assert str(info.value) == message
        assert info.value.status == 2


def test_load_completion_network_restores_the_newest_checkpoint(tmp_path, monkeypatch,
                                                                make_session):
    from model import build_completion_network
    make_session(tmp_path, "s")
    tf.keras.utils.set_random_seed(0)  # the weights make_session saved
    expected = build_completion_network(width_divisor=8, mean_pixel=(0.4, 0.5, 0.6)).get_weights()
    monkeypatch.chdir(tmp_path)
    tf.keras.utils.set_random_seed(1)  # other initial weights, which the restore replaces
    network, mean_pixel, config = session.load_completion_network("s")
    assert config.session == "s" and config.image_size == 32 and config.width_divisor == 8
    assert mean_pixel.dtype == np.float32
    np.testing.assert_allclose(mean_pixel, [0.4, 0.5, 0.6])
    weights = network.get_weights()
    assert len(weights) == len(expected)
    for got, want in zip(weights, expected):
        np.testing.assert_array_equal(got, want)


def test_a_session_of_an_earlier_network_is_refused(tmp_path, monkeypatch, tiny_config, capsys):
    """Sessions saved before the network computed what the official one does (no
    network_version in session.json) neither resume nor complete photos."""
    monkeypatch.chdir(tmp_path)
    utils.write_json(session.session_file("old"), {
        "config": tiny_config(session="old").to_dict(), "mean_pixel": [0.4, 0.5, 0.6]})
    expected = ("--session old: trained with completion network version 1; this is version 2"
                " (the official network's padding, batch-norm epsilon and mean-centred input,"
                " see docs/paper.md), whose weights differ in meaning; ")
    with pytest.raises(session.SessionError) as info:
        session.resolve({"session": "old"}, fresh=False)
    assert str(info.value) == expected + "use --fresh or another --session"
    with pytest.raises(session.SessionError) as info:
        session.load_completion_network("old")
    assert str(info.value) == expected + "train it again with --fresh"
    assert session.resolve({"session": "old", "preset": "quick"}, fresh=True)[1] == {}
