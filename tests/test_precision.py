"""--precision across the scripts: what auto chooses on CPUs with and without bfloat16, sessions
trained in one precision resuming and completing in the other, checkpoints and exports kept in
float32, and float32 runs that are today's to the bit."""
import contextlib
import csv
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import complete
import devices
import session
import train
import utils
from conftest import CPUINFO, run_main, smooth_photo, tiny_args

BF16_CPU = os.path.join(CPUINFO, "avx512_bf16.txt")
cpu_only = pytest.mark.skipif(devices.has_gpu(), reason="what a machine without a GPU does")


def run_train(root, args):
    """train.main(args) in `root`: (exit status, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_main(train, args, root)
    return code, out.getvalue()


def compute_line(printed):
    [line] = [line for line in printed.splitlines() if line.startswith("Compute: ")]
    return line


def floating_dtypes(checkpoint_path):
    """The dtypes of every floating-point variable of a checkpoint (or SavedModel variables)."""
    dtypes = tf.train.load_checkpoint(checkpoint_path).get_variable_to_dtype_map()
    return {dtype.name for dtype in dtypes.values() if dtype.is_floating}


def losses(root, name):
    """losses.csv's reconstruction, discriminator and adversarial losses, row by row."""
    with open(os.path.join(root, session.results_dir(name), "losses.csv")) as f:
        rows = list(csv.DictReader(f))
    return [(row["iteration"], row["reconstruction"], row["discriminator"], row["adversarial"])
            for row in rows]


def write_photos(root):
    rng = np.random.default_rng(0)
    os.makedirs(root / "photos")
    for i in range(4):
        Image.fromarray(smooth_photo(rng, 40, 52)).save(root / "photos" / f"p{i}.png")
    return root


@pytest.fixture
def photos(tmp_path):
    return write_photos(tmp_path)


@pytest.fixture(scope="module")
def float32_runs(tmp_path_factory):
    """Two deterministic tiny runs of 4 iterations: "auto", --precision auto on a CPU without
    bfloat16, and "float32", the default on a CPU with it. Returns the folder and, for each,
    (exit status, what it printed)."""
    root = write_photos(tmp_path_factory.mktemp("float32_runs"))
    runs = {}
    for name, cpuinfo, extra in (("auto", "avx2.txt", ["--precision", "auto"]),
                                 ("float32", "avx512_bf16.txt", [])):
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, cpuinfo))
            runs[name] = run_train(root, [*tiny_args("photos", session=name, tc=2, td=1,
                                                     total=4), "--deterministic", *extra])
    return root, runs


@cpu_only
def test_auto_trains_in_bfloat16_where_native_and_a_session_moves_between_precisions(
        photos, monkeypatch, capsys):
    root = photos
    monkeypatch.setenv("GLCIC_CPUINFO", BF16_CPU)
    args = tiny_args("photos", session="p", tc=2, td=1, total=3, every=1)
    code, printed = run_train(root, [*args, "--precision", "auto"])
    assert code == 0, printed
    assert compute_line(printed).startswith(
        "Compute: CPU, bfloat16 (auto: this CPU computes bfloat16 natively (avx512_bf16)), XLA")
    saved = utils.read_json(os.path.join(root, session.session_file("p")))
    assert saved["config"]["precision"] == "bfloat16"  # kept as trained, not "auto"
    checkpoint = session.latest_checkpoint(os.path.join(root, session.folder("p")))
    assert floating_dtypes(checkpoint) == {"float32"}

    # On a CPU without bfloat16 the session keeps its precision, unless told otherwise.
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx2.txt"))
    code, printed = run_train(root, [*args[:-4], "--total-iters", "4", "--checkpoint-every", "1"])
    assert code == 0, printed
    assert "bfloat16 (the session's own; --precision changes it)" in compute_line(printed)
    code, printed = run_train(root, [*args[:-4], "--total-iters", "5", "--checkpoint-every", "1",
                                     "--precision", "float32"])
    assert code == 0, printed
    assert "Changed on resume: --precision bfloat16 -> float32" in printed
    assert "Resuming session 'p' at iteration 4 (phase 3 joint)" in printed
    assert "Compute: CPU, float32 (--precision float32), XLA" in printed
    assert [row[0] for row in losses(root, "p")] == ["1", "2", "3", "4", "5"]
    assert all(np.isfinite(float(v)) for row in losses(root, "p") for v in row[1:] if v)
    checkpoint = session.latest_checkpoint(os.path.join(root, session.folder("p")))
    assert checkpoint.endswith("-5") and floating_dtypes(checkpoint) == {"float32"}

    # It completes in both precisions; its export is float32 on disk.
    photo = smooth_photo(np.random.default_rng(1), 36, 44)
    Image.fromarray(photo).save(root / "photo.png")
    job = ["--session", "p", "--input", "photo.png", "--box", "8,6,16,12", "--engine", "tf"]
    outputs = {}
    for precision in ("float32", "bfloat16"):
        capsys.readouterr()
        assert run_main(complete, [*job, "--output", f"{precision}.png", "--precision",
                                   precision], root) == 0
        assert capsys.readouterr().out.splitlines()[0] == (
            f"Completion network: TensorFlow, {precision} (--precision {precision})")
        outputs[precision] = np.asarray(Image.open(root / f"{precision}.png"), np.int16)
    hole = np.zeros(photo.shape[:2], bool)
    hole[6:18, 8:24] = True
    for output in outputs.values():
        assert np.array_equal(output[~hole], photo[~hole])
    # Five iterations leave a network far from trained; the bound of one level holds for a
    # trained one (test_engine.py).
    assert 0 < np.abs(outputs["float32"] - outputs["bfloat16"])[hole].mean() <= 16
    assert run_main(complete, ["--session", "p", "--export", "export"], root) == 0
    assert floating_dtypes(str(root / "export" / "saved_model" / "variables" / "variables")) == {
        "float32"}


@cpu_only
def test_training_is_float32_by_default_even_where_bfloat16_is_native(float32_runs):
    root, runs = float32_runs  # "float32": the default, GLCIC_CPUINFO with avx512_bf16
    code, printed = runs["float32"]
    assert code == 0, printed
    assert compute_line(printed).startswith(
        "Compute: CPU, float32 (the default; --precision bfloat16 trains faster on this CPU, see"
        " docs/training.md, \"Precision\"), XLA")
    saved = utils.read_json(os.path.join(root, session.session_file("float32")))
    assert saved["config"]["precision"] == "float32"


@cpu_only
def test_float32_is_todays_path_to_the_bit(float32_runs):
    """auto on a CPU without bfloat16 and the default on one with it both train exactly as
    float32 did before --precision existed (deterministic kernels)."""
    root, runs = float32_runs
    rows = {}
    for name in ("auto", "float32"):
        code, printed = runs[name]
        assert code == 0, printed
        assert compute_line(printed).startswith("Compute: CPU, float32 (")
        rows[name] = losses(root, name)
    assert len(rows["auto"]) == 4 and rows["auto"] == rows["float32"]
