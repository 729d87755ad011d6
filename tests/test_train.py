"""The three-phase loop: losses, what each phase updates, and train.py as a user runs it."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import config as cfg
import data_loader
import train
from conftest import REPO, TINY, run_script
from model import build_completion_network, build_context_discriminator


# ---------------------------------------------------------------------------------------------
# Losses


def test_reconstruction_loss_counts_only_the_hole():
    images = tf.zeros([1, 2, 2, 3])
    outputs = tf.fill([1, 2, 2, 3], 0.5)
    masks = tf.constant([1.0, 0.0, 0.0, 0.0], shape=[1, 2, 2, 1])
    # One hole pixel of 3 channels with error 0.5, averaged over 12 values.
    assert float(train.reconstruction_loss(images, outputs, masks, "mse")) == pytest.approx(3 * 0.25 / 12)
    assert float(train.reconstruction_loss(images, outputs, masks, "l1")) == pytest.approx(3 * 0.5 / 12)


def test_gan_losses_match_cross_entropy_formulas():
    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    expected_d = (-np.mean(np.log(sigmoid(np.array([2.0, -1.0]))))
                  - np.mean(np.log(1 - sigmoid(np.array([0.5, -3.0])))))
    assert float(train.discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-5)
    expected_adv = -np.mean(np.log(sigmoid(np.array([0.5, -3.0]))))
    assert float(train.adversarial_loss(fake)) == pytest.approx(expected_adv, rel=1e-5)
    # From logits: no overflow where probabilities would round to 0 or 1.
    assert np.isfinite(float(train.discriminator_loss(tf.constant([[-200.0]]), tf.constant([[200.0]]))))


# ---------------------------------------------------------------------------------------------
# Each phase updates exactly the networks it should


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    config = cfg.resolve(cfg.preset_config("quick"), dict(
        image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=2, alpha=1.0))
    G = build_completion_network()
    D = build_context_discriminator(32, 16)
    g_opt, d_opt = train.make_optimizer(config), train.make_optimizer(config)
    g_opt.build(G.trainable_variables)
    d_opt.build(D.trainable_variables)
    steps = train.make_steps(G, D, g_opt, d_opt, config, np.array([0.4, 0.5, 0.6], np.float32))
    batches = iter(data_loader.training_dataset(data_loader.find_images([str(folder)]), config))
    return G, D, steps, batches


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
    expected = {1: {"reconstruction"},
                2: {"discriminator", "d_real", "d_completed"},
                3: {"reconstruction", "adversarial", "discriminator", "d_real", "d_completed"}}
    assert set(metrics) == expected[phase]
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_phases_follow_the_schedule():
    config = cfg.Config(tc=3, td=2, total_iters=7)
    assert [config.phase(i) for i in range(7)] == [1, 1, 1, 2, 2, 3, 3]
    assert [config.phase_range(p) for p in (1, 2, 3)] == [(0, 3), (3, 5), (5, 7)]


# ---------------------------------------------------------------------------------------------
# Configuration


def test_presets_and_flag_overrides():
    paper = cfg.preset_config("paper")
    assert (paper.image_size, paper.local_size, paper.hole_min, paper.hole_max) == (256, 128, 96, 128)
    assert (paper.batch_size, paper.tc, paper.td, paper.total_iters) == (96, 90000, 10000, 500000)
    assert (paper.alpha, paper.optimizer, paper.recon_loss) == (0.0004, "adadelta", "mse")
    cpu = cfg.preset_config("cpu")
    assert (cpu.image_size, cpu.local_size, cpu.hole_min, cpu.hole_max) == (128, 64, 48, 64)
    config = cfg.resolve(cpu, {"batch_size": 3, "optimizer": "adam"})
    assert (config.batch_size, config.learning_rate, config.image_size) == (3, 2e-4, 128)


def test_help_names_every_flag_with_its_paper_value():
    result = run_script("train.py", ["--help"], cwd=REPO, timeout=120)
    assert result.returncode == 0
    for name in ["--data-dir", "--val-dir", "--session", "--preset", "--image-size",
                 "--local-size", "--hole-min", "--hole-max", "--batch-size", "--tc", "--td",
                 "--total-iters", "--alpha", "--recon-loss", "--optimizer", "--learning-rate",
                 "--checkpoint-every", "--summary-every", "--sample-every", "--seed", "--fresh"]:
        assert name in result.stdout
    text = " ".join(result.stdout.split())
    for value in ["paper: 256", "paper: 128", "paper: 96)", "paper: 90000", "paper: 10000",
                  "paper: 500000", "paper: 0.0004"]:
        assert value in text


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, no traceback


BAD_FLAGS = [
    (["--hole-max", "20"], "--hole-max: expected at most --local-size (16) so the local patch"
                           " can contain the hole, got 20"),
    (["--local-size", "40"], "--local-size: expected at most --image-size (32), got 40"),
    (["--image-size", "30"], "--image-size: expected a positive multiple of 4, got 30"),
    (["--tc", "-1"], "--tc: expected a non-negative iteration count, got -1"),
    (["--tc", "5", "--td", "5", "--total-iters", "8"],
     "--total-iters: expected at least --tc + --td (5 + 5 = 10), got 8"),
    (["--hole-min", "13"], "--hole-max: expected at least --hole-min (13), got 12"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_out_of_range_flags_are_one_line_errors(tmp_path, monkeypatch, capsys, make_photos,
                                                flags, message):
    make_photos(tmp_path / "photos", 2)
    monkeypatch.chdir(tmp_path)
    code = train.main(["--data-dir", "photos", "--preset", "quick", *TINY, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {message}\n"
    assert not os.path.exists(tmp_path / "saved_sessions")


def test_bad_data_folders_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a photo")
    (tmp_path / "broken" / "b.png").write_bytes(b"")
    cases = [("missing", "error: --data-dir missing: not a folder\n"),
             ("empty", "error: --data-dir empty: no image files (jpg, jpeg, png, bmp, gif, webp,"
                       " tif, tiff) found\n"),
             ("broken", "error: --data-dir broken: no decodable image among 2 files tried\n")]
    for folder, message in cases:
        assert train.main(["--data-dir", folder, "--preset", "quick", "--session", folder]) == 2
        assert capsys.readouterr().err.endswith(message)


def test_bad_input_from_the_command_line_exits_2_without_traceback(tmp_path):
    result = run_script("train.py", ["--data-dir", "nowhere"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stdout.splitlines()[0].startswith("No GPU visible: using the cpu preset")
    assert result.stderr.strip().splitlines()[-1] == "error: --data-dir nowhere: not a folder"
    assert "Traceback" not in result.stderr
    result = run_script("train.py", ["--preset", "fast"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "--preset: invalid choice: 'fast'" in result.stderr


# ---------------------------------------------------------------------------------------------
# A whole tiny run, as a user runs it


def tiny_args(photos, session="tiny", tc=2, td=2, total=5):
    return ["--data-dir", str(photos), "--session", session, "--preset", "quick", *TINY,
            "--tc", str(tc), "--td", str(td), "--total-iters", str(total),
            "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    os.makedirs(root / "photos" / "nested")
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(
            root / "photos" / ("nested" if i % 2 else "") / f"p{i}.png")
    result = run_script("train.py", tiny_args(root / "photos"), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_run_leaves_checkpoints_for_every_phase_end(finished_run):
    root, result = finished_run
    session = root / "saved_sessions" / "tiny"
    ends = sorted(os.path.basename(p) for p in glob.glob(str(session / "phase_ends" / "*.index")))
    assert ends == ["ckpt-2.index", "ckpt-4.index", "ckpt-5.index"]
    config = cfg.Config.from_dict(train.utils.read_json(str(session / "session.json"))["config"])
    assert (config.image_size, config.total_iters, config.preset) == (32, 5, "quick")
    assert len(train.utils.read_json(str(session / "session.json"))["mean_pixel"]) == 3
    assert "Finished 5 iterations of session 'tiny'" in result.stdout


def test_run_writes_result_grids_and_loss_curves(finished_run):
    root, _ = finished_run
    results = root / "results" / "tiny"
    grids = sorted(p.name for p in results.glob("phase*_iter*.png"))
    assert grids == ["phase1_iter0000002.png", "phase2_iter0000004.png", "phase3_iter0000005.png"]
    grid = np.asarray(Image.open(results / "phase3_iter0000005.png"))
    assert grid.shape == (6 * 32, 4 * 32, 3)  # six rows of masked | output | completed | truth
    # The completed column differs from the ground truth only inside one hole (edges <= 12).
    for row in range(6):
        tile = grid[row * 32:(row + 1) * 32]
        ys, xs = np.nonzero(np.any(tile[:, 64:96] != tile[:, 96:128], axis=-1))
        if len(ys):
            assert ys.max() - ys.min() < 12 and xs.max() - xs.min() < 12
    for phase in (1, 2, 3):
        assert Image.open(results / f"losses_phase{phase}.png").size[0] > 100
    rows = (results / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,phase,reconstruction")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]


def test_tensorboard_event_files_hold_the_expected_tags(finished_run):
    from tensorboard.backend.event_processing import event_accumulator
    root, _ = finished_run
    events = event_accumulator.EventAccumulator(
        str(root / "logs" / "tiny"), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    for tag in ["loss/reconstruction", "loss/discriminator", "loss/adversarial",
                "discriminator/real", "discriminator/completed", "speed/images_per_second",
                "phase", "samples/masked_input | output | completed | ground_truth"]:
        assert tag in tags
    steps = [e.step for e in events.Tensors("loss/reconstruction")]
    assert steps == [1, 2, 5]  # phase 1 and phase 3 only
    assert [e.step for e in events.Tensors("loss/discriminator")] == [3, 4, 5]
    graphs = [t for t in tags
              if events.SummaryMetadata(t).plugin_data.plugin_name == "graph_run_metadata_graph"]
    assert sorted(graphs) == ["phase1_step", "phase2_step", "phase3_step"]


def test_finished_session_says_so_and_can_be_extended(finished_run):
    root, _ = finished_run
    again = run_script("train.py", tiny_args(root / "photos"), cwd=root)
    assert again.returncode == 0
    assert "already finished 5 iterations" in again.stdout
    longer = run_script("train.py", tiny_args(root / "photos", total=6), cwd=root)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "Changed on resume: --total-iters 5 -> 6" in longer.stdout
    assert "Resuming session 'tiny' at iteration 5 (phase 3 joint)" in longer.stdout
    assert "Finished 6 iterations" in longer.stdout
    assert os.path.exists(root / "saved_sessions" / "tiny" / "phase_ends" / "ckpt-6.index")


def test_conflicting_resume_names_the_setting(finished_run):
    root, _ = finished_run
    args = tiny_args(root / "photos")
    args[args.index("--image-size") + 1] = "48"
    result = run_script("train.py", args, cwd=root)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --image-size 48 conflicts with session 'tiny', which was trained with"
        " --image-size 32; drop the flag, or use --fresh or another --session")
    assert cfg.Config.from_dict(train.utils.read_json(
        str(root / "saved_sessions" / "tiny" / "session.json"))["config"]).image_size == 32


def test_fresh_moves_the_old_session_aside(finished_run):
    root, _ = finished_run
    before = set(os.listdir(root / "saved_sessions"))
    result = run_script("train.py", tiny_args(root / "photos", tc=1, td=0, total=1) + ["--fresh"],
                        cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    moved = set(os.listdir(root / "saved_sessions")) - before
    assert len(moved) == 1 and re.fullmatch(r"tiny\.old-\d{8}-\d{6}", moved.pop())
    assert "Moved the old saved_sessions/tiny aside" in result.stdout
    assert "Resuming" not in result.stdout
    assert os.path.exists(root / "saved_sessions" / "tiny" / "phase_ends" / "ckpt-1.index")


# ---------------------------------------------------------------------------------------------
# Ctrl-C, then the same command resumes


@pytest.mark.parametrize("signum", [signal.SIGINT,
                                    pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_interrupt_saves_and_the_same_command_resumes(tmp_path, make_photos, signum):
    make_photos(tmp_path / "photos", 4)
    args = tiny_args(tmp_path / "photos", session="stop", tc=4, td=2, total=7)
    args[args.index("--checkpoint-every") + 1] = "100"  # only the interrupt saves mid-phase
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    first_grid = tmp_path / "results" / "stop" / "phase1_iter0000002.png"
    deadline = time.time() + 300
    while not first_grid.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-3000:]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    match = re.search(rf"{name}: saved iteration (\d+) of 7", out)
    assert match, out
    saved = int(match.group(1))
    assert 2 <= saved < 7
    result = run_script("train.py", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    phase = cfg.Config(tc=4, td=2, total_iters=7).phase(saved)
    assert f"Resuming session 'stop' at iteration {saved} (phase {phase}" in result.stdout
    assert "Finished 7 iterations" in result.stdout
    rows = (tmp_path / "results" / "stop" / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 8))
