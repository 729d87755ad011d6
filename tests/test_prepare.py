"""prepare.py: a photo collection shrunk once into an ordinary --data-dir."""
import os

import numpy as np
from conftest import run_main, run_script
from PIL import Image

import config as cfg
import data_loader
import prepare


def large_photos(folder):
    """A 300 x 200 PNG, a 160 x 240 JPEG in a sub-folder, a same-named PNG beside it, a small
    photo (never enlarged) and a corrupt file."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / "sub")
    smooth = np.cumsum(rng.normal(0, 4, (240, 300, 3)), axis=1)
    photo = np.clip(smooth - smooth.min() + 20, 0, 255).astype(np.uint8)
    Image.fromarray(photo[:200]).save(folder / "wide.png")
    Image.fromarray(photo[:, :160]).save(folder / "sub" / "tall.jpg", quality=95)
    Image.fromarray(photo[:100, :100]).save(folder / "sub" / "tall.png")
    Image.fromarray(photo[:30, :40]).save(folder / "small.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


def test_prepare_shrinks_every_photo_into_a_mirrored_folder(tmp_path, capsys):
    large_photos(tmp_path / "photos")
    args = ["--data-dir", "photos", "--out", "prepared", "--image-size", "32", "--workers", "2"]
    assert run_main(prepare, args, tmp_path) == 0
    out, err = capsys.readouterr()
    assert "Prepared 4 photos (shorter edge at most 48 px)" in out
    assert err.startswith("warning: skipping photos/broken.jpg: cannot decode it")
    assert err.count("\n") == 1 and "Skipped 1 undecodable file(s)" in out
    root = tmp_path / "prepared" / "0_photos"
    sizes = {os.path.relpath(p, root): Image.open(p).size
             for p in map(str, root.rglob("*.png"))}
    assert sizes == {"wide.png.png": (72, 48), "sub/tall.jpg.png": (48, 72),
                     "sub/tall.png.png": (48, 48), "small.png.png": (40, 30)}
    # Lossless, upright RGB: the small photo is copied pixel for pixel.
    np.testing.assert_array_equal(np.asarray(Image.open(root / "small.png.png")),
                                  np.asarray(Image.open(tmp_path / "photos" / "small.png")))
    # A second run keeps what is written (an interrupted run goes on).
    before = os.path.getmtime(root / "wide.png.png")
    assert run_main(prepare, args, tmp_path) == 0
    assert os.path.getmtime(root / "wide.png.png") == before
    assert not list((tmp_path / "prepared").rglob("*.partial"))


def test_a_prepared_folder_gives_the_folders_photos_holes_and_patches(tmp_path):
    """Element k draws the same photo, hole and patches from the prepared folder as from the
    original; the crop is the same region, resampled twice instead of once, so close but not
    bit-identical."""
    large_photos(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").unlink()
    assert run_main(prepare, ["--data-dir", "photos", "--out", "prepared", "--image-size",
                              "32"], tmp_path) == 0
    config = cfg.Config(image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=4)
    original = data_loader.find_images([str(tmp_path / "photos")])
    prepared = data_loader.find_images([str(tmp_path / "prepared")])
    assert [os.path.basename(p) for p in prepared] == [os.path.basename(p) + ".png"
                                                       for p in original]
    a = next(iter(data_loader.training_dataset(original, config)))
    b = next(iter(data_loader.training_dataset(prepared, config)))
    for key in ("mask", "hole", "local_fake", "local_real"):
        np.testing.assert_array_equal(a[key], b[key])
    assert float(np.mean(np.abs(a["image"] - b["image"]))) < 0.02


def test_a_truncated_prepared_photo_is_skipped_by_training_and_rewritten_by_prepare(
        tmp_path, capsys):
    large_photos(tmp_path / "photos")
    args = ["--data-dir", "photos", "--out", "prepared", "--image-size", "32"]
    assert run_main(prepare, args, tmp_path) == 0
    damaged = tmp_path / "prepared" / "0_photos" / "wide.png.png"
    whole = np.asarray(Image.open(damaged))
    damaged.write_bytes(damaged.read_bytes()[:200])
    capsys.readouterr()
    # Training goes on without it, after one warning naming it.
    config = cfg.Config(image_size=32, local_size=16, hole_min=6, hole_max=12, batch_size=8)
    batch = next(iter(data_loader.training_dataset(
        data_loader.find_images([str(tmp_path / "prepared")]), config)))
    assert batch["image"].shape == (8, 32, 32, 3)
    assert str(damaged) in data_loader.BAD_FILES
    assert capsys.readouterr().err.startswith(f"warning: skipping {damaged}: cannot decode it")
    # prepare.py run again writes it again, whole; the intact ones are kept.
    kept = os.path.getmtime(tmp_path / "prepared" / "0_photos" / "small.png.png")
    assert run_main(prepare, args, tmp_path) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(damaged)), whole)
    assert os.path.getmtime(tmp_path / "prepared" / "0_photos" / "small.png.png") == kept


def test_prepare_refuses_bad_folders_in_one_line(tmp_path, capsys):
    large_photos(tmp_path / "photos")
    inside = run_script("prepare.py", ["--data-dir", "photos", "--out", "photos/small"],
                        tmp_path)
    assert inside.returncode == 2
    assert inside.stderr.strip().splitlines()[-1] == (
        "error: --out photos/small: inside a --data-dir; choose another folder")
    # The other refusals take the same way out of main (its status is the command's), here in
    # this process: one process fewer that imports TensorFlow.
    assert run_main(prepare, ["--data-dir", "nothing", "--out", "prepared"], tmp_path) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --data-dir nothing: not a folder")
    assert run_main(prepare, ["--data-dir", "photos", "--out", "p", "--image-size", "30"],
                    tmp_path) == 2
    assert "--image-size" in capsys.readouterr().err.strip().splitlines()[-1]
