"""complete.py: any photo, any hole, exact pixels outside the hole, exports, bad input."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import complete
import session
import utils
from conftest import run_script, smooth_photo


def write(path, array):
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def stroke_mask(height, width):
    """A hand-drawn looking hole: a thick polyline and a disc."""
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [np.array([[5, 8], [20, 30], [40, 22], [width - 10, 50]], np.int32)],
                  False, 255, 5)
    cv2.circle(mask, (width // 3, height - 15), 6, 255, -1)
    return mask


@pytest.fixture
def setup(tmp_path, make_session, monkeypatch):
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    photo = smooth_photo(np.random.default_rng(3), 67, 90)
    return tmp_path, write(tmp_path / "photo.png", photo), photo


def test_pixels_outside_a_free_form_hole_are_exactly_the_input(setup):
    root, photo_path, photo = setup
    mask = stroke_mask(*photo.shape[:2])
    mask_path = write(root / "mask.png", mask)
    for post in ("none", "blend"):
        out = str(root / f"out_{post}.png")
        assert complete.main(["--session", "s", "--input", photo_path, "--mask", mask_path,
                              "--output", out, "--postprocess", post]) == 0
        result = np.asarray(Image.open(out))
        hole = mask > 127
        assert result.shape == photo.shape
        assert np.array_equal(result[~hole], photo[~hole])
        assert (result[hole] != photo[hole]).any()


def test_odd_sizes_round_trip(tmp_path, make_session, monkeypatch):
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    photo = smooth_photo(np.random.default_rng(4), 199, 301)
    path = write(tmp_path / "odd.jpg", photo)
    assert complete.main(["--session", "s", "--input", path, "--box", "100,50,40,30",
                          "--output", "odd_out.png"]) == 0
    assert np.asarray(Image.open(tmp_path / "odd_out.png")).shape == (199, 301, 3)


def test_mask_and_boxes_give_the_same_completion(setup):
    root, photo_path, photo = setup
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:30, 5:25] = 255
    mask[40:60, 50:80] = 255
    write(root / "rects.png", mask)
    complete.main(["--session", "s", "--input", photo_path, "--mask", "rects.png", "--output", "a.png"])
    complete.main(["--session", "s", "--input", photo_path, "--box", "5,10,20,20",
                   "--box", "50,40,30,20", "--output", "b.png"])
    assert np.array_equal(np.asarray(Image.open("a.png")), np.asarray(Image.open("b.png")))


def test_export_loads_without_the_session_and_gives_the_same_output(setup, capsys):
    root, photo_path, _ = setup
    assert complete.main(["--session", "s", "--export", "exported"]) == 0
    assert "Exported the completion network of session 's' to exported/" in capsys.readouterr().out
    assert sorted(os.listdir("exported")) == ["completion_network.keras", "completion_network.onnx",
                                              "glcic.json", "saved_model"]
    complete.main(["--session", "s", "--input", photo_path, "--box", "20,20,30,25", "--output", "from_session.png"])
    os.rename(session.folder("s"), "moved_away")
    complete.main(["--model", "exported", "--input", photo_path, "--box", "20,20,30,25",
                   "--output", "from_export.png"])
    assert np.array_equal(np.asarray(Image.open("from_session.png")),
                          np.asarray(Image.open("from_export.png")))
    meta = utils.read_json("exported/glcic.json")
    assert meta["mean_pixel"] == pytest.approx([0.4, 0.5, 0.6])


def test_a_folder_of_photos_with_a_folder_of_masks(setup):
    root, _, _ = setup
    rng = np.random.default_rng(5)
    for name, size in (("a", (40, 52)), ("b", (33, 47))):
        write(root / "in" / f"{name}.jpg", smooth_photo(rng, *size))
        mask = np.zeros(size, np.uint8)
        mask[5:15, 10:30] = 255
        write(root / "masks" / f"{name}.png", mask)
    assert complete.main(["--session", "s", "--input", "in", "--mask", "masks", "--output", "out"]) == 0
    assert sorted(os.listdir("out")) == ["a.png", "b.png"]
    assert np.asarray(Image.open("out/b.png")).shape == (33, 47, 3)


def test_save_steps_writes_the_panels_side_by_side(setup):
    root, photo_path, photo = setup
    complete.main(["--session", "s", "--input", photo_path, "--box", "10,10,20,20",
                   "--output", "x.png", "--postprocess", "blend", "--save-steps"])
    steps = np.asarray(Image.open("x_steps.png"))
    assert steps.shape == (photo.shape[0], 4 * photo.shape[1], 3)
    assert np.array_equal(steps[:, 3 * photo.shape[1]:], np.asarray(Image.open("x.png")))


def test_large_photos_are_completed_window_by_window(setup):
    root, photo_path, photo = setup
    network, mean_pixel, _ = session.load_completion_network("s")
    hole = np.zeros(photo.shape[:2], bool)
    hole[5:12, 5:15] = True
    hole[50:60, 70:85] = True
    completed, raw = complete.complete(network, photo, hole, mean_pixel, max_pixels=1000)
    assert np.array_equal(completed[~hole], photo[~hole])
    assert (completed[hole] != photo[hole]).any()
    # Two holes far apart: two windows; overlapping margins merge into one.
    assert len(complete.hole_windows(hole, hole.shape, margin=8)) == 2
    assert complete.hole_windows(hole, hole.shape, margin=40) == [(0, 0, 67, 90)]


def test_an_empty_mask_copies_the_input_and_says_so(setup, capsys):
    root, photo_path, photo = setup
    write(root / "empty.png", np.zeros(photo.shape[:2], np.uint8))
    assert complete.main(["--session", "s", "--input", photo_path, "--mask", "empty.png",
                          "--output", "same.png"]) == 0
    assert "the mask is empty, nothing to fill; copied the input to same.png" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open("same.png")), photo)


BAD = [
    (["--input", "missing.jpg", "--box", "1,1,5,5"], "--input missing.jpg: no such file or folder"),
    (["--input", "photo.png", "--mask", "small.png"],
     "--mask small.png: 10x8 pixels, expected the input's size 90x67"),
    (["--input", "photo.png", "--box", "80,10,20,20"],
     "--box 80,10,20,20: expected a box of positive size inside the 90x67 image"),
    (["--input", "photo.png", "--box", "8,9"], "--box 8,9: expected X,Y,W,H (four integers)"),
    (["--input", "notanimage.png", "--box", "1,1,5,5"], "--input notanimage.png: cannot read it as an image"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_and_writes_nothing(setup, capsys, args, message):
    root, _, _ = setup
    write(root / "small.png", np.zeros((8, 10), np.uint8))
    (root / "notanimage.png").write_text("hello")
    assert complete.main(["--session", "s", *args, "--output", "never.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not os.path.exists("never.png")
    assert not [n for n in os.listdir(".") if "partial" in n]


def test_exports_that_cannot_be_used(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    utils.write_json("old_export/glcic.json", {"format": "glcic-completion-network", "version": 0})
    utils.write_json("no_network/glcic.json", {"format": "glcic-completion-network", "version": 1,
                                               "mean_pixel": [0.5, 0.5, 0.5], "config": {}})
    cases = [(["--model", "missing"], "error: --model missing: not an export of complete.py"
                                      " (glcic.json missing or unreadable)"),
             (["--model", "old_export"], "error: --model old_export: export format"
                                         " 'glcic-completion-network' version 0 is not supported"),
             (["--model", "no_network"], "error: --model no_network: incomplete or damaged export")]
    for source, message in cases:
        assert complete.main([*source, "--input", "x.png", "--box", "1,1,2,2", "--output", "o.png"]) == 2
        assert capsys.readouterr().err.startswith(message)


def test_command_line_errors_exit_2_without_traceback(setup, capsys):
    root, photo_path, _ = setup
    result = run_script("complete.py", ["--session", "s", "--input", photo_path, "--box",
                                        "500,1,5,5", "--output", "o.png"], cwd=root, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --box 500,1,5,5:")
    # argparse's refusal exits with status 2 itself (in this process: one TensorFlow start less)
    with pytest.raises(SystemExit) as exit:
        complete.main(["--session", "s", "--input", photo_path, "--output", "o.png"])
    assert exit.value.code == 2 and "give either --mask or --box" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# --scale: holes larger than the network's completed at the resolution it was trained at


@pytest.mark.parametrize("text, parsed", [("auto", "auto"), ("native", "native"),
                                          ("0.5", 0.5), ("1", "native"), ("0.25", 0.25)])
def test_scale_values(text, parsed):
    assert complete.parse_scale(text) == parsed


@pytest.mark.parametrize("text", ["2", "0", "-0.5", "big", ""])
def test_scale_refused_in_one_line(text):
    with pytest.raises(utils.UserError) as error:
        complete.parse_scale(text)
    assert str(error.value) == (f"--scale {text}: expected auto, native or a factor in (0, 1],"
                                " such as 0.5")


def spy_network(monkeypatch):
    """complete.run_network replaced by one that records each input's size and fills every
    pixel with its crop's mean colour: [(height, width, hole pixels)]."""
    calls = []

    def run(network, image, hole, mean_pixel):
        calls.append((*hole.shape, int(hole.sum())))
        return np.broadcast_to(image[~hole].mean(axis=0).astype(np.uint8), image.shape).copy()
    monkeypatch.setattr(complete, "run_network", run)
    return calls


def test_auto_scale_shrinks_each_group_of_holes_to_the_trained_size(monkeypatch):
    """A 200x100 hole in a 1200x900 photo, aimed at 50 px holes, is completed 4 times smaller
    in a window of its size plus its size of context (clipped at the photo's edge); a small
    hole far from it is completed as native does (the whole photo, under max_pixels; above
    it, a window of its own); nothing outside the holes moves."""
    calls = spy_network(monkeypatch)
    photo = smooth_photo(np.random.default_rng(5), 900, 1200)
    hole = np.zeros(photo.shape[:2], bool)
    hole[700:800, 900:1100] = True  # 200 wide: a window reaching the right and bottom edges
    hole[100:120, 100:130] = True  # 30 wide: smaller than the trained holes
    completed, raw = complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale="auto",
                                       trained_hole=50)
    assert np.array_equal(completed[~hole], photo[~hole])
    assert (completed[hole] != photo[hole]).any()
    windows = complete.hole_windows(hole, hole.shape, sizes=True)
    assert sorted(windows) == [(36, 36, 184, 194, 30), (500, 700, 900, 1200, 200)]
    # The big hole's window (400 x 500) at a quarter: 100 x 125; the small one native.
    assert sorted(c[:2] for c in calls) == [(100, 125), (900, 1200)]
    small, native = sorted(calls)
    assert native[2] == 600 + 200 * 100 and 25 * 50 <= small[2] <= 27 * 52  # a pixel it
    # touches is hole
    calls.clear()
    windowed, _ = complete.complete(None, photo, hole, (0.5, 0.5, 0.5), max_pixels=100_000,
                                    scale="auto", trained_hole=50)
    assert sorted(c[:2] for c in calls) == [(100, 125), (148, 158)]
    assert np.array_equal(windowed[~hole], photo[~hole])
    # Holes no wider than the trained ones: exactly native's completion.
    calls.clear()
    only_small = hole.copy()
    only_small[700:800, 900:1100] = False
    auto, _ = complete.complete(None, photo, only_small, (0.5, 0.5, 0.5), scale="auto",
                                trained_hole=50)
    native_fill, _ = complete.complete(None, photo, only_small, (0.5, 0.5, 0.5))
    np.testing.assert_array_equal(auto, native_fill)


def test_a_fixed_factor_and_native_scale(monkeypatch):
    calls = spy_network(monkeypatch)
    photo = smooth_photo(np.random.default_rng(6), 300, 400)
    hole = np.zeros(photo.shape[:2], bool)
    hole[100:180, 150:250] = True
    complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale=0.5, trained_hole=50)
    complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale="native", trained_hole=50)
    complete.complete(None, photo, hole, (0.5, 0.5, 0.5), max_pixels=1000, scale="native")
    # 0.5: the window (the hole and 100 px around, clipped: 280 x 300) at half size;
    # native: the whole photo under max_pixels, its window above it.
    assert [c[:2] for c in calls] == [(140, 150), (300, 400), (280, 300)]


def test_several_holes_of_different_sizes_in_one_window_take_the_largest(monkeypatch):
    calls = spy_network(monkeypatch)
    photo = smooth_photo(np.random.default_rng(7), 400, 400)
    hole = np.zeros(photo.shape[:2], bool)
    hole[150:250, 150:250] = True  # 100 px
    hole[120:130, 270:280] = True  # 10 px, inside the big one's margin: the same window
    completed, _ = complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale="auto",
                                     trained_hole=25)
    assert len(calls) == 1 and calls[0][:2] == (75, 75)  # 300 x 300 at a quarter
    assert np.array_equal(completed[~hole], photo[~hole])
    assert (completed[120:130, 270:280] != photo[120:130, 270:280]).any()


def test_resample_chooses_how_a_fill_completed_smaller_comes_back(monkeypatch):
    """The network's output at a quarter size brought back by OpenCV's bicubic (the default),
    Lanczos or bilinear interpolation: exactly that resize of it, three different fills; pixels
    outside the hole untouched by each."""
    outputs = []

    def run(network, image, hole, mean_pixel):
        outputs.append(smooth_photo(np.random.default_rng(9), *hole.shape))
        return outputs[-1]
    monkeypatch.setattr(complete, "run_network", run)
    photo = smooth_photo(np.random.default_rng(8), 240, 320)
    hole = np.zeros(photo.shape[:2], bool)
    hole[80:160, 100:220] = True
    fills = {}
    for name, flag in (("bicubic", cv2.INTER_CUBIC), ("lanczos", cv2.INTER_LANCZOS4),
                       ("bilinear", cv2.INTER_LINEAR)):
        completed, raw = complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale=0.25,
                                           trained_hole=30, resample=name)
        window = complete.hole_windows(hole, hole.shape)[0]
        top, left, bottom, right = window
        expected = cv2.resize(outputs[-1], (right - left, bottom - top), interpolation=flag)
        np.testing.assert_array_equal(raw[top:bottom, left:right], expected)
        assert np.array_equal(completed[~hole], photo[~hole])
        fills[name] = completed[hole]
    assert np.array_equal(fills["bicubic"], complete.complete(
        None, photo, hole, (0.5, 0.5, 0.5), scale=0.25, trained_hole=30)[0][hole])
    assert not np.array_equal(fills["bicubic"], fills["lanczos"])
    assert not np.array_equal(fills["bicubic"], fills["bilinear"])


def test_resample_refine_runs_the_network_again_on_the_upscaled_fill(monkeypatch):
    """--resample refine: the quarter-size output brought back by bicubic becomes the hole's
    content of a second pass at full size (not the mean pixel), whose output is the fill."""
    calls = []

    def run(network, image, hole, mean_pixel, keep_hole=False):
        calls.append((image.copy(), hole.copy(), keep_hole))
        return smooth_photo(np.random.default_rng(len(calls)), *hole.shape)
    monkeypatch.setattr(complete, "run_network", run)
    photo = smooth_photo(np.random.default_rng(8), 240, 320)
    hole = np.zeros(photo.shape[:2], bool)
    hole[80:160, 100:220] = True
    completed, raw = complete.complete(None, photo, hole, (0.5, 0.5, 0.5), scale=0.25,
                                       trained_hole=30, resample="refine")
    assert [(c[0].shape[:2], c[2]) for c in calls] == [((60, 80), False), ((240, 320), True)]
    coarse = cv2.resize(smooth_photo(np.random.default_rng(1), 60, 80), (320, 240),
                        interpolation=cv2.INTER_CUBIC)
    second, second_hole = calls[1][0], calls[1][1]
    np.testing.assert_array_equal(second_hole, hole)
    np.testing.assert_array_equal(second[hole], coarse[hole])
    np.testing.assert_array_equal(second[~hole], photo[~hole])
    np.testing.assert_array_equal(raw, smooth_photo(np.random.default_rng(2), 240, 320))
    assert np.array_equal(completed[~hole], photo[~hole])


def test_run_network_keep_hole_gives_the_hole_content_to_the_network():
    """The network sees the mean pixel in the hole by default, the crop's own pixels with
    keep_hole; the mask channel is the hole either way."""
    seen = []

    def echo(inputs):  # a network that is not Keras is called as it is, like an ONNX one
        seen.append(np.asarray(inputs))
        return inputs[..., :3]
    photo = smooth_photo(np.random.default_rng(3), 16, 20)
    hole = np.zeros((16, 20), bool)
    hole[4:10, 6:14] = True
    for keep in (False, True):
        complete.run_network(echo, photo, hole, (0.25, 0.5, 0.75), keep_hole=keep)
    mean, kept = seen
    np.testing.assert_allclose(mean[0, 4:10, 6:14, :3], np.broadcast_to((0.25, 0.5, 0.75),
                                                                        (6, 8, 3)))
    np.testing.assert_allclose(kept[0, :16, :20, :3], photo / 255.0, atol=1e-6)
    np.testing.assert_array_equal(kept[0, :16, :20, 3], hole)
    np.testing.assert_array_equal(mean[0, :16, :20, 3], hole)


def test_auto_scale_on_the_command_line_with_a_real_network(setup, capsys):
    """The session's network (trained on 4-8 px holes) on a 30 x 40 box: completed shrunk;
    the pixels outside the hole exactly the input's, blended or not."""
    root, photo_path, photo = setup
    for post in ("none", "blend"):
        out = str(root / f"auto_{post}.png")
        assert complete.main(["--session", "s", "--input", photo_path, "--box", "20,15,40,30",
                              "--output", out, "--scale", "auto", "--postprocess", post]) == 0
        result = np.asarray(Image.open(out))
        hole = complete.box_mask(["20,15,40,30"], photo.shape[:2])
        assert np.array_equal(result[~hole], photo[~hole])
        assert (result[hole] != photo[hole]).any()
    native = str(root / "native.png")
    assert complete.main(["--session", "s", "--input", photo_path, "--box", "20,15,40,30",
                          "--output", native]) == 0
    assert not np.array_equal(np.asarray(Image.open(native)),
                              np.asarray(Image.open(root / "auto_none.png")))
    refined = str(root / "refine.png")
    assert complete.main(["--session", "s", "--input", photo_path, "--box", "20,15,40,30",
                          "--output", refined, "--scale", "auto", "--resample", "refine"]) == 0
    result = np.asarray(Image.open(refined))
    assert np.array_equal(result[~hole], photo[~hole])
    assert not np.array_equal(result, np.asarray(Image.open(root / "auto_none.png")))
    lanczos = str(root / "lanczos.png")
    assert complete.main(["--session", "s", "--input", photo_path, "--box", "20,15,40,30",
                          "--output", lanczos, "--scale", "auto", "--resample", "lanczos"]) == 0
    assert not np.array_equal(np.asarray(Image.open(lanczos)),
                              np.asarray(Image.open(root / "auto_none.png")))
    with pytest.raises(SystemExit) as exit:
        complete.main(["--session", "s", "--input", photo_path, "--box", "1,1,5,5", "--output",
                       "o.png", "--resample", "nearest"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: argument --resample: invalid choice: 'nearest' (choose from 'bicubic',"
        " 'lanczos', 'bilinear', 'refine')")
    with pytest.raises(SystemExit) as exit:
        complete.main(["--session", "s", "--input", photo_path, "--box", "1,1,5,5", "--output",
                       "o.png", "--scale", "3"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --scale 3: expected auto, native or a factor in (0, 1], such as 0.5")
