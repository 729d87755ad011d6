"""report.py: what a run shows and leaves behind: TensorBoard scalars, graphs and sample grids,
losses.csv and the loss curves, and the progress bar."""
import csv
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import config as cfg
import data_loader
import evaluate
import realism
import report
import session
from model import build_completion_network

SIZE = 32
MEAN_PIXEL = np.array([0.4, 0.5, 0.6], np.float32)


def read_events(folder):
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    return events


def graph_tags(events):
    return sorted(t for t in events.Tags()["tensors"]
                  if events.SummaryMetadata(t).plugin_data.plugin_name
                  == "graph_run_metadata_graph")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# What the finished tiny run wrote (2 / 2 / 1 iterations, scalars every 1, samples every 2)


def test_run_writes_result_grids_and_loss_curves(tiny_training):
    root, _ = tiny_training
    results = root / session.results_dir("tiny")
    grids = sorted(p.name for p in results.glob("phase*_iter*.png"))
    assert grids == ["phase1_iter0000002.png", "phase2_iter0000004.png", "phase3_iter0000005.png"]
    grid = np.asarray(Image.open(results / "phase3_iter0000005.png"))
    assert grid.shape == (6 * SIZE, 4 * SIZE, 3)  # six rows of masked | output | completed | truth
    # The completed column differs from the ground truth only inside one hole (edges <= 12).
    for row in range(6):
        tile = grid[row * SIZE:(row + 1) * SIZE]
        ys, xs = np.nonzero(np.any(tile[:, 2 * SIZE:3 * SIZE] != tile[:, 3 * SIZE:], axis=-1))
        if len(ys):
            assert ys.max() - ys.min() < 12 and xs.max() - xs.min() < 12
    for phase in (1, 2, 3):
        assert Image.open(results / f"losses_phase{phase}.png").size[0] > 100
    rows = (results / "losses.csv").read_text().splitlines()
    assert rows[0] == ",".join(report.HISTORY_FIELDS)
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert [r.split(",")[1] for r in rows[1:]] == ["1", "1", "2", "2", "3"]


def test_tensorboard_event_files_hold_the_expected_tags(tiny_training):
    root, _ = tiny_training
    events = read_events(root / session.logs_dir("tiny"))
    tags = set(events.Tags()["tensors"])
    for tag in ["loss/reconstruction", "loss/discriminator", "loss/adversarial",
                "discriminator/real", "discriminator/completed", "speed/images_per_second",
                "phase", report.GRID_TAG]:
        assert tag in tags
    assert report.GRID_TAG == "samples/masked_input | output | completed | ground_truth"
    steps = [e.step for e in events.Tensors("loss/reconstruction")]
    assert steps == [1, 2, 5]  # phase 1 and phase 3 only
    assert [e.step for e in events.Tensors("loss/discriminator")] == [3, 4, 5]
    assert [e.step for e in events.Tensors("loss/adversarial")] == [5]
    assert [e.step for e in events.Tensors(report.GRID_TAG)] == [2, 4, 5]
    assert graph_tags(events) == ["phase1_step", "phase2_step", "phase3_step"]
    # Gradients: each network's where it is updated, the output's split in phase 3.
    assert [e.step for e in events.Tensors("gradients/completion_network")] == [1, 2, 5]
    assert [e.step for e in events.Tensors("gradients/discriminator")] == [3, 4, 5]
    for tag in ("gradients/output_reconstruction", "gradients/output_adversarial",
                "gradients/adversarial_share"):
        assert [e.step for e in events.Tensors(tag)] == [5]
    for tag in report.LEARNING_RATES.values():  # the paper's Adadelta at its constant rate
        assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)
                ] == [(step, 1.0) for step in (1, 2, 3, 4, 5)]
    share = float(tf.make_ndarray(events.Tensors("gradients/adversarial_share")[0].tensor_proto))
    assert 0 < share < 1


def test_held_out_evaluation_is_logged_at_each_phase_end(tiny_training):
    root, _ = tiny_training
    logs = root / session.logs_dir("tiny")
    for folder in (logs, logs / "eval_blend", logs / "eval_telea"):
        events = read_events(folder)
        for tag in [*report.EVAL_COLUMNS, "swd", "sharpness", "checkerboard",
                    "checkerboard_excess", "stripes", "stripes_excess", "colour"]:
            # The quick preset evaluates every 20 iterations and at each phase's end, but for
            # phase 2's (4), whose completion network is phase 1's, scored at 2.
            assert [e.step for e in events.Tensors(f"eval/{tag}")] == [2, 5]
    model_events = read_events(logs)
    assert [e.step for e in model_events.Tensors(report.EVAL_GRID_TAG)] == [2, 5]
    rows = read_rows(root / session.results_dir("tiny") / "eval.csv")
    # One held-out photo: no halves to measure the photos' own SWD with, so no row of it.
    assert [(r["iteration"], r["method"]) for r in rows] == [
        (str(i), m) for i in (2, 5) for m in ("model", "model + blend", "OpenCV Telea")]
    assert list(rows[0]) == report.EVAL_FIELDS
    telea = {(r["l1_hole"], r["swd_hole"]) for r in rows if r["method"] == "OpenCV Telea"}
    assert len(telea) == 1  # the line to beat does not move
    for column, tag in (("l1_hole", "l1_hole"), ("swd_hole", "swd"),
                        ("checkerboard_excess", "checkerboard_excess"),
                        ("stripes_excess", "stripes_excess")):
        logged = [float(tf.make_ndarray(e.tensor_proto))
                  for e in model_events.Tensors(f"eval/{tag}")]
        np.testing.assert_allclose(logged, [float(r[column]) for r in rows
                                            if r["method"] == "model"], atol=1e-6)
    assert Image.open(root / session.results_dir("tiny") / "eval.png").size[0] > 300


def test_held_out_scores_equal_what_evaluate_py_measures(tiny_training, tmp_path):
    """The last evaluation (iteration 5, the final checkpoint) on the session's validation
    photo equals evaluate.py's on that photo: the same holes, the same metrics."""
    import evaluate
    from conftest import run_main
    root, _ = tiny_training
    files = data_loader.find_images([str(root / "photos")])
    held_out = data_loader.split_validation(files, 0, 0.05)[1]  # the default --val-split
    assert len(held_out) == 1
    os.makedirs(tmp_path / "held_out")
    os.symlink(held_out[0], tmp_path / "held_out" / os.path.basename(held_out[0]))
    os.symlink(root / "saved_sessions", tmp_path / "saved_sessions")
    assert run_main(evaluate, ["--session", "tiny", "--data-dir", "held_out"], tmp_path) == 0
    measured = evaluate_json(tmp_path / session.eval_dir("tiny") / "metrics.json")
    rows = read_rows(root / session.results_dir("tiny") / "eval.csv")
    for row in rows[-3:]:
        assert row["iteration"] == "5"
        for column in [*evaluate.COLUMNS, *realism.COLUMNS]:  # nan is null in the JSON
            saved = measured[row["method"]][column]
            assert float(row[column]) == pytest.approx(math.nan if saved is None else saved,
                                                       abs=2e-6, nan_ok=True)
    # evaluate.py --validation finds that photo itself, from the session's settings.
    os.symlink(root / "photos", tmp_path / "photos")
    assert run_main(evaluate, ["--session", "tiny", "--validation"], tmp_path) == 0
    assert evaluate_json(tmp_path / (session.eval_dir("tiny") + "-validation")
                         / "metrics.json") == measured


def test_evaluations_during_training_give_each_photo_eval_hole_sets(tmp_path, make_photos):
    """--eval-hole-sets N: the validation photos with evaluate.py's holes of seeds 0 to N - 1,
    as evaluate.py --validation --hole-sets N scores them; 1 (the default) is seed 0's."""
    import train
    make_photos(tmp_path / "photos", 3, size=(40, 48))
    files = data_loader.find_images([str(tmp_path / "photos")])
    config = cfg.resolve(cfg.preset_config("quick"), dict(eval_hole_sets=3))
    items = train.held_out(config, files, MEAN_PIXEL, chief=True)
    assert [item["hole_set"] for item in items] == [0] * 3 + [1] * 3 + [2] * 3
    for seed in range(3):
        alone = evaluate.held_out(files, config, evaluate.DEFAULT_COUNT, "rect", seed,
                                  MEAN_PIXEL)
        for item, single in zip(items[3 * seed:3 * seed + 3], alone):
            assert item["path"] == single["path"] and item["boxes"] == single["boxes"]
            np.testing.assert_array_equal(item["masked"], single["masked"])
    one = train.held_out(cfg.resolve(config, dict(eval_hole_sets=1)), files, MEAN_PIXEL, True)
    assert [item["boxes"] for item in one] == [item["boxes"] for item in items[:3]]
    assert train.held_out(config, files, MEAN_PIXEL, chief=False) == []


def evaluate_json(path):
    import json
    with open(path) as f:
        return json.load(f)["mean"]


# ---------------------------------------------------------------------------------------------
# The progress bar


@pytest.fixture
def schedule():
    """Phases of 2, 1 and 1 iterations."""
    return cfg.Config(tc=2, td=1, total_iters=4)


def test_progress_shows_one_bar_per_phase(schedule, capsys):
    seen = []
    with report.Progress(schedule, 0) as progress:
        assert (progress.bar.desc, progress.bar.n, progress.bar.total) == (
            cfg.PHASE_NAMES[1], 0, 2)
        for done in range(1, 5):
            progress.update(done, {"reconstruction": 0.5}, 10.0)
            if progress.bar is not None:
                seen.append((done, progress.bar.desc, progress.bar.n, progress.bar.total))
        assert progress.bar is None  # the schedule is done
    assert seen == [(1, cfg.PHASE_NAMES[1], 1, 2), (2, cfg.PHASE_NAMES[2], 0, 1),
                    (3, cfg.PHASE_NAMES[3], 0, 1)]
    err = capsys.readouterr().err
    positions = [err.rfind(cfg.PHASE_NAMES[p]) for p in (1, 2, 3)]
    assert -1 not in positions and positions == sorted(positions), err
    assert "4/4" in err


def test_progress_shows_the_last_held_out_score(schedule, capsys):
    with report.Progress(schedule, 0) as progress:
        progress.update(1, {"reconstruction": 0.5}, 10.0)
        progress.held_out = {"hole L1": 0.1234567}
        progress.update(2, {"reconstruction": 0.5}, 10.0)
        progress.bar.refresh()
    err = capsys.readouterr().err
    assert "hole L1=0.1235" in err


def test_progress_resumed_mid_phase_starts_its_bar_there(schedule):
    with report.Progress(schedule, 1) as progress:
        assert (progress.bar.desc, progress.bar.n, progress.bar.total) == (
            cfg.PHASE_NAMES[1], 1, 2)
    with report.Progress(schedule, 4) as progress:  # nothing left to do: no bar
        assert progress.bar is None


def test_progress_reopens_a_bar_after_a_rollback(schedule, capsys):
    with report.Progress(schedule, 0) as progress:
        for done in (1, 2, 3):
            progress.update(done, {"discriminator": 1.0}, 10.0)
        assert progress.bar.desc == cfg.PHASE_NAMES[3]
        capsys.readouterr()
        # Rolled back to the checkpoint of iteration 1: iteration 2 is done again, which ends
        # phase 1 once more.
        progress.update(2, {"reconstruction": 0.5}, 10.0)
        assert (progress.bar.desc, progress.bar.n) == (cfg.PHASE_NAMES[2], 0)
        assert cfg.PHASE_NAMES[1] in capsys.readouterr().err  # its bar was shown again
        # Rolled back to the very start: the phase 1 bar again, at 1 of 2.
        progress.update(1, {"reconstruction": 0.5}, 10.0)
        assert (progress.bar.desc, progress.bar.n, progress.bar.total) == (
            cfg.PHASE_NAMES[1], 1, 2)
        for done in (2, 3, 4):
            progress.update(done, {"reconstruction": 0.5}, 10.0)
        assert progress.bar is None


def test_progress_of_other_workers_is_silent(schedule, capsys):
    with report.Progress(schedule, 0, chief=False) as progress:
        for done in range(1, 5):
            progress.update(done, {"reconstruction": 0.5}, 10.0)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# The reporter, directly


@pytest.fixture(scope="module")
def tiny_network():
    tf.keras.utils.set_random_seed(0)
    return build_completion_network(width_divisor=8)


@pytest.fixture
def reporter_parts(tmp_path, make_photos, tiny_config, tiny_network):
    """make(**config overrides, start=0, chief=True, held_out=()): a Reporter writing into
    tmp_path; held_out=N: evaluating the first N of its 3 photos."""
    files = make_photos(tmp_path / "photos", 3)

    def make(start=0, chief=True, held_out=0, **overrides):
        config = tiny_config(**overrides)
        val = data_loader.validation_batch(files, config)
        items = evaluate.held_out(files, config, held_out, config.hole_shape, 0, MEAN_PIXEL)
        return report.Reporter(config, str(tmp_path / "events"), str(tmp_path / "grids"),
                               lambda: tiny_network, val, MEAN_PIXEL, start, chief, items)
    return make


def phase_metrics(phase, value):
    names = {1: ["reconstruction"], 2: ["discriminator", "d_real", "d_completed"],
             3: ["reconstruction", "adversarial", "discriminator", "d_real", "d_completed"]}
    return {name: value for name in names[phase]}


def test_record_writes_scalars_when_due_and_at_phase_ends(reporter_parts, tmp_path):
    reporter = reporter_parts(summary_every=2, sample_every=4, tc=3, td=2, total_iters=6)
    config = reporter.config
    for iteration, value in zip(range(1, 5), (1.0, 2.0, 4.0, 8.0)):
        phase = config.phase(iteration - 1)
        phase_end = iteration == config.phase_range(phase)[1]
        reporter.record(phase, iteration, phase_metrics(phase, value), phase_end)
    results = tmp_path / "grids"
    # Scalars at 2 (every 2) and 3 (end of phase 1), then 4; grids at 3 (phase end), 4 (every 4).
    rows = read_rows(results / "losses.csv")
    assert list(rows[0]) == report.HISTORY_FIELDS
    assert [(r["iteration"], r["phase"]) for r in rows] == [("2", "1"), ("3", "1"), ("4", "2")]
    assert float(rows[0]["reconstruction"]) == pytest.approx(1.5)  # mean of iterations 1 and 2
    assert float(rows[1]["reconstruction"]) == pytest.approx(4.0)
    assert rows[0]["discriminator"] == "" and rows[2]["reconstruction"] == ""
    assert float(rows[2]["d_real"]) == pytest.approx(8.0)
    assert all(float(r["images_per_second"]) > 0 for r in rows)
    assert sorted(p.name for p in results.glob("phase*_iter*.png")) == [
        "phase1_iter0000003.png", "phase2_iter0000004.png"]
    for name in ("phase1_iter0000003.png", "phase2_iter0000004.png"):
        assert np.asarray(Image.open(results / name)).shape == (6 * SIZE, 4 * SIZE, 3)
    assert sorted(p.name for p in results.glob("losses_phase*.png")) == [
        "losses_phase1.png", "losses_phase2.png"]
    events = read_events(tmp_path / "events")
    assert [e.step for e in events.Tensors("loss/reconstruction")] == [2, 3]
    assert [e.step for e in events.Tensors("loss/discriminator")] == [4]
    assert [e.step for e in events.Tensors("phase")] == [2, 3, 4]
    assert [e.step for e in events.Tensors(report.GRID_TAG)] == [3, 4]


def test_phase_2_scores_its_unchanged_completion_network_once(reporter_parts, tmp_path,
                                                               monkeypatch):
    """A session that starts in phase 2 (--tc 0, as after --init-from) evaluates at its first
    due iteration only, until phase 3 moves the completion network; a rewind (rollback or
    resume) scores it again."""
    reporter = reporter_parts(held_out=2, eval_every=2, sample_every=100, summary_every=100,
                              tc=0, td=5, total_iters=9)
    evaluated = []
    monkeypatch.setattr(reporter, "evaluate", lambda phase, n: evaluated.append((phase, n)))
    config = reporter.config
    for iteration in range(1, 10):
        phase = config.phase(iteration - 1)
        reporter.record(phase, iteration, phase_metrics(phase, 1.0),
                        iteration == config.phase_range(phase)[1])
        if iteration == 4:
            reporter.rewind(3)  # a rollback to a checkpoint of 3, then its iteration 4 again
            reporter.record(phase, 4, phase_metrics(phase, 1.0), False)
    assert evaluated == [(2, 2), (2, 4), (3, 6), (3, 8), (3, 9)]


def test_gradient_norms_are_averaged_over_the_steps_that_have_them(reporter_parts, tmp_path):
    """The output's squared norms become root-mean-square norms and the adversarial share; a
    float16 step skipped for overflow (its norms not finite) is left out of the means."""
    reporter = reporter_parts(summary_every=3, sample_every=100, tc=0, td=0, total_iters=6)
    steps = [(3.0, 16.0, 9.0), (float("nan"), float("inf"), float("nan")), (5.0, 0.0, 7.0)]
    for iteration, (g, adversarial_sq, reconstruction_sq) in enumerate(steps, start=1):
        reporter.record(3, iteration, dict(
            phase_metrics(3, 0.5), grad_g=g, grad_d=2.0 * iteration,
            grad_out_adversarial_sq=adversarial_sq, grad_out_reconstruction_sq=reconstruction_sq),
            False)
    row = reporter.history[-1]
    assert row["grad_g"] == pytest.approx(4.0)  # (3 + 5) / 2: the skipped step left out
    assert row["grad_d"] == pytest.approx(4.0)  # (2 + 4 + 6) / 3
    assert row["grad_out_adversarial"] == pytest.approx(np.sqrt(8.0))
    assert row["grad_out_reconstruction"] == pytest.approx(np.sqrt(8.0))
    assert row["adversarial_share"] == pytest.approx(0.5)
    assert "grad_out_adversarial_sq" not in row
    reporter.save_history()
    saved = read_rows(tmp_path / "grids" / "losses.csv")[0]
    assert float(saved["adversarial_share"]) == pytest.approx(0.5)


def test_rewind_drops_the_rows_after_the_iteration(reporter_parts, tmp_path):
    reporter = reporter_parts(summary_every=1, sample_every=100, tc=3, td=2, total_iters=6)
    for iteration in range(1, 6):
        phase = reporter.config.phase(iteration - 1)
        reporter.record(phase, iteration, phase_metrics(phase, float(iteration)), False)
    assert [int(r["iteration"]) for r in reporter.history] == [1, 2, 3, 4, 5]
    reporter.rewind(3)
    assert [int(r["iteration"]) for r in reporter.history] == [1, 2, 3]
    reporter.save_history()
    assert [r["iteration"] for r in read_rows(tmp_path / "grids" / "losses.csv")] == [
        "1", "2", "3"]
    # A resumed run reads losses.csv and forgets what was recorded after its start.
    resumed = reporter_parts(start=2, summary_every=1, sample_every=100, tc=3, td=2,
                             total_iters=6)
    assert [r["iteration"] for r in resumed.history] == ["1", "2"]
    resumed.rewind(0)
    assert resumed.history == []


def test_graph_is_exported_once_per_phase(reporter_parts, tmp_path):
    reporter = reporter_parts()

    @tf.function
    def step(x):
        return x * 2.0

    for phase, iteration in [(1, 1), (1, 2), (2, 3)]:
        with reporter.graph(phase, iteration):
            step(tf.constant(float(iteration)))
    reporter.writer.flush()
    events = read_events(tmp_path / "events")
    assert graph_tags(events) == ["phase1_step", "phase2_step"]
    assert [e.step for e in events.Tensors("phase1_step")] == [1]


def test_other_workers_write_nothing(reporter_parts, tmp_path):
    reporter = reporter_parts(chief=False, summary_every=1, sample_every=1, tc=1, td=1,
                              total_iters=3)
    reporter.record(1, 1, phase_metrics(1, 1.0), True)
    reporter.save_history()
    assert sorted(os.listdir(tmp_path)) == ["photos"]


# ---------------------------------------------------------------------------------------------
# Loss curves


def test_plot_losses_draws_only_the_phases_that_started(tmp_path):
    history = [dict({k: "" for k in report.HISTORY_FIELDS}, iteration=i, phase=1,
                    reconstruction=1.0 / i, images_per_second=5.0) for i in (1, 2)]
    history += [dict(iteration=i, phase=3, reconstruction=0.3, adversarial=0.7,
                     discriminator=1.2, d_real=0.6, d_completed=0.4, images_per_second=5.0)
                for i in (5, 6)]
    report.plot_losses(history, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["losses_phase1.png", "losses_phase3.png"]
    # Phase 3 shows five curves side by side, phase 1 one.
    assert Image.open(tmp_path / "losses_phase3.png").size[0] > \
        Image.open(tmp_path / "losses_phase1.png").size[0]
    report.plot_losses([], str(tmp_path / "none"))  # nothing started: nothing drawn
    assert not os.path.exists(tmp_path / "none")


# ---------------------------------------------------------------------------------------------
# The held-out evaluation, directly


def test_realism_and_the_photos_own_swd_and_an_older_eval_csv(reporter_parts, tmp_path):
    """Three held-out photos: the photos' own SWD in a run of its own, logged at every
    evaluation; a resumed run's eval.csv written before the realism columns keeps its rows,
    their new cells empty, and its curves still draw."""
    old_fields = ["iteration", "phase", "method", *evaluate.COLUMNS]
    old = [{"iteration": 1, "phase": 1, "method": method, **{c: 0.5 for c in evaluate.COLUMNS}}
           for method in ("model", "model + blend", "OpenCV Telea")]
    report.write_csv(str(tmp_path / "grids" / "eval.csv"), old_fields, old)
    reporter = reporter_parts(start=1, held_out=3)
    reporter.evaluate(1, 2)
    reporter.evaluate(1, 3)
    rows = read_rows(tmp_path / "grids" / "eval.csv")
    assert list(rows[0]) == report.EVAL_FIELDS
    assert [(r["iteration"], r["method"]) for r in rows] == [
        (str(i), m) for i in (1, 2, 3) for m in ("model", "model + blend", "OpenCV Telea")
        + ((report.FLOOR,) if i > 1 else ())]
    assert all(r[c] == "" for r in rows[:3] for c in realism.COLUMNS)
    assert float(rows[0]["l1_hole"]) == 0.5
    items = reporter.held_out
    floor, _ = realism.swd_floor([i["image"] for i in items], [i["hole"] for i in items])
    floors = [r for r in rows if r["method"] == report.FLOOR]
    assert [float(r["swd_hole"]) for r in floors] == [pytest.approx(floor, abs=1e-6)] * 2
    assert all(r["l1_hole"] == "" for r in floors)
    events = read_events(tmp_path / "events" / "eval_floor")
    assert [e.step for e in events.Tensors("eval/swd")] == [2, 3]
    assert "eval/l1_hole" not in events.Tags()["tensors"]
    model = [r for r in rows[3:] if r["method"] == "model"]
    assert all(0 < float(r["swd_hole"]) and 0 < float(r["sharpness_hole"]) for r in model)
    assert Image.open(tmp_path / "grids" / "eval.png").size[0] > 600


def test_the_evaluation_chart_marks_only_the_boundaries_and_drops_its_curves_reached():
    """A phase 1 planned far longer than it has run: no phase line, no drop ahead of the last
    evaluation to stretch the axis; those reached are marked."""
    config = cfg.resolve(cfg.preset_config("cpu"), dict(tc=35500, td=1000, total_iters=45500,
                                                        lr_drops=[2500, 4000]))
    rows = [{"iteration": str(n)} for n in (500, 1000, 3000)]
    assert report.chart_marks(rows, config) == ([], [2500])
    rows += [{"iteration": str(n)} for n in (35500, 36500, 37000)]
    assert report.chart_marks(rows, config) == ([(35500, "phase 2"), (36500, "phase 3")],
                                                [2500, 4000])
    assert report.chart_marks([], config) == ([], [])
