"""exports.py: the compact float16 export, what an export records of its training, and the
pretrained model used when neither --session nor --model is given."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import complete
import evaluate
import exports
import report
import session
import utils
from conftest import calibrated_network, run_main, smooth_photo

MEAN_PIXEL = (0.4, 0.5, 0.6)  # make_session's default
USING_PRETRAINED = ("Using the pretrained model pretrained/wallpapers (neither --session nor"
                    " --model given)")


def test_float16_round_trip(tmp_path, tiny_config):
    rng = np.random.default_rng(0)
    images = np.stack([smooth_photo(rng, 32, 32) for _ in range(4)]).astype(np.float32) / 255
    masks = np.zeros((4, 32, 32, 1), np.float32)
    masks[:, 8:20, 10:24] = 1
    inputs = utils.completion_input(images, masks, tf.constant(MEAN_PIXEL))
    network = calibrated_network(inputs, seed=0, mean_pixel=MEAN_PIXEL)
    folder = str(tmp_path / "compact")
    exports.write(network, MEAN_PIXEL, tiny_config(), folder, float16=True)
    assert sorted(os.listdir(folder)) == ["completion_network.float16.npz", "glcic.json"]
    assert utils.read_json(os.path.join(folder, "glcic.json"))["weights"] == exports.FLOAT16_WEIGHTS

    # Kernels in float16; biases, the mean pixel and the batch-norm statistics in float32.
    with np.load(os.path.join(folder, exports.FLOAT16_WEIGHTS)) as stored:
        assert sorted(stored.files) == [f"{i:03d}" for i in range(len(network.weights))]
        dtypes = {w.path: stored[f"{i:03d}"].dtype for i, w in enumerate(network.weights)}
    assert dtypes["conv1/kernel"] == dtypes["conv17/kernel"] == np.float16
    assert {dtypes[p] for p in dtypes if p.endswith("kernel")} == {np.dtype(np.float16)}
    assert {dtypes[p] for p in dtypes if not p.endswith("kernel")} == {np.dtype(np.float32)}
    assert dtypes["bn1/moving_variance"] == dtypes["mean_centre/mean_pixel"] == np.float32

    loaded, mean_pixel, config = exports.read(folder)
    assert mean_pixel == pytest.approx(MEAN_PIXEL) and config == tiny_config()
    for original, weight in zip(network.weights, loaded.weights):
        value = original.numpy()
        expected = value.astype(np.float16).astype(np.float32) if value.ndim >= 2 else value
        assert weight.dtype == "float32" and np.array_equal(weight.numpy(), expected), weight.path
    # Float16 keeps 11 significant bits: each kernel weight moves by at most 2^-11 of itself.
    # Through the 17 layers this moved these outputs (in [0, 1], spread 0.01-0.99) by 0.005-0.009
    # at most and 0.001 on average over four seeds; the bounds leave twice that (a few levels of
    # 255), far below a damaged weight's: one batch-norm variance 10 % off moves them by 0.1, one
    # wrong kernel by 0.8.
    difference = np.abs(loaded(inputs, training=False) - network(inputs, training=False))
    assert np.max(difference) < 2e-2 and np.mean(difference) < 2e-3


@pytest.fixture
def compact(tmp_path, make_session, monkeypatch):
    """Session 's' (checkpoint of iteration 1) exported with --float16 to compact/; a photo."""
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    assert complete.main(["--session", "s", "--export", "compact", "--float16"]) == 0
    photo = smooth_photo(np.random.default_rng(3), 40, 52)
    Image.fromarray(photo).save("photo.png")
    return tmp_path, photo


def test_the_export_records_the_iteration_and_the_held_out_scores_then(compact, capsys):
    assert utils.read_json("compact/glcic.json")["training"] == {"iteration": 1}
    scores = {c: 0.5 + i / 100 for i, c in enumerate(evaluate.COLUMNS)}
    rows = [{"iteration": 1, "phase": 1, "method": "model", **scores},
            {"iteration": 1, "phase": 1, "method": "OpenCV Telea", **scores, "l1_hole": 0.25},
            {"iteration": 3, "phase": 2, "method": "model", **scores, "l1_hole": 0.125}]
    report.write_csv(os.path.join(session.results_dir("s"), "eval.csv"), report.EVAL_FIELDS, rows)
    assert complete.main(["--session", "s", "--export", "again", "--float16"]) == 0
    assert capsys.readouterr().out.endswith(
        "Exported the completion network of session 's' to again/ (float16)\n")
    assert utils.read_json("again/glcic.json")["training"] == {
        "iteration": 1, "held_out": {"model": scores, "OpenCV Telea": {**scores, "l1_hole": 0.25}}}


def damage(folder, how):
    path = os.path.join(folder, exports.FLOAT16_WEIGHTS)
    if how == "truncated":
        with open(path, "rb+") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif how == "missing":
        os.remove(path)
    else:  # the weights of a narrower network
        meta = utils.read_json(os.path.join(folder, "glcic.json"))
        meta["config"]["width_divisor"] = 4
        utils.write_json(os.path.join(folder, "glcic.json"), meta)


@pytest.mark.parametrize("how, reason", [
    ("truncated", "BadZipFile: File is not a zip file"),
    ("missing", ("FileNotFoundError: [Errno 2] No such file or directory:"
                 " 'compact/completion_network.float16.npz'")),
    ("mismatched", "ValueError: its weights are not those of this completion network"),
])
def test_a_damaged_compact_export_is_one_line_exit_2(compact, capsys, how, reason):
    damage("compact", how)
    capsys.readouterr()
    assert complete.main(["--model", "compact", "--input", "photo.png", "--box", "5,5,9,9",
                          "--output", "out.png"]) == 2
    assert capsys.readouterr().err == (f"error: --model compact: incomplete or damaged export"
                                       f" ({reason}); export it again\n")
    assert not os.path.exists("out.png")


@pytest.fixture
def pretrained(compact, monkeypatch):
    """The compact export as the pretrained model, without its session."""
    root, photo = compact
    folder = root / "repo" / "pretrained" / "wallpapers"
    shutil.copytree(root / "compact", folder)
    shutil.rmtree(root / session.folder("s"))
    monkeypatch.setattr(exports, "PRETRAINED", str(folder))
    return root, photo


def test_without_session_or_model_the_pretrained_model_completes(pretrained, capsys):
    _, photo = pretrained
    capsys.readouterr()
    assert complete.main(["--input", "photo.png", "--box", "10,8,20,14", "--output", "out.png"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == USING_PRETRAINED and out[3].startswith("photo.png: filled 280 pixels")
    assert out[2].startswith("Completion network: ")
    assert out[1].startswith(("Converting the completion network to ONNX once: ",
                              "TensorFlow runs the completion network: "))
    result = np.asarray(Image.open("out.png"))
    hole = np.zeros(photo.shape[:2], bool)
    hole[8:22, 10:30] = True
    assert np.array_equal(result[~hole], photo[~hole]) and (result[hole] != photo[hole]).any()
    complete.main(["--model", "compact", "--input", "photo.png", "--box", "10,8,20,14",
                   "--output", "same.png"])
    assert np.array_equal(np.asarray(Image.open("same.png")), result)


def test_without_session_or_model_evaluate_uses_the_pretrained_model(pretrained, make_photos,
                                                                     capsys):
    root, _ = pretrained
    make_photos(root / "photos", 2, size=(40, 48))
    capsys.readouterr()
    assert run_main(evaluate, ["--data-dir", "photos", "--count", "2"], root) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == USING_PRETRAINED
    assert any(line.startswith("model pretrained/wallpapers: 2 photos") for line in out)
    metrics = utils.read_json("results/pretrained-wallpapers/eval/metrics.json")
    assert metrics["settings"]["model"] == "pretrained/wallpapers"


def test_evaluations_of_exports_and_sessions_have_folders_of_their_own(pretrained, make_session,
                                                                        make_photos, capsys):
    """A session named like the pretrained model's folder, or like an export's, keeps its
    results/NAME/eval; the same export by another path shares its folder."""
    root, _ = pretrained
    make_photos(root / "photos", 1, size=(40, 48))
    make_session(root, "wallpapers")
    make_session(root, "compact")
    runs = {("--session", "wallpapers"): "results/wallpapers/eval",
            ("--session", "compact"): "results/compact/eval",
            (): "results/pretrained-wallpapers/eval",
            ("--model", "compact"): "results/model-compact/eval",
            ("--model", "repo/pretrained/wallpapers/"): "results/pretrained-wallpapers/eval"}
    for flags, folder in runs.items():
        assert run_main(evaluate, [*flags, "--data-dir", "photos", "--count", "1"], root) == 0
        assert f"Wrote {folder}/metrics.csv, " in capsys.readouterr().out
        settings = utils.read_json(os.path.join(folder, "metrics.json"))["settings"]
        assert (settings["session"], settings["model"]) == (
            (flags[1], None) if flags and flags[0] == "--session" else
            (None, flags[1] if flags else "pretrained/wallpapers")), flags
    assert sorted(os.listdir("results")) == ["compact", "model-compact", "pretrained-wallpapers",
                                             "wallpapers"]


def test_a_damaged_pretrained_model_is_named_as_the_default(pretrained, capsys):
    damage(exports.PRETRAINED, "truncated")
    assert complete.main(["--input", "photo.png", "--box", "1,1,5,5", "--output", "o.png"]) == 2
    assert capsys.readouterr().err.startswith("error: --model pretrained/wallpapers: incomplete"
                                              " or damaged export (BadZipFile")


def test_without_a_pretrained_model_say_what_to_give(tmp_path, monkeypatch, make_photos, capsys):
    monkeypatch.setattr(exports, "PRETRAINED", str(tmp_path / "pretrained" / "wallpapers"))
    monkeypatch.chdir(tmp_path)
    make_photos(tmp_path / "photos", 1)
    message = ("error: give --session NAME or --model DIR (no pretrained model in"
               " pretrained/wallpapers)\n")
    assert complete.main(["--input", "photos", "--box", "1,1,5,5", "--output", "out"]) == 2
    assert capsys.readouterr().err == message
    assert evaluate.main(["--data-dir", "photos"]) == 2
    assert capsys.readouterr().err == message
    assert not os.path.exists("out") and not os.path.exists(session.RESULTS)


@pytest.mark.parametrize("args, message", [
    (["--session", "s", "--input", "p.png", "--box", "1,1,5,5", "--output", "o.png",
      "--float16"], "--float16 applies only to --export DIR"),
    (["--model", "m", "--iteration", "2", "--input", "p.png", "--box", "1,1,5,5", "--output",
      "o.png"], "--iteration applies only to --session NAME"),
    (["--model", "m", "--export", "exported", "--input", "p.png"],
     "--export takes only --session, --iteration, --average, --raw, --model and --float16"),
    (["--session", "s", "--export", "exported", "--engine", "onnx"],
     "--export takes only --session, --iteration, --average, --raw, --model and --float16"),
    (["--session", "s", "--model", "m", "--export", "exported"],
     "argument --model: not allowed with argument --session"),
])
def test_usage_errors_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        complete.main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.endswith(f": error: {message}\n") and err.count("\n") == 1


def test_export_of_an_older_iteration(copy_training, monkeypatch, capsys):
    """--iteration N: the checkpoint of iteration N (here the end of phase 1), recorded so,
    with its held-out scores, instead of the newest."""
    monkeypatch.chdir(copy_training)
    assert complete.main(["--session", "tiny", "--iteration", "2", "--export", "p1",
                          "--float16"]) == 0
    meta = utils.read_json("p1/glcic.json")
    assert meta["training"]["iteration"] == 2
    assert meta["training"]["held_out"]["model"]["l1_hole"] == pytest.approx(float(next(
        r["l1_hole"] for r in report.read_csv(session.eval_history("tiny"))
        if r["iteration"] == "2" and r["method"] == "model")))
    exported, _, _ = exports.read("p1")
    at_2, _, _ = session.load_completion_network("tiny", 2)
    newest, _, _ = session.load_completion_network("tiny")
    first = next(i for i, w in enumerate(at_2.weights) if len(w.shape) == 4)  # a kernel
    kernel = at_2.weights[first].numpy()
    np.testing.assert_array_equal(exported.weights[first].numpy(),
                                  kernel.astype(np.float16).astype(np.float32))
    assert not np.allclose(newest.weights[first].numpy(), kernel, atol=1e-4)
    assert complete.main(["--session", "tiny", "--iteration", "3", "--export", "p3"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: --session tiny: no checkpoint of iteration 3; it has 2, 4, 5")


def test_an_export_of_averaged_checkpoints(copy_training, monkeypatch, capsys):
    """--average N ...: every weight (batch-norm statistics included) the mean of the
    checkpoints' of those iterations, recorded so; and its misuses, one line each."""
    monkeypatch.chdir(copy_training)
    assert complete.main(["--session", "tiny", "--export", "mean", "--average", "5", "4"]) == 0
    assert ("of session 'tiny' (the mean of its checkpoints of iterations 4, 5) to mean/"
            in capsys.readouterr().out)
    assert utils.read_json("mean/glcic.json")["training"] == {"iteration": 5, "averaged": [4, 5]}
    exported, _, _ = exports.read("mean")
    at_4, at_5 = (session.load_completion_network("tiny", i)[0] for i in (4, 5))
    assert len(exported.weights) == len(at_4.weights)
    moved = 0
    for mean, a, b in zip(exported.weights, at_4.weights, at_5.weights, strict=True):
        np.testing.assert_allclose(mean.numpy(), (a.numpy() + b.numpy()) / 2, rtol=1e-6,
                                   atol=1e-7)
        moved += not np.array_equal(a.numpy(), b.numpy())
    assert moved > 10  # the two checkpoints differ, so the mean is neither

    for args, message in (
            (["--session", "tiny", "--export", "x", "--average", "4", "3"],
             "--session tiny: no checkpoint of iteration 3; it has 2, 4, 5"),
            (["--model", "mean", "--export", "x", "--average", "4", "5"],
             "--average applies only to --export DIR with --session NAME"),
            (["--session", "tiny", "--export", "x", "--average", "4", "--iteration", "5"],
             "give either --iteration or --average"),
            (["--session", "tiny", "--export", "x", "--average", "4", "4"],
             "--average: expected different iterations, got 4 4"),
            (["--model", "mean", "--export", "x", "--raw"],
             "--raw applies only to --export DIR with --session NAME"),
            (["--session", "tiny", "--input", "photo.png", "--box", "1,1,4,4", "--output",
              "x.png", "--raw"], "--raw applies only to --export DIR with --session NAME")):
        try:
            status = complete.main(args)
        except SystemExit as stop:
            status = stop.code
        assert status == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("error: " + message) and "\n" not in err, err
    assert not os.path.exists("x")


def completion(model, name):
    """complete.py --model MODEL on photo.png (a box in the middle), as uint8 (H, W, 3)."""
    assert complete.main(["--model", model, "--input", "photo.png", "--box", "12,10,24,20",
                          "--output", name]) == 0
    return np.asarray(Image.open(name)).astype(int)


def test_an_export_exported_again_in_float16_and_back(copy_training, monkeypatch, capsys):
    """--model DIR --export: the same network with the source's mean pixel, configuration and
    records; in float16 within the README's bound, and back in float32 the float16 weights."""
    monkeypatch.chdir(copy_training)
    Image.fromarray(smooth_photo(np.random.default_rng(5), 40, 52)).save("photo.png")
    assert complete.main(["--session", "tiny", "--export", "full"]) == 0
    capsys.readouterr()
    assert complete.main(["--model", "full", "--export", "compact", "--float16"]) == 0
    assert capsys.readouterr().out == (
        "Exported the completion network of the export full to compact/ (float16)\n")
    assert sorted(os.listdir("compact")) == [exports.FLOAT16_WEIGHTS, "glcic.json"]
    full, compact = utils.read_json("full/glcic.json"), utils.read_json("compact/glcic.json")
    for key in ("mean_pixel", "config", "training", "network_version"):
        assert compact[key] == full[key], key
    assert full["training"]["iteration"] == 5 and "held_out" in full["training"]

    hole = np.zeros((40, 52), bool)
    hole[10:30, 12:36] = True
    in_float32, in_float16 = completion("full", "full.png"), completion("compact", "compact.png")
    assert np.array_equal(in_float32[~hole], in_float16[~hole])
    # The README's bound for float16 weights: about 0.01 of [0, 1], 2.55 levels of 255, and
    # rounding to whole levels adds at most one (measured here: 3 at most, 0.36 on average).
    difference = np.abs(in_float32 - in_float16)[hole]
    assert 0 < difference.max() <= 0.01 * 255 + 1 and difference.mean() < 0.5

    assert complete.main(["--model", "compact", "--export", "back"]) == 0
    assert capsys.readouterr().out.endswith(
        "Exported the completion network of the export compact to back/\n")
    back = utils.read_json("back/glcic.json")
    assert "weights" not in back and os.path.exists("back/completion_network.keras")
    assert {key: back[key] for key in ("mean_pixel", "config", "training")} == {
        key: full[key] for key in ("mean_pixel", "config", "training")}
    for weight, stored in zip(exports.read("back")[0].weights, exports.read("compact")[0].weights):
        assert np.array_equal(weight.numpy(), stored.numpy()), weight.path
    assert np.array_equal(completion("back", "back.png"), in_float16)


def test_export_without_session_or_model_exports_the_pretrained_model(pretrained, capsys):
    """...with its records as they are: here a configuration saved before --val-split."""
    path = os.path.join(exports.PRETRAINED, "glcic.json")
    source = utils.read_json(path)
    del source["config"]["val_split"]
    utils.write_json(path, source)
    capsys.readouterr()
    assert complete.main(["--export", "again"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        USING_PRETRAINED,
        "Exported the completion network of the pretrained model pretrained/wallpapers to again/"]
    again = utils.read_json("again/glcic.json")
    assert again["training"] == source["training"] == {"iteration": 1}
    assert again["mean_pixel"] == source["mean_pixel"] and again["config"] == source["config"]
    assert "val_split" not in again["config"] and "weights" not in again
    assert np.array_equal(completion("again", "again.png"), completion("compact", "compact.png"))


def test_exporting_into_the_folder_it_reads_is_refused(pretrained, capsys):
    before = utils.read_json("compact/glcic.json")
    capsys.readouterr()
    assert complete.main(["--model", "compact", "--export", "compact/", "--float16"]) == 2
    assert capsys.readouterr().err == ("error: --export compact/: that is the folder of the"
                                       " export compact itself; export to another folder\n")
    assert complete.main(["--export", os.path.join("repo", "pretrained", "wallpapers")]) == 2
    assert capsys.readouterr().err == (
        "error: --export repo/pretrained/wallpapers: that is the folder of the pretrained model"
        " pretrained/wallpapers itself; export to another folder\n")
    assert utils.read_json("compact/glcic.json") == before
