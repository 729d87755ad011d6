"""figures.py: the held-out curve and the grid of completions at chosen iterations."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import complete
import evaluate
import exports
import figures
import session
import train
from conftest import run_main, working_directory

SIZE = 32  # the tiny session's image size


def cell(grid, row, column):
    top, left = figures.HEADER + row * (SIZE + figures.GAP), column * (SIZE + figures.GAP)
    return grid[top:top + SIZE, left:left + SIZE]


def test_the_grid_shows_each_iteration_pixel_for_pixel(copy_training, tmp_path, capsys):
    # The tiny session: phases of 2, 2 and 1 iterations; its held-out photos: all five photos.
    assert run_main(figures, ["--session", "tiny", "--data-dir", "photos", "--rows", "0,3",
                              "--out", "figs"], copy_training) == 0
    assert capsys.readouterr().out.strip() == ("Wrote figs/tiny_completions.jpg,"
                                               " figs/tiny_completions_crops.jpg and"
                                               " figs/tiny_eval.png")
    jpeg = Image.open(copy_training / "figs" / "tiny_completions.jpg")
    # masked | iteration 2 (end of phase 1) | iteration 5 | 5 + blend | ground truth; two rows
    assert jpeg.size == (5 * (SIZE + 2) - 2, figures.HEADER + 2 * (SIZE + 2) - 2)
    assert Image.open(copy_training / "figs" / "tiny_eval.png").size[0] > 600

    # The same grid as PNG, lossless: every cell is what the network of its iteration gives.
    with working_directory(copy_training):
        network2, mean_pixel, config = session.load_completion_network("tiny", 2)
        network5, _, _ = session.load_completion_network("tiny", 5)
        files = figures.held_out_files(config, ["photos"])
        items = evaluate.held_out(files, config, 4, config.hole_shape, evaluate.DEFAULT_SEED,
                                  mean_pixel)
        items = [items[0], items[3]]
        done = figures.completions("tiny", [2, 5], items, mean_pixel)
        figures.grid_figure(str(tmp_path / "grid.png"), items, done, config)
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert grid.shape == (figures.HEADER + 2 * SIZE + 2, 5 * SIZE + 8, 3)
    for row, item in enumerate(items):
        hole = item["hole"]
        np.testing.assert_array_equal(cell(grid, row, 0)[hole], 255)
        np.testing.assert_array_equal(cell(grid, row, 0)[~hole], item["image"][~hole])
        for column, network in ((1, network2), (2, network5)):
            expected, _ = complete.complete(network, item["masked"], hole, mean_pixel)
            np.testing.assert_array_equal(cell(grid, row, column), expected)
        np.testing.assert_array_equal(
            cell(grid, row, 3), complete.poisson_blend(item["masked"], done[5][row], hole))
        np.testing.assert_array_equal(cell(grid, row, 4), item["image"])
    # Phase 1's network and the last one differ: the columns are not copies.
    assert not np.array_equal(cell(grid, 0, 1), cell(grid, 0, 2))
    # The close-ups: each cell the hole and 8 pixels around it (here the whole 32 px image,
    # the holes being 12-16 px), enlarged twice by repeating pixels.
    close = np.asarray(Image.open(tmp_path / "grid_crops.png").convert("RGB"))
    side = min(SIZE, max(np.ptp(np.nonzero(i["hole"])[axis]) + 1 for i in items for axis in (0, 1))
               + 16)
    assert close.shape == (figures.HEADER + 2 * 2 * side + 2, 5 * 2 * side + 8, 3)
    for row, item in enumerate(items):
        for column in range(5):
            top, left = figures.HEADER + row * (2 * side + 2), column * (2 * side + 2)
            expected = evaluate.crop_around(cell(grid, row, column), item["hole"], side)
            np.testing.assert_array_equal(close[top:top + 2 * side, left:left + 2 * side],
                                          expected.repeat(2, 0).repeat(2, 1))
    # --blend 2: the blended column shows the end of phase 1 instead.
    figures.grid_figure(str(tmp_path / "grid2.png"), items, done, config, blended=2)
    grid = np.asarray(Image.open(tmp_path / "grid2.png").convert("RGB"))
    for row, item in enumerate(items):
        np.testing.assert_array_equal(cell(grid, row, 3), complete.poisson_blend(
            item["masked"], done[2][row], item["hole"]))


def test_defaults_the_end_of_phase_1_the_newest_and_the_validation_photos(copy_training):
    with working_directory(copy_training):
        _, _, config = session.load_completion_network("tiny")
        assert figures.default_iterations("tiny", config) == [2, 5]
        assert [figures.phase_of(n, config) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
        # No --val-dir: train.py's validation split, the photos its evaluation used.
        assert figures.held_out_files(config, None) == ["photos/p4.png"]
    os.remove(copy_training / "results" / "tiny" / "eval.csv")
    assert run_main(figures, ["--session", "tiny"], copy_training) == 0
    assert Image.open(copy_training / "figures" / "tiny_completions.jpg").size == (
        5 * (SIZE + 2) - 2, figures.HEADER + SIZE)
    assert not os.path.exists(copy_training / "figures" / "tiny_eval.png")


def test_held_out_files_are_the_photos_train_py_validated_on(tmp_path, monkeypatch, make_photos,
                                                            tiny_config):
    make_photos(tmp_path / "photos", 8)
    monkeypatch.chdir(tmp_path)
    for split in (3, 0.25, 0.05):
        config = tiny_config(session=f"s{split}", data_dir=["photos"], val_split=split)
        train_files, val_files, _, handle = train.prepare(config, {}, fresh=False)
        handle.close()
        assert figures.held_out_files(config, None) == val_files
        assert len(val_files) == {3: 3, 0.25: 2, 0.05: 1}[split]
        assert not set(val_files) & set(train_files)


@pytest.mark.parametrize("args, message", [
    (["--iterations", "3"], "error: --session tiny: no checkpoint of iteration 3; it has 2, 4, 5"),
    (["--rows", "0,x"], "error: --rows 0,x: expected photo numbers such as 0,3,7"),
    (["--rows", "-1"], "error: --rows -1: expected photo numbers such as 0,3,7"),
    (["--rows", "7", "--data-dir", "photos"], "error: --rows 7: only 5 held-out photos decode"),
    (["--session", "nothing"], "error: --session nothing: no readable session"),
    (["--iterations", "2", "5", "--blend", "4"],
     "error: --blend 4: expected one of the iterations shown, 2, 5"),
    (["--out", "saved_sessions/tiny/session.json/figures"],
     "error: --out saved_sessions/tiny/session.json/figures: cannot write there (Not a directory)"),
])
def test_bad_arguments_are_one_line(copy_training, capsys, args, message):
    args = ["--session", "tiny", *args] if args[0] != "--session" else args
    assert run_main(figures, args, copy_training) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not os.path.exists(copy_training / "figures")


def test_an_export_gives_masked_network_blend_and_truth(copy_training, capsys):
    assert run_main(complete, ["--session", "tiny", "--export", "exp"], copy_training) == 0
    capsys.readouterr()
    assert run_main(figures, ["--model", "exp", "--data-dir", "photos", "--rows", "1,4",
                              "--out", "figs"], copy_training) == 0
    assert capsys.readouterr().out.strip() == (
        "Wrote figs/exp_model.jpg and figs/exp_model_crops.jpg")
    jpeg = Image.open(copy_training / "figs" / "exp_model.jpg")
    # masked | model | model + blend | ground truth; two rows
    assert jpeg.size == (4 * (SIZE + 2) - 2, figures.HEADER + 2 * (SIZE + 2) - 2)

    with working_directory(copy_training):
        network, mean_pixel, config = exports.read("exp")
        items = figures.held_out_items(config, ["photos"], [1, 4], mean_pixel)
        done = {0: [complete.complete(network, i["masked"], i["hole"], mean_pixel)[0]
                    for i in items]}
        figures.grid_figure("grid.png", items, done, config, titles={0: "model"})
        grid = np.asarray(Image.open("grid.png").convert("RGB"))
    for row, item in enumerate(items):
        assert np.array_equal(cell(grid, row, 1), done[0][row])
        assert np.array_equal(cell(grid, row, 2), complete.poisson_blend(
            item["masked"], done[0][row], item["hole"]))
        assert np.array_equal(cell(grid, row, 3), item["image"])
    assert not np.array_equal(done[0][0], items[0]["image"])


def test_several_exports_show_side_by_side(copy_training, capsys):
    """--model A B: a column per export, then B's with blending: phase 1's network beside the
    last one's, as the README's figure shows the two pretrained models."""
    for iteration, folder in ((2, "phase1"), (5, "last")):
        assert run_main(complete, ["--session", "tiny", "--iteration", str(iteration),
                                   "--export", folder], copy_training) == 0
    capsys.readouterr()
    assert run_main(figures, ["--model", "phase1", "last", "--data-dir", "photos", "--rows", "2",
                              "--out", "figs"], copy_training) == 0
    assert capsys.readouterr().out.strip() == (
        "Wrote figs/phase1_last_model.jpg and figs/phase1_last_model_crops.jpg")
    # masked | phase1 | last | last + blend | ground truth; one row
    assert Image.open(copy_training / "figs" / "phase1_last_model.jpg").size == (
        5 * (SIZE + 2) - 2, figures.HEADER + SIZE)
    with working_directory(copy_training):
        loaded = [exports.read(folder) for folder in ("phase1", "last")]
        items = figures.held_out_items(loaded[0][2], ["photos"], [2], loaded[0][1])
        done = {k: [complete.complete(network, items[0]["masked"], items[0]["hole"],
                                      mean_pixel)[0]]
                for k, (network, mean_pixel, _) in enumerate(loaded)}
        figures.grid_figure("grid.png", items, done, loaded[0][2],
                            titles={0: "phase1", 1: "last"})
        grid = np.asarray(Image.open("grid.png").convert("RGB"))
    for column, expected in ((1, done[0][0]), (2, done[1][0]), (3, complete.poisson_blend(
            items[0]["masked"], done[1][0], items[0]["hole"]))):
        np.testing.assert_array_equal(cell(grid, 0, column), expected)
    assert not np.array_equal(done[0][0], done[1][0])

    other = copy_training / "other"
    shutil.copytree(copy_training / "last", other)
    metadata = json.loads((other / "glcic.json").read_text())
    metadata["config"]["image_size"] = 48
    (other / "glcic.json").write_text(json.dumps(metadata))
    assert run_main(figures, ["--model", "last", "other", "--data-dir", "photos"],
                    copy_training) == 2
    assert capsys.readouterr().err == "error: --model other: trained at 48 px, not 32 px as last\n"


@pytest.mark.parametrize("args, message", [
    ([], "error: --model needs --data-dir, the held-out photos to complete"),
    (["--data-dir", "photos", "--iterations", "2"],
     "error: --iterations and --blend apply only to --session NAME"),
    (["--data-dir", "photos", "--session", "tiny"],
     "error: argument --session: not allowed with argument --model"),
])
def test_model_flags_are_checked(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_main(figures, ["--model", "exp", *args], tmp_path)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.strip().endswith(": " + message)
