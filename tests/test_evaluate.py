"""The metrics against hand-computed values, and evaluate.py as a user runs it."""
import csv
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import complete
import data_loader
import engine
import evaluate
import realism
import session
from conftest import run_main, run_script

MEAN_PIXEL = (0.4, 0.5, 0.6)  # make_session's default


# ---------------------------------------------------------------------------------------------
# Metrics


def test_l1_l2_psnr_by_hand():
    target = np.zeros((2, 2, 3))
    prediction = np.zeros((2, 2, 3))
    prediction[0, 0] = [0.5, 0.25, 0.0]   # the only wrong pixel
    prediction[1, 1] = [0.1, 0.1, 0.1]
    mask = np.array([[True, False], [False, False]])
    assert evaluate.l1(prediction, target) == pytest.approx((0.75 + 0.3) / 12)
    assert evaluate.l2(prediction, target) == pytest.approx((0.25 + 0.0625 + 0.03) / 12)
    assert evaluate.psnr(prediction, target) == pytest.approx(
        10 * math.log10(12 / (0.25 + 0.0625 + 0.03)))
    # Masked: the three channels of the masked pixel only; (H, W, 1) masks work too.
    assert evaluate.l1(prediction, target, mask) == pytest.approx(0.75 / 3)
    assert evaluate.l2(prediction, target, mask[..., None]) == pytest.approx(0.3125 / 3)
    assert evaluate.psnr(prediction, target, mask) == pytest.approx(10 * math.log10(3 / 0.3125))
    assert evaluate.l1(prediction, target, ~mask) == pytest.approx(0.3 / 9)


def test_psnr_of_a_perfect_match_is_capped():
    image = np.full((2, 2, 3), 0.3)
    assert evaluate.psnr(image, image) == evaluate.MAX_PSNR
    assert evaluate.l1(image, image) == evaluate.l2(image, image) == 0.0


def test_ssim_identical_is_one_and_the_mask_counts_only_its_pixels():
    rng = np.random.default_rng(0)
    target = rng.uniform(size=(32, 32, 3))
    assert evaluate.ssim(target, target) == pytest.approx(1.0)
    prediction = target.copy()
    prediction[:8, :8] = 0.0  # damage the top-left corner only
    far = np.zeros((32, 32), bool)
    far[20:, 20:] = True      # more than a 7 x 7 window away from the damage
    near = ~far
    assert evaluate.ssim(prediction, target) < 0.99
    assert evaluate.ssim(prediction, target, far) == pytest.approx(1.0)
    assert evaluate.ssim(prediction, target, near) < evaluate.ssim(prediction, target)
    # Images smaller than the 7 x 7 window still work.
    assert evaluate.ssim(target[:5, :6], target[:5, :6]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# evaluate.py as a user runs it


def run_evaluate(root, capsys, *args):
    """evaluate.py in process: (what it printed, metrics.json)."""
    code = run_main(evaluate, ["--session", "s", "--data-dir", "photos", *args], root)
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(os.path.join(root, session.eval_dir("s"), "metrics.json")) as f:
        return out, json.load(f)


@pytest.fixture
def root(tmp_path, make_photos, make_session):
    make_photos(tmp_path / "photos", 4, size=(40, 48))
    make_session(tmp_path)
    return tmp_path


def test_evaluation_writes_the_table_and_figures_with_consistent_numbers(root, capsys):
    stdout, report = run_evaluate(root, capsys, "--count", "3")
    folder = root / session.eval_dir("s")
    for name in ("metrics.csv", "metrics.json", "metrics.png", "examples.png", "crops.png"):
        assert (folder / name).stat().st_size > 0
        assert os.path.join(session.eval_dir("s"), name) in stdout
    assert Image.open(folder / "metrics.png").size == (1440, 1440)  # 4 rows of 4 charts
    # The printed table: header line naming the settings, a row per method.
    assert "session 's': 3 photos" in stdout and "rect holes" in stdout
    runs = "onnx" if engine.available()[0] else "tf"
    assert f"seed 0, engine {runs}" in stdout and report["settings"]["engine"] == runs
    for method in evaluate.METHODS:
        assert any(line.startswith(method + "  ") for line in stdout.splitlines())
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(evaluate.METHODS)
    assert all(math.isfinite(float(r[c])) for r in rows for c in evaluate.COLUMNS)
    assert float(rows[0]["l1_hole"]) == pytest.approx(report["mean"]["model"]["l1_hole"])
    assert list(rows[0])[-len(realism.COLUMNS):] == list(realism.COLUMNS)
    for row in rows:  # a measure that cannot be had (nan) is null in the JSON
        for column in realism.COLUMNS:
            saved = report["mean"][row["method"]][column]
            assert float(row[column]) == pytest.approx(math.nan if saved is None else saved,
                                                       nan_ok=True)

    # The photos in sorted order, with their seeded holes.
    photos = report["photos"]
    assert ([str(root / p["path"]) for p in photos]
            == data_loader.find_images([str(root / "photos")])[:3])
    size = report["settings"]["image_size"]
    per_photo = report["per_photo"]
    images, holes = [], []
    for i, photo in enumerate(photos):
        mask, hole = data_loader.random_mask(np.random.default_rng([0, i]), size,
                                             report["settings"]["hole_min"],
                                             report["settings"]["hole_max"], "rect")
        assert photo["hole"] == hole.tolist() and photo["hole_pixels"] == int(mask.sum())
        # Mean pixel fill, by hand: the MSE inside the hole, hence its PSNR.
        photo_u8 = np.round(data_loader.center_crop(
            data_loader.load_rgb(str(root / photo["path"]), size), size) * 255).astype(np.uint8)
        image = photo_u8 / 255
        images.append(photo_u8)
        holes.append(mask[..., 0] > 0)
        fill = np.round(np.array(MEAN_PIXEL) * 255) / 255
        mse = np.mean((image[mask[..., 0] > 0] - fill) ** 2)
        assert per_photo["mean pixel"]["l2_hole"][i] == pytest.approx(mse, rel=1e-9)
        assert per_photo["mean pixel"]["psnr_hole"][i] == pytest.approx(10 * math.log10(1 / mse))
        # Every method copies the photo outside the hole: the image-wide L1 is the hole's,
        # diluted by the hole's share of the pixels.
        fraction = photo["hole_pixels"] / size ** 2
        for method in evaluate.METHODS:
            scores = per_photo[method]
            assert scores["l1_image"][i] == pytest.approx(scores["l1_hole"][i] * fraction,
                                                          abs=1e-6)
            assert scores["l1_image"][i] <= scores["l1_hole"][i]
    for method in evaluate.METHODS:
        assert all(len(values) == 3 for values in per_photo[method].values())
        assert report["mean"][method]["psnr_hole"] == pytest.approx(
            np.mean(per_photo[method]["psnr_hole"]))
        assert len(report["swd_levels"][method]) == 2  # 32 px: levels of 32 and 16
        assert report["mean"][method]["swd_hole"] == pytest.approx(
            np.mean(report["swd_levels"][method]))
    _assert_realism_of_the_mean_fill(stdout, report, images, holes)


def _assert_realism_of_the_mean_fill(stdout, report, images, holes):
    """The realism columns: the mean-pixel fill's measured again from the photos, and the
    table's second block and the photos' own SWD as printed."""
    filled = [np.where(hole[..., None], np.round(np.array(MEAN_PIXEL) * 255).astype(np.uint8),
                       image) for image, hole in zip(images, holes)]
    flat = report["mean"]["mean pixel"]
    assert flat["swd_hole"] == pytest.approx(realism.swd(filled, images, holes)[0])
    # Flat in the hole: no gradient, no checkerboard, no stripes, and no excess to speak of
    # (null).
    assert flat["sharpness_hole"] == flat["checkerboard_hole"] == flat["stripes_hole"] == 0.0
    assert flat["checkerboard_excess"] is None and flat["stripes_excess"] is None
    assert report["per_photo"]["mean pixel"]["sharpness_hole"] == [0.0] * 3
    floor, levels = realism.swd_floor(images, holes)
    assert report["swd_floor"] == pytest.approx(floor) and len(report["swd_floor_levels"]) == 2
    assert (f"SWD of the photos against themselves (two disjoint halves): {floor:.2f}"
            in stdout.splitlines())
    header = next(line for line in stdout.splitlines() if "SWD hole" in line)
    assert header.split()[:5] == ["method", "SWD", "hole", "sharpness", "checkerboard"]
    row = next(line for line in stdout.splitlines()[stdout.splitlines().index(header):]
               if line.startswith("mean pixel  "))
    assert row.split()[2:] == [f"{flat['swd_hole']:.2f}", "0.000", "0.000", "nan", "0.000",
                               "nan", f"{flat['colour_hole']:.2f}", "0.00"]
    # The same colour in every hole follows none of the photos' colours: every slope is 0.
    assert report["colour_slopes"]["mean pixel"] == {
        "luminance": 0.0, "red-blue": 0.0, "green-magenta": 0.0}
    assert flat["colour_slope"] == 0.0
    # The colour distance of the mean-pixel fill: its colour against each hole's own, in CIELAB.
    assert flat["colour_hole"] == pytest.approx(realism.colour_distance(filled, images, holes)[0])
    assert 1 < flat["colour_hole"] < 100


def test_same_seed_same_numbers_other_seed_other_holes(root, capsys):
    _, first = run_evaluate(root, capsys, "--count", "2", "--seed", "3")
    _, again = run_evaluate(root, capsys, "--count", "2", "--seed", "3")
    assert again == first
    _, other = run_evaluate(root, capsys, "--count", "2", "--seed", "4")
    assert [p["hole"] for p in other["photos"]] != [p["hole"] for p in first["photos"]]
    assert other["per_photo"] != first["per_photo"]


def test_free_form_holes(root, capsys):
    stdout, report = run_evaluate(root, capsys, "--count", "2", "--hole-shape", "free")
    assert "free holes" in stdout and report["settings"]["hole_shape"] == "free"
    for i, photo in enumerate(report["photos"]):
        mask, _ = data_loader.random_mask(np.random.default_rng([0, i]), 32, 4, 8, "free")
        y, x, h, w = photo["hole"]
        assert photo["hole_pixels"] == int(mask.sum()) < h * w  # strokes, not the whole box
    assert all(math.isfinite(v) for columns in report["per_photo"].values()
               for values in columns.values() for v in values)


def test_layers_shows_where_the_two_pixel_period_comes_from(root, capsys):
    """--layers: one row per conv-bn-relu row of Table 1 and the output, at its resolution,
    printed and in layers.csv; the transposed convolutions of an untrained network (the paper's
    initial kernels) make a two-pixel period that the layer before them does not have."""
    out, _ = run_evaluate(root, capsys, "--count", "4", "--layers", "--engine", "tf")
    with open(root / session.eval_dir("s") / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == [f"relu{i}" for i in range(1, 17)] + ["conv17"]
    assert [int(r["size"]) for r in rows] == [32] + [16] * 2 + [8] * 9 + [16] * 2 + [32] * 3
    shares = {r["layer"]: (float(r["hole"]), float(r["outside"])) for r in rows}
    assert all(0 <= outside <= 1 for _, outside in shares.values())
    assert all(0 <= shares[r["layer"]][0] <= 1 for r in rows if int(r["size"]) >= 16)
    assert shares["relu13"][1] > 2 * shares["relu12"][1]
    assert "Two-pixel period by layer" in out
    assert any(line.split()[:2] == ["relu13", "16"] for line in out.splitlines())
    assert os.path.join(session.eval_dir("s"), "layers.csv") in out


def test_several_holes_per_photo(root, capsys):
    """--max-holes 3: 1 to 3 holes a photo, the first the one-hole run's, scored over their
    union; --max-holes 1 is the default run exactly."""
    out, default = run_evaluate(root, capsys, "--count", "4")
    assert default["settings"]["max_holes"] == 1 and "px), seed 0" in out
    _, one = run_evaluate(root, capsys, "--count", "4", "--max-holes", "1")
    assert one == default
    out, several = run_evaluate(root, capsys, "--count", "4", "--max-holes", "3")
    assert "rect holes (4-8 px, 1 to 3 per photo), seed 0" in out
    assert several["settings"]["max_holes"] == 3
    counts, size = [], several["settings"]["image_size"]
    for i, (alone, photo) in enumerate(zip(default["photos"], several["photos"])):
        assert alone["holes"] == [alone["hole"]] and photo["hole"] == alone["hole"]
        assert photo["holes"][0] == alone["hole"] and 1 <= len(photo["holes"]) <= 3
        union = np.zeros((size, size), bool)
        for y, x, h, w in photo["holes"]:
            union[y:y + h, x:x + w] = True
        assert photo["hole_pixels"] == int(union.sum()) >= alone["hole_pixels"]
        counts.append(len(photo["holes"]))
        # Every method copies the photo outside the holes: the image-wide L1 is the L1 over
        # the union of the holes, diluted by its share of the pixels.
        for method in evaluate.METHODS:
            scores = several["per_photo"][method]
            assert scores["l1_image"][i] == pytest.approx(
                scores["l1_hole"][i] * photo["hole_pixels"] / size ** 2, abs=1e-6)
    more = [i for i, n in enumerate(counts) if n > 1 and several["photos"][i]["hole_pixels"]
            > default["photos"][i]["hole_pixels"]]
    assert more and all(several["per_photo"]["mean pixel"]["l2_hole"][i]
                        != default["per_photo"]["mean pixel"]["l2_hole"][i] for i in more)
    single = [i for i, n in enumerate(counts) if n == 1]
    assert single  # seed 0 draws 1, 2, 1 and 2 holes
    for method in evaluate.METHODS:  # a photo that drew one hole scores as in the default run
        for column, values in several["per_photo"][method].items():
            assert [values[i] for i in single] == [
                default["per_photo"][method][column][i] for i in single], (method, column)


@pytest.mark.parametrize("args, message", [
    (["--session", "nope", "--data-dir", "photos"], "error: --session nope"),
    (["--session", "s", "--data-dir", "missing"], "error: --data-dir missing: not a folder"),
    (["--session", "s", "--data-dir", "photos", "--count", "0"], "error: --count 0"),
    (["--session", "s", "--data-dir", "photos", "--max-holes", "0"],
     "error: --max-holes 0: expected at least 1"),
])
def test_bad_input_one_line_exit_2_nothing_written(root, capsys, args, message):
    assert run_main(evaluate, args, root) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
    assert not (root / session.results_dir("s")).exists()


def test_out_puts_the_table_and_figures_elsewhere_and_refuses_a_file(root, capsys):
    stdout, _ = run_evaluate(root, capsys, "--count", "1")  # the default folder, for comparison
    default = json.loads((root / session.eval_dir("s") / "metrics.json").read_text())
    assert run_main(evaluate, ["--session", "s", "--data-dir", "photos", "--count", "1",
                               "--out", "scores/first"], root) == 0
    assert "Wrote scores/first/metrics.csv, scores/first/metrics.json" in capsys.readouterr().out
    assert sorted(os.listdir(root / "scores" / "first")) == [
        "crops.png", "examples.png", "metrics.csv", "metrics.json", "metrics.png"]
    moved = json.loads((root / "scores" / "first" / "metrics.json").read_text())
    assert moved["mean"] == default["mean"]
    (root / "a_file").write_text("")
    assert run_main(evaluate, ["--session", "s", "--data-dir", "photos", "--out", "a_file/x"],
                    root) == 2
    assert capsys.readouterr().err == (
        "error: --out a_file/x: cannot write there (Not a directory)\n")


def test_the_command_line_exits_2_without_traceback(root):
    result = run_script("evaluate.py", ["--session", "s", "--data-dir", "photos", "--seed", "-1"],
                        cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --seed -1: expected a non-negative integer"


def test_an_older_checkpoint_of_a_session(copy_training, capsys):
    """--iteration N scores the checkpoint of iteration N (the tiny session's end of phase 1),
    and says so; the newest one scores differently."""
    def model_l1(args):
        assert run_main(evaluate, ["--session", "tiny", "--data-dir", "photos", *args],
                        copy_training) == 0
        with open(copy_training / session.eval_dir("tiny") / "metrics.json") as f:
            saved = json.load(f)
        return saved["settings"]["iteration"], saved["mean"]["model"]["l1_hole"]
    iteration, at_2 = model_l1(["--iteration", "2"])
    assert iteration == 2 and "session 'tiny' at iteration 2: 5 photos" in capsys.readouterr().out
    assert model_l1([])[1] != at_2
    capsys.readouterr()
    assert run_main(evaluate, ["--session", "tiny", "--iteration", "3", "--data-dir", "photos"],
                    copy_training) == 2
    assert capsys.readouterr().err == (
        "error: --session tiny: no checkpoint of iteration 3; it has 2, 4, 5\n")


def test_crops_show_the_holes_enlarged_pixel_for_pixel(tmp_path):
    """Each cell: the square around the hole (its larger side plus 8 px each way, moved inside
    the photo), each pixel repeated 2 x 2; the columns under a title strip of 22 px."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    hole = np.zeros((32, 40), bool)
    hole[2:8, 30:40] = True  # 6 x 10 at the top-right corner: the square is moved inside
    results = {method: np.full_like(image, 10 * i) for i, method in enumerate(evaluate.METHODS)}
    example = ("photo.png", image, hole, results)
    evaluate.plot_crops(str(tmp_path / "crops.png"), [example, example])
    side = 10 + 2 * 8
    np.testing.assert_array_equal(evaluate.crop_around(image, hole, side), image[0:26, 14:40])
    grid = np.asarray(Image.open(tmp_path / "crops.png").convert("RGB"))
    cell, columns = 2 * side, len(evaluate.METHODS) + 2
    assert grid.shape == (22 + 2 * cell + 2, columns * (cell + 2) - 2, 3)
    truth = grid[22:22 + cell, (columns - 1) * (cell + 2):]
    np.testing.assert_array_equal(truth, np.repeat(np.repeat(image[0:26, 14:40], 2, 0), 2, 1))
    np.testing.assert_array_equal(grid[22:22 + cell, cell + 2:2 * cell + 2], 0)  # "model"


def test_hole_sets_score_each_photo_with_the_holes_of_several_seeds(root, capsys):
    """--hole-sets 3: set k holds the holes that --seed 1 + k gives alone, the photos in the
    same order in each set; the means and the realism measures pool the 3 x 2 fills."""
    singles = [run_evaluate(root, capsys, "--count", "2", "--seed", str(seed))[1]
               for seed in (1, 2, 3)]
    out, pooled = run_evaluate(root, capsys, "--count", "2", "--seed", "1", "--hole-sets", "3")
    assert ": 2 photos (32x32 centre crops)" in out
    assert "seeds 1-3 (3 hole sets, 6 fills), engine" in out
    assert pooled["settings"]["hole_sets"] == 3 and pooled["settings"]["seed"] == 1
    assert [p["hole_set"] for p in pooled["photos"]] == [0, 0, 1, 1, 2, 2]
    assert [p["path"] for p in pooled["photos"]] == [p["path"] for p in singles[0]["photos"]] * 3
    assert [p["hole"] for p in pooled["photos"]] == [p["hole"] for single in singles
                                                      for p in single["photos"]]
    assert len({tuple(p["hole"]) for p in pooled["photos"]}) > 2  # other holes, set to set
    for method in evaluate.METHODS:
        for column in evaluate.COLUMNS:
            values = [v for single in singles for v in single["per_photo"][method][column]]
            assert pooled["per_photo"][method][column] == pytest.approx(values, abs=1e-12)
            assert pooled["mean"][method][column] == pytest.approx(np.mean(values))
    # The realism measures are of the whole set: not the mean of the three sets' values.
    swd = pooled["mean"]["mean pixel"]["swd_hole"]
    assert swd != pytest.approx(np.mean([s["mean"]["mean pixel"]["swd_hole"] for s in singles]))
    # One hole set is the default run.
    _, default = run_evaluate(root, capsys, "--count", "2", "--seed", "1")
    _, one = run_evaluate(root, capsys, "--count", "2", "--seed", "1", "--hole-sets", "1")
    assert one["mean"] == default["mean"] and one["photos"] == default["photos"]


def test_validation_scores_the_photos_the_session_kept_aside(root, capsys):
    """--validation: the photos the session's --val-split kept aside from its --data-dir (or
    its --val-dir), written to results/NAME/eval-validation beside the other evaluations."""
    path = root / session.session_file("s")
    saved = json.loads(path.read_text())
    saved["config"].update(data_dir=["photos"], val_split=2)
    path.write_text(json.dumps(saved))
    assert run_main(evaluate, ["--session", "s", "--validation", "--hole-sets", "2"], root) == 0
    out = capsys.readouterr().out
    assert ("session 's', its validation photos (--val-split 2 of --data-dir): 2 photos"
            in out)
    folder = root / (session.eval_dir("s") + "-validation")
    assert os.path.join(session.eval_dir("s") + "-validation", "metrics.json") in out
    report = json.loads((folder / "metrics.json").read_text())
    files = data_loader.find_images([str(root / "photos")])
    kept = data_loader.split_validation(files, 0, 2)[1]
    assert [str(root / p["path"]) for p in report["photos"]] == kept * 2
    assert report["settings"]["validation"] and report["settings"]["data_dir"] == ["photos"]
    assert not (root / session.eval_dir("s")).exists()
    # The same photos given as a folder score the same.
    os.makedirs(root / "kept")
    for file in kept:
        os.symlink(file, root / "kept" / os.path.basename(file))
    _, direct = run_evaluate(root, capsys, "--data-dir", "kept", "--hole-sets", "2")
    assert direct["mean"] == report["mean"]
    # With --val-dir, that folder's photos.
    saved["config"].update(val_dir="kept")
    path.write_text(json.dumps(saved))
    assert run_main(evaluate, ["--session", "s", "--validation"], root) == 0
    assert "its validation photos (--val-dir kept): 2 photos" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--session", "s", "--data-dir", "photos", "--hole-sets", "0"],
     "error: --hole-sets 0: expected at least 1"),
    (["--validation"], "error: --validation: expected --session NAME, whose validation photos"),
    (["--session", "s", "--validation", "--data-dir", "photos"],
     "error: --validation and --data-dir: give one"),
    (["--session", "s"], "error: --data-dir: expected folder(s) of photos (or --validation"),
])
def test_which_photos_one_line_exit_2_nothing_written(root, capsys, args, message):
    assert run_main(evaluate, args, root) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
    assert not (root / session.results_dir("s")).exists()


def test_several_checkpoints_score_on_the_same_holes_in_one_table(copy_training, capsys):
    """--iteration 2 5: each checkpoint as evaluate.py scores it alone (the same photos and
    holes), the network the session started from (--init-from) and the baselines, in one
    table and checkpoints.csv."""
    root = copy_training
    alone = {}
    for iteration in (2, 5):
        assert run_main(evaluate, ["--session", "tiny", "--data-dir", "photos", "--iteration",
                                   iteration], root) == 0
        alone[iteration] = json.loads(
            (root / session.eval_dir("tiny") / "metrics.json").read_text())["mean"]
    # As if the session had started from an export of its checkpoint 2.
    assert run_main(complete, ["--session", "tiny", "--iteration", 2, "--export", "start"],
                    root) == 0
    path = root / session.session_file("tiny")
    saved = json.loads(path.read_text())
    saved["config"]["init_from"] = "start"
    path.write_text(json.dumps(saved))
    start = alone[2]["model"]
    capsys.readouterr()
    assert run_main(evaluate, ["--session", "tiny", "--data-dir", "photos", "--iteration", 2, 5],
                    root) == 0
    out = capsys.readouterr().out
    assert "session 'tiny' at iterations 2, 5: 5 photos" in out
    with open(root / session.eval_dir("tiny") / "checkpoints.csv") as f:
        rows = list(csv.DictReader(f))
    started = f"--init-from {saved['config']['init_from']}"
    assert [(r["method"], r["iteration"]) for r in rows] == [
        (started, ""), ("OpenCV Telea", ""), ("OpenCV Navier-Stokes", ""), ("model", "2"),
        ("model + blend", "2"), ("model", "5"), ("model + blend", "5")]
    for row in rows:
        scored = (start if row["method"] == started else alone[int(row["iteration"])][row["method"]]
                  if row["iteration"] else alone[5][row["method"]])
        for column in ("l1_hole", "psnr_hole", "ssim_image", "swd_hole", "sharpness_hole"):
            assert float(row[column]) == pytest.approx(scored[column], rel=1e-6), (row, column)
    lines = out.splitlines()
    best = min((r for r in rows if r["method"] == "model"), key=lambda r: float(r["l1_hole"]))
    assert f"Lowest hole L1 of the model: iteration {best['iteration']}" in out
    assert any(line.split()[:2] == ["model", "5"] for line in lines)
    assert f"Wrote {os.path.join(session.eval_dir('tiny'), 'checkpoints.csv')}" in lines
    # --layers looks at one network.
    assert run_main(evaluate, ["--session", "tiny", "--data-dir", "photos", "--iteration", 2, 5,
                               "--layers"], root) == 2
    assert capsys.readouterr().err == "error: --layers: give one --iteration, not several\n"


# ---------------------------------------------------------------------------------------------
# --full-size: photos at their own resolution, holes sized to them, the model at several scales


@pytest.fixture
def full_root(tmp_path, make_photos, make_session):
    make_photos(tmp_path / "photos", 2, size=(90, 120), seed=1)
    make_photos(tmp_path / "photos" / "tall", 2, size=(150, 70), seed=2)
    make_session(tmp_path)
    return tmp_path


def test_full_size_scores_photos_at_their_own_size_at_each_scale(full_root, capsys):
    """Four photos of two sizes, one hole each whose box sides are 20-40 % of the photo's
    shorter side; the model native and auto (each raw and blended) beside the baselines, every
    fill the photo outside its hole; the header says so; results/s/eval-full."""
    code = run_main(evaluate, ["--session", "s", "--data-dir", "photos", "--full-size",
                               "--scale", "native", "auto", "--hole-fraction", "0.2", "0.4"],
                    full_root)
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(os.path.join(full_root, session.eval_dir("s") + "-full", "metrics.json")) as f:
        metrics = json.load(f)
    methods = ["model (native)", "model (native) + blend", "model (auto)",
               "model (auto) + blend", "mean pixel", "OpenCV Telea", "OpenCV Navier-Stokes"]
    assert metrics["methods"] == methods and list(metrics["mean"]) == methods
    assert "4 photos at their own resolution (at most 2000000 pixels), rect holes (20%-40% of" \
        " the shorter side)" in out
    assert metrics["settings"]["full_size"] and metrics["settings"]["scales"] == ["native", "auto"]
    for photo in metrics["photos"]:
        y, x, h, w = photo["hole"]
        side = 70 if "tall" in photo["path"] else 90
        assert round(0.2 * side) <= min(h, w) and max(h, w) <= round(0.4 * side)
        assert photo["hole_pixels"] == h * w
    items = evaluate.full_size_items(data_loader.find_images([str(full_root / "photos")]), 4,
                                     "rect", 0, MEAN_PIXEL, 2_000_000, (0.2, 0.4))
    assert sorted(item["image"].shape for item in items) == [(90, 120, 3)] * 2 + [(150, 70, 3)] * 2
    # Auto and native differ where a hole is wider than the session's (4-8 px holes).
    assert metrics["per_photo"]["model (auto)"]["l1_hole"] != \
        metrics["per_photo"]["model (native)"]["l1_hole"]
    assert os.path.isfile(os.path.join(full_root, session.eval_dir("s") + "-full", "crops.png"))


def test_full_size_refine_says_how_the_fills_came_back(full_root, capsys):
    """--resample refine: the header and metrics.json say it; a fill other than bicubic's,
    scored on the same holes."""
    fills = {}
    for way in ("bicubic", "refine"):
        code = run_main(evaluate, ["--session", "s", "--data-dir", "photos", "--full-size",
                                   "--scale", "auto", "--hole-fraction", "0.2", "0.4",
                                   "--resample", way, "--out", way], full_root)
        out, err = capsys.readouterr()
        assert code == 0, err
        with open(os.path.join(full_root, way, "metrics.json")) as f:
            metrics = json.load(f)
        assert metrics["settings"]["resample"] == way
        fills[way] = metrics["per_photo"]["model (auto)"]["l1_hole"]
        assert metrics["per_photo"]["OpenCV Telea"]["l1_hole"] == pytest.approx(
            fills.setdefault("telea", metrics["per_photo"]["OpenCV Telea"]["l1_hole"]))
    assert "fills completed smaller brought back by bicubic, then refined by the network at" \
        " full size," in out
    assert fills["refine"] != fills["bicubic"]


def test_full_size_items_are_seeded_and_shrunk_to_max_pixels(full_root):
    files = data_loader.find_images([str(full_root / "photos")])
    first = evaluate.full_size_items(files, 4, "free", 3, MEAN_PIXEL, 5000, (0.1, 0.3))
    again = evaluate.full_size_items(files, 4, "free", 3, MEAN_PIXEL, 5000, (0.1, 0.3))
    for a, b in zip(first, again):
        assert np.array_equal(a["hole"], b["hole"]) and np.array_equal(a["image"], b["image"])
        assert a["image"].shape[0] * a["image"].shape[1] <= 5000
        assert np.array_equal(a["masked"][~a["hole"]], a["image"][~a["hole"]])
    other = evaluate.full_size_items(files, 4, "free", 4, MEAN_PIXEL, 5000, (0.1, 0.3))
    assert any(not np.array_equal(a["hole"], b["hole"]) for a, b in zip(first, other))


@pytest.mark.parametrize("args, message", [
    (["--full-size", "--hole-fraction", "0.3", "0.1"],
     "error: --hole-fraction 0.3 0.1: expected 0 < LOW <= HIGH < 1"),
    (["--full-size", "--max-holes", "2"],
     "error: --max-holes: not with --full-size, which draws one hole a photo"),
    (["--scale", "auto", "3"],
     "error: --scale 3: expected auto, native or a factor in (0, 1], such as 0.5"),
    (["--full-size", "--max-pixels", "0"], "error: --max-pixels 0: expected a positive number"),
])
def test_full_size_flags_one_line_exit_2_nothing_written(full_root, capsys, args, message):
    assert run_main(evaluate, ["--session", "s", "--data-dir", "photos", *args], full_root) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [message]
    assert not (full_root / session.results_dir("s")).exists()
