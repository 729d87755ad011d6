"""data_loader.py (and the two data helpers of utils.py) against SPEC.md section 2."""
import dataclasses
import hashlib
import os
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import config as config_module
import data_loader
import utils
from data_loader import DataError

SIZE, LOCAL, HOLE_MIN, HOLE_MAX, BATCH = 32, 16, 6, 12, 4


def loader_config(seed=0):
    return config_module.Config(image_size=SIZE, local_size=LOCAL, hole_min=HOLE_MIN,
                                hole_max=HOLE_MAX, batch_size=BATCH, seed=seed)


def take(dataset, count):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(count)]


def save(array_or_image, path, **kwargs):
    img = array_or_image if isinstance(array_or_image, Image.Image) \
        else Image.fromarray(array_or_image)
    img.save(str(path), **kwargs)
    return str(path)


def write_corrupt(path, nbytes=300, seed=0):
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return str(path)


def assert_rgb8(array, shape_hw):
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (*shape_hw, 3)


# ------------------------------------------------------------------------------------------
# find_images


def test_find_images_recursive_case_insensitive_sorted(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "deep" / "deeper").mkdir(parents=True)
    (root / "b").mkdir()
    rgb = np.zeros((4, 4, 3), np.uint8)
    expected = [
        save(rgb, root / "z_top.png"),
        save(rgb, root / "a" / "UPPER.JPG"),
        save(rgb, root / "a" / "deep" / "deeper" / "nested.Jpeg"),
        save(rgb, root / "b" / "pic.PNG"),
        save(rgb, root / "b" / "pic.bmp"),
        save(rgb, root / "b" / "anim.gif"),
    ]
    for junk in ["notes.txt", "a/readme.md", "b/data.npy", "b/jpg", "a/deep/photo.jpg.bak"]:
        (root / junk).write_bytes(b"not an image")
    found = data_loader.find_images([str(root)])
    assert found == sorted(expected)
    assert found == sorted(found)


def test_find_images_skips_hidden_folders(tmp_path):
    root = tmp_path / "photos"
    for folder in (".thumbnails", "trip/.cache", "trip"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((4, 4, 3), np.uint8)
    kept = [save(rgb, root / "trip" / "beach.png"), save(rgb, root / ".hidden_name.png")]
    save(rgb, root / ".thumbnails" / "beach.png")
    save(rgb, root / "trip" / ".cache" / "beach.png")
    assert data_loader.find_images([str(root)]) == sorted(kept)


def test_default_photos_installed_whole_once_by_concurrent_processes(tmp_path):
    # Workers of a multi-worker run may all find no photos and install them at the same time;
    # each must then see the same complete folder, and no scratch copy may stay behind.
    (tmp_path / "photos").mkdir()  # an empty folder is replaced
    counts, errors = [], []

    def install():
        try:
            counts.append(data_loader.install_default_photos(str(tmp_path)))
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)
    threads = [threading.Thread(target=install) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = sorted(f"{package}_{os.path.basename(path)}"
                      for package, path in data_loader.DEFAULT_PHOTOS)
    assert counts == [len(expected)] * 4
    assert sorted(os.listdir(tmp_path)) == ["photos"]
    assert sorted(os.listdir(tmp_path / "photos")) == expected
    assert len(data_loader.find_images([str(tmp_path)])) == len(expected)


def test_find_images_several_folders_merged_and_sorted(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "z").mkdir()
    (tmp_path / "a").mkdir()
    first = save(rgb, tmp_path / "z" / "b.png")
    second = save(rgb, tmp_path / "a" / "c.jpg")
    found = data_loader.find_images([str(tmp_path / "z"), str(tmp_path / "a")])
    assert found == sorted([first, second]) == [second, first]


def test_find_images_missing_folder_exact_message(tmp_path):
    folder = str(tmp_path / "does_not_exist")
    with pytest.raises(DataError) as info:
        data_loader.find_images([folder])
    assert str(info.value) == f"--data-dir {folder}: not a folder"


def test_find_images_file_instead_of_folder(tmp_path):
    path = save(np.zeros((4, 4, 3), np.uint8), tmp_path / "x.png")
    with pytest.raises(DataError) as info:
        data_loader.find_images([path])
    assert str(info.value) == f"--data-dir {path}: not a folder"


def test_find_images_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as info:
        data_loader.find_images([str(folder)])
    assert str(info.value).startswith(f"--data-dir {folder}: no image files")


def test_find_images_folder_without_images(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello")
    (folder / "sub" / "b.csv").write_text("1,2")
    with pytest.raises(DataError) as info:
        data_loader.find_images([str(folder)])
    assert str(info.value).startswith(f"--data-dir {folder}: no image files")


def test_find_images_flag_changes_message(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError) as info:
        data_loader.find_images([missing], flag="--val-dir")
    assert str(info.value) == f"--val-dir {missing}: not a folder"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        data_loader.find_images([str(empty)], "--val-dir")
    assert str(info.value).startswith(f"--val-dir {empty}: no image files")


def test_data_errors_are_user_errors_with_status_2(tmp_path):
    assert issubclass(DataError, utils.UserError)
    with pytest.raises(utils.UserError) as info:
        data_loader.find_images([str(tmp_path / "nope")])
    assert isinstance(info.value, DataError)
    assert info.value.status == 2


def test_photo_files_of_given_folders_are_their_images(tmp_path, make_photos):
    make_photos(tmp_path / "a", 2)
    make_photos(tmp_path / "b" / "deeper", 3)
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    found = data_loader.photo_files(folders)
    assert found == data_loader.find_images(folders)
    assert len(found) == 5
    with pytest.raises(DataError, match="not a folder"):
        data_loader.photo_files([str(tmp_path / "missing")])


# ------------------------------------------------------------------------------------------
# Decoding: every colour mode -> 8-bit RGB


@pytest.mark.parametrize("loader", ["load_rgb", "try_load"])
def test_grayscale(tmp_path, loader):
    gray = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (10, 1))  # (10, 24)
    path = save(Image.fromarray(gray, "L"), tmp_path / "gray.png")
    out = getattr(data_loader, loader)(path)
    assert_rgb8(out, (10, 24))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :6, 3] = 255   # left half opaque
    rgba[:, 6:, 3] = 0     # right half fully transparent
    rgba[0, 0] = (200, 100, 50, 128)  # half transparent over white
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (8, 12))
    assert np.all(out[:, 6:] == 255)
    assert np.all(out[1:, :6] == (10, 20, 30))
    expected = np.round(np.array([200, 100, 50]) * 128 / 255 + 255 * (127 / 255))
    np.testing.assert_allclose(out[0, 0], expected, atol=1.5)


def test_palette(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    assert pal.mode == "P"
    path = save(pal, tmp_path / "pal.png")
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (9, 14))
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 1


def test_palette_with_transparent_index_becomes_white(tmp_path):
    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] + [0] * (254 * 3))
    pal.paste(1, (0, 0, 3, 4))  # left half: index 1 (red); right half index 0 (blue)
    path = save(pal, tmp_path / "pal_t.png", transparency=0)
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (4, 6))
    assert np.all(out[:, :3] == (255, 0, 0))
    assert np.all(out[:, 3:] == 255)


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    path = save(cmyk, tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (8, 16))
    mean = out.reshape(-1, 3).mean(axis=0)
    assert mean[0] > 230 and mean[1] < 25 and mean[2] < 25, mean


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535], [65535, 32768, 1000, 0]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (2, 4))
    for c in range(3):
        channel = out[..., c].astype(int)
        assert channel[0, 3] == 255 and channel[1, 0] == 255
        assert abs(channel[0, 2] - 128) <= 1 and abs(channel[1, 1] - 128) <= 1
        assert channel[0, 0] == 0 and channel[1, 3] == 0
        assert channel[0, 1] == 1
        assert abs(channel[1, 2] - 1000 * 255 / 65535) <= 1


def test_16bit_grayscale_png_through_try_load(tmp_path):
    values = np.full((6, 5), 32768, dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "half.png")
    out = data_loader.try_load(path)
    assert_rgb8(out, (6, 5))
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_exif_rotated_jpeg(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)   # left half red
    stored[:, 16:] = (0, 0, 255)   # right half blue
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = save(img, tmp_path / "rotated.jpg", exif=exif, quality=95, subsampling=0)
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (32, 16))  # transposed with respect to the stored (16, 32)
    # Rotating the stored pixels 90 degrees clockwise puts the left half on top.
    expected = np.rot90(stored, k=-1)
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff[:12].max() < 40 and diff[20:].max() < 40  # away from the red/blue edge
    assert out[:14, :, 0].mean() > 200 and out[18:, :, 2].mean() > 200


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 7), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2
    out = data_loader.load_rgb(path)
    assert_rgb8(out, (7, 10))
    assert np.all(out == (255, 0, 0))


def test_plain_rgb_png_round_trips(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save(rgb, tmp_path / "rgb.png")
    np.testing.assert_array_equal(data_loader.load_rgb(path), rgb)


def test_jpeg_draft_keeps_shorter_edge_at_least_min_side(tmp_path, make_photos):
    (path,) = make_photos(tmp_path, count=1, size=(192, 256))
    full = data_loader.load_rgb(path)
    assert full.shape == (192, 256, 3)
    small = data_loader.load_rgb(path, min_side=48)
    assert min(small.shape[:2]) >= 48
    assert small.shape[0] < 192  # decoded at reduced size
    assert small.shape[0] * 256 == small.shape[1] * 192  # aspect ratio kept


# ------------------------------------------------------------------------------------------
# Undecodable files


@pytest.mark.parametrize("kind", ["random.jpg", "empty.png"])
def test_bad_file_skipped_with_one_warning(tmp_path, capsys, kind):
    path = str(tmp_path / kind)
    if kind == "empty.png":
        open(path, "wb").close()
    else:
        write_corrupt(path)
    assert data_loader.try_load(path) is None
    assert data_loader.try_load(path) is None  # second time: no second warning
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert path in lines[0]
    assert lines[0].startswith("warning: skipping ")
    assert path not in captured.out
    assert data_loader.BAD_FILES.sorted() == [path]


def test_two_bad_files_two_lines(tmp_path, capsys):
    a = write_corrupt(tmp_path / "a.jpg", seed=1)
    b = str(tmp_path / "b.png")
    open(b, "wb").close()
    for path in (a, b, a, b):
        assert data_loader.try_load(path) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert a in lines[0] and b in lines[1]


def test_bad_files_reports_each_path_once_even_from_several_threads(capsys):
    bad = data_loader.BadFiles()
    barrier = threading.Barrier(8)

    def report(path):
        barrier.wait()
        for _ in range(20):
            bad.report(path, "cannot decode it")
    threads = [threading.Thread(target=report, args=(path,))
               for path in ["/p/b.jpg", "/p/a.png"] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == ["warning: skipping /p/a.png: cannot decode it",
                             "warning: skipping /p/b.jpg: cannot decode it"]
    assert "/p/a.png" in bad and "/p/b.jpg" in bad and "/p/c.jpg" not in bad
    assert bad.sorted() == ["/p/a.png", "/p/b.jpg"]


def test_bad_files_reset_reports_a_path_again(capsys):
    bad = data_loader.BadFiles()
    bad.report("/p/a.png", "empty image")
    bad.reset()
    assert "/p/a.png" not in bad and bad.sorted() == []
    bad.report("/p/a.png", "empty image")
    assert capsys.readouterr().err.splitlines() == ["warning: skipping /p/a.png: empty image"] * 2
    assert bad.sorted() == ["/p/a.png"]


def test_try_load_reports_into_the_module_list(tmp_path, capsys):
    path = write_corrupt(tmp_path / "bad.jpg")
    assert data_loader.try_load(path) is None
    assert path in data_loader.BAD_FILES
    data_loader.BAD_FILES.reset()  # a new dataset: reported again
    assert data_loader.try_load(path) is None
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_load_rgb_raises_on_corrupt_file(tmp_path):
    path = write_corrupt(tmp_path / "bad.jpg")
    with pytest.raises(Exception):
        data_loader.load_rgb(path)


# ------------------------------------------------------------------------------------------
# Mean pixel


def test_mean_pixel_of_solid_colour(tmp_path):
    colour = (200, 100, 50)
    files = [save(np.full((20 + i, 30, 3), colour, np.uint8), tmp_path / f"s{i}.png")
             for i in range(3)]
    mean = data_loader.compute_mean_pixel(files, seed=0)
    assert mean.shape == (3,)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, np.array(colour) / 255.0, atol=1e-3)


def test_mean_pixel_of_two_colours(tmp_path):
    files = [save(np.full((16, 16, 3), (255, 0, 0), np.uint8), tmp_path / "r.png"),
             save(np.full((16, 16, 3), (0, 0, 255), np.uint8), tmp_path / "b.png")]
    mean = data_loader.compute_mean_pixel(files, seed=5)
    np.testing.assert_allclose(mean, [0.5, 0.0, 0.5], atol=1e-3)


def test_mean_pixel_skips_corrupt_files(tmp_path, capsys):
    files = [save(np.full((16, 16, 3), (30, 60, 90), np.uint8), tmp_path / "ok.png"),
             write_corrupt(tmp_path / "bad.jpg")]
    mean = data_loader.compute_mean_pixel(files, seed=0)
    np.testing.assert_allclose(mean, np.array([30, 60, 90]) / 255.0, atol=1e-3)
    assert files[1] in capsys.readouterr().err


def test_mean_pixel_all_corrupt_raises(tmp_path):
    files = [write_corrupt(tmp_path / f"bad{i}.jpg", seed=i) for i in range(3)]
    with pytest.raises(DataError) as info:
        data_loader.compute_mean_pixel(files, seed=0)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------------------------------
# Validation split


DEFAULT_SPLIT = config_module.Config().val_split


def test_split_validation_deterministic_disjoint_complete():
    files = [f"/photos/{i:02d}.jpg" for i in range(8)]
    train, val = data_loader.split_validation(files, 3, DEFAULT_SPLIT)
    assert (train, val) == data_loader.split_validation(files, 3, DEFAULT_SPLIT)
    assert val == ["/photos/06.jpg"]  # the photo held out before --val-split existed
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(files)
    assert train == [f for f in files if f in set(train)]  # order kept


def test_the_default_split_is_5_percent_between_1_and_64_photos():
    assert DEFAULT_SPLIT == 0.05
    files = [f"{i:02d}.jpg" for i in range(40)]
    assert data_loader.split_validation(files, 0, DEFAULT_SPLIT)[1] == ["25.jpg", "33.jpg"]
    for count, expected in ((2, 1), (39, 1), (40, 2), (100, 5), (1280, 64), (2000, 64)):
        files = [f"{i:04d}.jpg" for i in range(count)]
        train, val = data_loader.split_validation(files, 0, DEFAULT_SPLIT)
        assert (len(train), len(val)) == (count - expected, expected)


@pytest.mark.parametrize("split, expected", [
    (0.1, ["10.jpg", "19.jpg", "24.jpg", "31.jpg"]), (0.5, 20), (0.01, 1), (3, 3), (39, 39)])
def test_a_fraction_or_a_count_of_the_photos_is_kept_aside(split, expected):
    files = [f"{i:02d}.jpg" for i in range(40)]
    train, val = data_loader.split_validation(files, 0, split)
    if isinstance(expected, list):
        assert val == expected
    else:
        assert len(val) == expected
    assert sorted(train + val) == files and not set(train) & set(val)
    assert data_loader.split_validation(files, 0, split) == (train, val)


def test_split_validation_seed_matters():
    files = [f"/photos/{i:03d}.jpg" for i in range(100)]
    splits = {tuple(data_loader.split_validation(files, seed, DEFAULT_SPLIT)[1])
              for seed in range(5)}
    assert len(splits) > 1
    train, val = data_loader.split_validation(files, 0, DEFAULT_SPLIT)
    assert len(val) == 5 and len(train) == 95
    assert set(train) | set(val) == set(files) and not set(train) & set(val)


def test_split_validation_single_file():
    files = ["/photos/only.jpg"]
    train, val = data_loader.split_validation(files, 0, DEFAULT_SPLIT)
    assert list(train) == files and list(val) == files


@pytest.mark.parametrize("count, photos", [(5, 5), (6, 5), (1, 1)])
def test_a_count_that_leaves_no_training_photo_is_a_data_error(count, photos):
    files = [f"{i}.jpg" for i in range(photos)]
    with pytest.raises(DataError) as info:
        data_loader.split_validation(files, 0, count)
    assert str(info.value) == (f"--val-split {count}: expected fewer photos than the {photos} of"
                               " --data-dir, so that some are left for training")


# ------------------------------------------------------------------------------------------
# Training pipeline: crops, holes, local patches


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    import conftest
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(48, 64), (64, 48), (40, 40), (50, 70), (48, 64), (36, 60)]):
        path = str(folder / f"photo{i}{'.jpg' if i % 2 == 0 else '.png'}")
        Image.fromarray(conftest.smooth_photo(rng, *size)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def twenty_batches(photo_files):
    data_loader.BAD_FILES.reset()
    return take(data_loader.training_dataset(photo_files, loader_config()), 20)


def test_training_batch_shapes_and_types(twenty_batches):
    expected = dict(image=((BATCH, SIZE, SIZE, 3), np.float32),
                    mask=((BATCH, SIZE, SIZE, 1), np.float32),
                    hole=((BATCH, 4), np.int32), local_fake=((BATCH, 2), np.int32),
                    local_real=((BATCH, 2), np.int32))
    assert len(twenty_batches) == 20
    for batch in twenty_batches:
        assert set(batch) == set(expected)
        for key, (shape, dtype) in expected.items():
            assert batch[key].shape == shape, key
            assert batch[key].dtype == dtype, key


def test_training_images_in_unit_range_and_not_flat(twenty_batches):
    for batch in twenty_batches:
        images = batch["image"]
        assert images.min() >= 0.0 and images.max() <= 1.0
        for image in images:
            assert image.std() > 0.01


def test_training_masks_are_the_holes(twenty_batches):
    for batch in twenty_batches:
        for mask, (y, x, h, w) in zip(batch["mask"], batch["hole"]):
            assert set(np.unique(mask)) <= {0.0, 1.0}
            rows = np.flatnonzero(mask[..., 0].any(axis=1))
            cols = np.flatnonzero(mask[..., 0].any(axis=0))
            assert (rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == \
                (y, x, h, w)
            assert mask.sum() == h * w  # a full rectangle
            assert HOLE_MIN <= h <= HOLE_MAX and HOLE_MIN <= w <= HOLE_MAX
            assert 0 <= y and y + h <= SIZE and 0 <= x and x + w <= SIZE


def test_training_local_patches(twenty_batches):
    for batch in twenty_batches:
        for (y, x, h, w), (ly, lx), (ry, rx) in zip(batch["hole"], batch["local_fake"],
                                                    batch["local_real"]):
            assert 0 <= ly <= SIZE - LOCAL and 0 <= lx <= SIZE - LOCAL
            assert ly <= y and y + h <= ly + LOCAL
            assert lx <= x and x + w <= lx + LOCAL
            # Centred on the hole (paper), moved only as far as the image's edge requires.
            assert (ly, lx) == (np.clip((2 * y + h - LOCAL) // 2, 0, SIZE - LOCAL),
                                np.clip((2 * x + w - LOCAL) // 2, 0, SIZE - LOCAL))
            assert 0 <= ry <= SIZE - LOCAL and 0 <= rx <= SIZE - LOCAL


def test_training_holes_vary_and_cover_the_whole_range(twenty_batches):
    holes = np.concatenate([b["hole"] for b in twenty_batches])
    fakes = np.concatenate([b["local_fake"] for b in twenty_batches])
    reals = np.concatenate([b["local_real"] for b in twenty_batches])
    sizes = holes[:, 2:]
    assert len({tuple(s) for s in sizes}) > 10
    assert sizes.min() == HOLE_MIN and sizes.max() == HOLE_MAX  # both ends inclusive
    assert len({tuple(p) for p in holes[:, :2]}) > 10
    # Real patches are drawn independently of the hole: rarely at the fake patch's place,
    # and often not containing the hole at all.
    assert (reals[:, 0] == fakes[:, 0]).mean() < 0.5
    assert (reals[:, 1] == fakes[:, 1]).mean() < 0.5
    contains = ((reals[:, 0] <= holes[:, 0]) & (holes[:, 0] + holes[:, 2] <= reals[:, 0] + LOCAL)
                & (reals[:, 1] <= holes[:, 1]) & (holes[:, 1] + holes[:, 3] <= reals[:, 1] + LOCAL))
    assert not contains.all()
    assert len({tuple(p) for p in reals}) > 10
    # Positions reach both borders of the image.
    assert (holes[:, 0] == 0).any() or (holes[:, 1] == 0).any()
    assert (holes[:, 0] + holes[:, 2] == SIZE).any() or (holes[:, 1] + holes[:, 3] == SIZE).any()


def test_training_images_differ_within_a_batch(twenty_batches):
    images = twenty_batches[0]["image"]
    for i in range(BATCH):
        for j in range(i + 1, BATCH):
            assert not np.array_equal(images[i], images[j])


def test_training_dataset_same_seed_same_batches(photo_files):
    first = take(data_loader.training_dataset(photo_files, loader_config(seed=11)), 2)
    second = take(data_loader.training_dataset(photo_files, loader_config(seed=11)), 2)
    other = take(data_loader.training_dataset(photo_files, loader_config(seed=12)), 1)
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    assert not np.array_equal(first[0]["hole"], other[0]["hole"])


@pytest.mark.parametrize("k", [1, 3])
def test_training_dataset_resume_at_start_element(photo_files, k):
    config = loader_config(seed=4)
    stream = take(data_loader.training_dataset(photo_files, config), k + 1)
    resumed = take(data_loader.training_dataset(photo_files, config,
                                                start_element=k * config.batch_size), 1)
    for key in stream[k]:
        np.testing.assert_array_equal(resumed[0][key], stream[k][key], err_msg=key)
    assert not np.array_equal(resumed[0]["image"], stream[0]["image"])


def test_pipeline_survives_corrupt_and_odd_files(tmp_path, make_photos, capsys):
    folder = tmp_path / "mixed"
    good = make_photos(folder, count=3, size=(40, 48))
    gray = save(Image.fromarray(np.tile(np.arange(48, dtype=np.uint8) * 5, (40, 1)), "L"),
                folder / "gray.png")
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :24, 3] = 255
    rgba_path = save(Image.fromarray(rgba, "RGBA"), folder / "alpha.png")
    deep = save(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)),
                folder / "deep16.png")
    corrupt = write_corrupt(folder / "corrupt.jpg", nbytes=500)
    files = data_loader.find_images([str(folder)])
    assert set(files) == set(good + [gray, rgba_path, deep, corrupt])

    batches = take(data_loader.training_dataset(files, loader_config(seed=1)), 12)
    assert len(batches) == 12
    for batch in batches:
        assert batch["image"].shape == (BATCH, SIZE, SIZE, 3)
        assert np.all(np.isfinite(batch["image"]))
        assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    err = capsys.readouterr().err
    reported = [line for line in err.splitlines() if corrupt in line]
    assert len(reported) == 1, err  # 48 draws among 7 files: the corrupt one is hit, once
    assert data_loader.BAD_FILES.sorted() == [corrupt]
    for path in (gray, rgba_path, deep) + tuple(good):
        assert path not in err


def test_pipeline_only_corrupt_files_fails(tmp_path):
    files = [write_corrupt(tmp_path / f"bad{i}.jpg", seed=i) for i in range(2)]
    with pytest.raises(Exception, match="no decodable photo"):
        take(data_loader.training_dataset(files, loader_config()), 1)


# ------------------------------------------------------------------------------------------
# Several input pipelines (tf.distribute): each yields its replicas' slices of the
# single-device batches


def test_worker_element_two_pipelines():
    assert [data_loader.worker_element(c, 4, 2, 0) for c in range(4)] == [0, 1, 4, 5]
    assert [data_loader.worker_element(c, 4, 2, 1) for c in range(4)] == [2, 3, 6, 7]


def test_worker_element_one_pipeline_is_the_identity():
    assert [data_loader.worker_element(c, 4, 1, 0) for c in range(12)] == list(range(12))


def test_worker_element_four_pipelines_cover_each_global_batch_once():
    elements = {p: [data_loader.worker_element(c, 8, 4, p) for c in range(6)] for p in range(4)}
    assert elements[0] == [0, 1, 8, 9, 16, 17]
    assert elements[3] == [6, 7, 14, 15, 22, 23]
    for batch in range(3):  # the pipelines' shares of a global batch, in pipeline order
        shares = [elements[p][2 * batch:2 * batch + 2] for p in range(4)]
        assert sum(shares, []) == list(range(8 * batch, 8 * batch + 8))


@pytest.fixture(scope="module")
def noise_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise_photos")
    rng = np.random.default_rng(3)
    for i in range(5):
        tf.keras.utils.save_img(str(folder / f"{i}.png"), rng.integers(0, 255, (40, 44, 3)))
    return data_loader.find_images([str(folder)])


def first_batches(files, config, count, start=0, context=None):
    stream = iter(data_loader.training_dataset(files, config, start, context))
    return [next(stream) for _ in range(count)]


@pytest.mark.parametrize("start_step", [0, 3])
def test_two_workers_split_each_global_batch_without_duplicates(noise_photos, tiny_config,
                                                                start_step):
    config = tiny_config(batch_size=4)
    start = start_step * config.batch_size
    single = first_batches(noise_photos, config, 2, start)
    workers = [first_batches(noise_photos, config, 2, start, tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)) for i in range(2)]
    for step in range(2):
        for key in ("image", "mask", "hole", "local_fake", "local_real"):
            assert workers[0][step][key].shape[0] == 2
            joined = np.concatenate([workers[0][step][key], workers[1][step][key]])
            np.testing.assert_array_equal(joined, single[step][key])
    # Different workers never see the same element within a step.
    assert not np.array_equal(workers[0][0]["image"], workers[1][0]["image"])


def test_one_pipeline_feeding_two_replicas_yields_replica_sized_batches(noise_photos,
                                                                        tiny_config):
    config = tiny_config(batch_size=4)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    halves = first_batches(noise_photos, config, 2, 0, context)
    [single] = first_batches(noise_photos, config, 1)
    # Replica 0 takes the first half of the global batch, replica 1 the second.
    np.testing.assert_array_equal(np.concatenate([halves[0]["image"], halves[1]["image"]]),
                                  single["image"])


# ------------------------------------------------------------------------------------------
# Validation batch


def test_validation_batch_shapes_and_stability(photo_files):
    config = loader_config(seed=2)
    first = data_loader.validation_batch(photo_files[:4], config, count=6)
    second = data_loader.validation_batch(photo_files[:4], config, count=6)
    assert set(first) == {"image", "mask", "hole", "local_fake", "local_real"}
    assert first["image"].shape == (6, SIZE, SIZE, 3)
    assert first["mask"].shape == (6, SIZE, SIZE, 1)
    assert first["hole"].shape == (6, 4)
    assert first["local_fake"].shape == (6, 2) and first["local_real"].shape == (6, 2)
    for key in first:
        assert isinstance(first[key], np.ndarray), key
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert first["image"].min() >= 0 and first["image"].max() <= 1
    for mask, (y, x, h, w), (ly, lx) in zip(first["mask"], first["hole"], first["local_fake"]):
        expected = np.zeros((SIZE, SIZE, 1), np.float32)
        expected[y:y + h, x:x + w] = 1
        np.testing.assert_array_equal(mask, expected)
        assert HOLE_MIN <= h <= HOLE_MAX and HOLE_MIN <= w <= HOLE_MAX
        assert ly <= y and y + h <= ly + LOCAL and lx <= x and x + w <= lx + LOCAL
    assert len({tuple(h) for h in first["hole"]}) > 1


def test_validation_batch_images_are_untouched_centre_crops(photo_files):
    """validation_batch knows nothing of the mean pixel: the hole is not filled."""
    config = loader_config(seed=2)
    files = photo_files[:4]
    batch = data_loader.validation_batch(files, config, count=6)
    for i in range(6):
        expected = data_loader.center_crop(data_loader.try_load(files[i % 4], SIZE), SIZE)
        np.testing.assert_array_equal(batch["image"][i], expected)
    # Inside the hole the picture still varies (it is the photo, not a constant fill).
    y, x, h, w = batch["hole"][0]
    assert batch["image"][0, y:y + h, x:x + w].std() > 0.005


def test_validation_batch_skips_corrupt_and_fails_without_images(tmp_path, photo_files):
    corrupt = write_corrupt(tmp_path / "bad.jpg")
    config = loader_config()
    batch = data_loader.validation_batch([corrupt, photo_files[0]], config, count=2)
    expected = data_loader.center_crop(data_loader.try_load(photo_files[0], SIZE), SIZE)
    np.testing.assert_array_equal(batch["image"][0], expected)
    np.testing.assert_array_equal(batch["image"][1], expected)
    with pytest.raises(DataError):
        data_loader.validation_batch([corrupt], config, count=2)


# ------------------------------------------------------------------------------------------
# random_box / local_patches / hole_mask directly


def test_random_hole_direct_many_seeds():
    seeds = tf.random.experimental.stateless_split([3, 5], 8 * 60)
    for i in range(60):
        hole = data_loader.random_box(seeds[8 * i:8 * i + 4], 64, 20, 32)
        fake, real = (t.numpy() for t in data_loader.local_patches(
            seeds[8 * i + 4:8 * i + 8], hole, 64, 32))
        hole = hole.numpy()
        y, x, h, w = hole
        assert 20 <= h <= 32 and 20 <= w <= 32
        assert 0 <= y <= 64 - h and 0 <= x <= 64 - w
        assert fake[0] <= y and y + h <= fake[0] + 32 and 0 <= fake[0] <= 32
        assert fake[1] <= x and x + w <= fake[1] + 32 and 0 <= fake[1] <= 32
        assert 0 <= real[0] <= 32 and 0 <= real[1] <= 32


@pytest.mark.parametrize("hole, expected", [
    ([20, 30, 10, 12], [9, 20]),   # inside: the centres coincide (25 = 9 + 16, 36 = 20 + 16)
    ([0, 0, 8, 8], [0, 0]),        # at the top-left corner: clamped
    ([56, 50, 8, 14], [32, 32]),   # at the bottom-right corner: clamped to 64 - 32
    ([10, 3, 9, 9], [0, 0]),       # an odd hole near the edge: its centre 14.5 is < 16
])
def test_the_local_patch_is_centred_on_the_hole(hole, expected):
    assert data_loader.centred_patch(hole, 64, 32).numpy().tolist() == expected


def test_hole_mask_values():
    mask = data_loader.hole_mask(tf.constant([2, 5, 3, 4]), 10).numpy()
    expected = np.zeros((10, 10, 1), np.float32)
    expected[2:5, 5:9] = 1
    np.testing.assert_array_equal(mask, expected)


# ------------------------------------------------------------------------------------------
# utils: network input and local patches


def test_completion_input_fills_hole_with_mean_pixel():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    masks = np.zeros((2, 16, 16, 1), np.float32)
    masks[0, 2:7, 3:12] = 1
    masks[1, 9:16, 0:5] = 1
    mean = np.array([0.1, 0.5, 0.9], np.float32)
    out = np.asarray(utils.completion_input(tf.constant(images), tf.constant(masks),
                                            tf.constant(mean)))
    assert out.shape == (2, 16, 16, 4)
    inside = masks[..., 0] == 1
    np.testing.assert_allclose(out[..., :3][inside], np.broadcast_to(mean, (inside.sum(), 3)),
                               atol=1e-7)
    np.testing.assert_array_equal(out[..., :3][~inside], images[~inside])
    np.testing.assert_array_equal(out[..., 3], masks[..., 0])


def test_completion_input_accepts_numpy_mean_pixel():
    images = np.full((1, 8, 8, 3), 0.25, np.float32)
    masks = np.zeros((1, 8, 8, 1), np.float32)
    masks[0, :4] = 1
    out = np.asarray(utils.completion_input(images, masks, np.array([1.0, 0.0, 0.5], np.float32)))
    np.testing.assert_allclose(out[0, :4, :, :3], np.broadcast_to([1.0, 0.0, 0.5], (4, 8, 3)))
    np.testing.assert_allclose(out[0, 4:, :, :3], 0.25)


def test_crop_patches_matches_numpy_slicing():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    offsets = np.array([[0, 0], [16, 5], [7, 16]], np.int32)
    patches = np.asarray(utils.crop_patches(tf.constant(images), tf.constant(offsets), 16))
    assert patches.shape == (3, 16, 16, 3)
    for b, (y, x) in enumerate(offsets):
        np.testing.assert_array_equal(patches[b], images[b, y:y + 16, x:x + 16])


def test_crop_patches_on_pipeline_batch(twenty_batches):
    batch = twenty_batches[0]
    for key in ("local_fake", "local_real"):
        patches = np.asarray(utils.crop_patches(tf.constant(batch["image"]),
                                                tf.constant(batch[key]), LOCAL))
        for b, (y, x) in enumerate(batch[key]):
            np.testing.assert_array_equal(patches[b], batch["image"][b, y:y + LOCAL, x:x + LOCAL])


# ------------------------------------------------------------------------------------------
# Hole shapes: the paper's rectangles and free-form brush strokes (--hole-shape)


def bounding_box(mask):
    rows = np.flatnonzero(mask[..., 0].any(axis=1))
    cols = np.flatnonzero(mask[..., 0].any(axis=0))
    return rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def free_config(seed=0):
    return dataclasses.replace(loader_config(seed), hole_shape="free", batch_size=2)


@pytest.mark.parametrize("shape", ["rect", "free"])
def test_random_mask_is_a_binary_hole_with_its_tight_bounding_box(shape):
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask, hole = data_loader.random_mask(rng, SIZE, HOLE_MIN, HOLE_MAX, shape)
        assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.float32
        assert hole.shape == (4,) and hole.dtype == np.int32
        assert set(np.unique(mask)) == {0.0, 1.0}
        y, x, h, w = hole
        assert bounding_box(mask) == (y, x, h, w)
        assert 0 <= y and y + h <= SIZE and 0 <= x and x + w <= SIZE
        low = HOLE_MIN if shape == "rect" else 1
        assert low <= h <= HOLE_MAX and low <= w <= HOLE_MAX
        if shape == "rect":
            assert mask.sum() == h * w


def test_free_masks_are_strokes_inside_the_rectangle_of_the_same_draw():
    fills = []
    for seed in range(20):
        free, (y, x, h, w) = data_loader.random_mask(np.random.default_rng(seed), SIZE,
                                                     HOLE_MIN, HOLE_MAX, "free")
        rect, _ = data_loader.random_mask(np.random.default_rng(seed), SIZE, HOLE_MIN,
                                          HOLE_MAX, "rect")
        assert np.all(free <= rect)  # the strokes never leave their box
        fills.append(free.sum() / (h * w))
    assert sum(fill < 1 for fill in fills) >= 15, fills


def test_random_mask_same_seed_same_mask():
    for shape in ("rect", "free"):
        a = data_loader.random_mask(np.random.default_rng(7), SIZE, HOLE_MIN, HOLE_MAX, shape)
        b = data_loader.random_mask(np.random.default_rng(7), SIZE, HOLE_MIN, HOLE_MAX, shape)
        c = data_loader.random_mask(np.random.default_rng(8), SIZE, HOLE_MIN, HOLE_MAX, shape)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])


def test_random_mask_unknown_shape_is_loud():
    with pytest.raises(ValueError, match="star"):
        data_loader.random_mask(np.random.default_rng(0), SIZE, HOLE_MIN, HOLE_MAX, "star")


def centred(hole):
    y, x, h, w = hole
    return [min(max((2 * y + h - LOCAL) // 2, 0), SIZE - LOCAL),
            min(max((2 * x + w - LOCAL) // 2, 0), SIZE - LOCAL)]


def test_rect_hole_stream_unchanged_by_free_form_holes(photo_files):
    """Holes and local patches of the rectangle stream, as computed before free-form holes."""
    config = dataclasses.replace(loader_config(seed=5), batch_size=2)
    batches = take(data_loader.training_dataset(photo_files, config), 3)
    expected = dict(
        hole=[[2, 13, 6, 9], [11, 15, 11, 7], [3, 6, 6, 8], [1, 3, 11, 12], [16, 11, 9, 7],
              [10, 5, 12, 8]],
        local_real=[[8, 13], [0, 7], [3, 7], [14, 13], [3, 1], [3, 5]])
    expected["local_fake"] = [centred(hole) for hole in expected["hole"]]
    for key, values in expected.items():
        np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), values,
                                      err_msg=key)
    val = data_loader.validation_batch(photo_files[:1], config, count=3)
    np.testing.assert_array_equal(val["hole"], [[0, 19, 9, 9], [7, 6, 9, 12], [19, 20, 6, 10]])
    np.testing.assert_array_equal(val["local_fake"], [centred(hole) for hole in val["hole"]])
    np.testing.assert_array_equal(val["local_real"], [[5, 5], [10, 9], [16, 1]])


def check_free_holes(batch):
    for mask, hole, (ly, lx), (ry, rx) in zip(batch["mask"], batch["hole"], batch["local_fake"],
                                              batch["local_real"]):
        y, x, h, w = hole
        assert set(np.unique(mask)) == {0.0, 1.0}
        assert bounding_box(mask) == (y, x, h, w)
        assert 1 <= h <= HOLE_MAX and 1 <= w <= HOLE_MAX
        assert 0 <= ly <= SIZE - LOCAL and 0 <= lx <= SIZE - LOCAL
        assert ly <= y and y + h <= ly + LOCAL and lx <= x and x + w <= lx + LOCAL
        assert 0 <= ry <= SIZE - LOCAL and 0 <= rx <= SIZE - LOCAL


def test_training_dataset_free_holes(photo_files):
    config = free_config(seed=3)
    batches = take(data_loader.training_dataset(photo_files, config), 5)
    for batch in batches:
        assert batch["mask"].shape == (2, SIZE, SIZE, 1) and batch["mask"].dtype == np.float32
        assert batch["hole"].shape == (2, 4) and batch["hole"].dtype == np.int32
        assert batch["local_fake"].dtype == batch["local_real"].dtype == np.int32
        check_free_holes(batch)
    masks = np.concatenate([b["mask"] for b in batches])
    holes = np.concatenate([b["hole"] for b in batches])
    assert len({m.tobytes() for m in masks}) == len(masks)
    assert (masks.sum(axis=(1, 2, 3)) < holes[:, 2] * holes[:, 3]).sum() >= len(masks) // 2
    again = take(data_loader.training_dataset(photo_files, config), 1)[0]
    resumed = take(data_loader.training_dataset(photo_files, config, start_element=2), 1)[0]
    for key in again:
        np.testing.assert_array_equal(again[key], batches[0][key], err_msg=key)
        np.testing.assert_array_equal(resumed[key], batches[1][key], err_msg=key)


def test_validation_batch_free_holes_are_deterministic(photo_files):
    config = free_config(seed=2)
    first = data_loader.validation_batch(photo_files[:2], config, count=4)
    second = data_loader.validation_batch(photo_files[:2], config, count=4)
    for key in first:
        assert isinstance(first[key], np.ndarray), key
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert first["mask"].shape == (4, SIZE, SIZE, 1) and first["hole"].shape == (4, 4)
    check_free_holes(first)
    assert len({m.tobytes() for m in first["mask"]}) == 4
    other = data_loader.validation_batch(photo_files[:2], free_config(seed=9), count=4)
    assert not np.array_equal(first["mask"], other["mask"])


# ------------------------------------------------------------------------------------------
# Several holes per image (--max-holes): the first drawn as with one hole, the patch centred
# on it, the mask the union of them all


def holes_config(seed=0, shape="rect", max_holes=3, batch_size=4):
    return dataclasses.replace(loader_config(seed), hole_shape=shape, max_holes=max_holes,
                               batch_size=batch_size)


def digest(masks):
    return hashlib.sha256(np.packbits(masks > 0).tobytes()).hexdigest()[:16]


# The streams of seed 5 as computed before --max-holes: holes, mask areas and digests, and the
# validation batch's holes and masks.
ONE_HOLE_STREAMS = {
    "rect": dict(hole=[[2, 13, 6, 9], [11, 15, 11, 7], [3, 6, 6, 8], [1, 3, 11, 12],
                       [16, 11, 9, 7], [10, 5, 12, 8]],
                 areas=[54, 77, 48, 132, 63, 96], masks="ce3baf38b5fc141e",
                 val_hole=[[0, 19, 9, 9], [7, 6, 9, 12], [19, 20, 6, 10]],
                 val_masks="89ac3199c2d40ede"),
    "free": dict(hole=[[11, 8, 12, 11], [7, 15, 9, 8], [14, 12, 4, 5], [22, 18, 3, 8],
                       [11, 3, 9, 12], [10, 20, 2, 4]],
                 areas=[74, 42, 11, 12, 60, 4], masks="da3517de4b81219a",
                 val_hole=[[12, 9, 8, 9], [9, 3, 8, 11], [21, 11, 8, 5]],
                 val_masks="faa46f95b4b7ffbd"),
}


@pytest.mark.parametrize("shape", ["rect", "free"])
def test_one_hole_per_image_is_the_stream_of_before(photo_files, shape):
    """--max-holes 1 (the default): a session trained before --max-holes resumes on the same
    data."""
    expected = ONE_HOLE_STREAMS[shape]
    config = holes_config(seed=5, shape=shape, max_holes=1, batch_size=2)
    batches = take(data_loader.training_dataset(photo_files, config), 3)
    got = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    np.testing.assert_array_equal(got["hole"], expected["hole"])
    np.testing.assert_array_equal(got["local_fake"], [centred(hole) for hole in got["hole"]])
    np.testing.assert_array_equal(got["local_real"], [[8, 13], [0, 7], [3, 7], [14, 13], [3, 1],
                                                      [3, 5]])
    np.testing.assert_array_equal(got["mask"].sum(axis=(1, 2, 3)), expected["areas"])
    assert digest(got["mask"]) == expected["masks"]
    val = data_loader.validation_batch(photo_files[:1], config, count=3)
    np.testing.assert_array_equal(val["hole"], expected["val_hole"])
    assert digest(val["mask"]) == expected["val_masks"]


@pytest.mark.parametrize("shape", ["rect", "free"])
def test_more_holes_only_add_to_the_mask(photo_files, shape):
    """Images, the first hole and both local patches are those of one hole per image."""
    one = take(data_loader.training_dataset(photo_files, holes_config(2, shape, 1)), 3)
    more = take(data_loader.training_dataset(photo_files, holes_config(2, shape, 3)), 3)
    for a, b in zip(one, more):
        for key in ("image", "hole", "local_fake", "local_real"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert np.all(b["mask"] >= a["mask"])
    assert any(not np.array_equal(a["mask"], b["mask"]) for a, b in zip(one, more))


@pytest.mark.parametrize("shape", ["rect", "free"])
def test_each_image_gets_1_to_n_holes_and_the_patch_holds_one(photo_files, shape):
    config = holes_config(seed=3, shape=shape, max_holes=3)
    batches = take(data_loader.training_dataset(photo_files, config), 6)
    counts = []
    for t, batch in enumerate(batches):
        for b in range(config.batch_size):
            k = t * config.batch_size + b  # the element's index in the stream
            union, boxes = data_loader.more_holes(config, [config.seed, k, 2])
            counts.append(1 + len(boxes))
            for y, x, h, w in boxes:
                low = HOLE_MIN if shape == "rect" else 1
                assert low <= h <= HOLE_MAX and low <= w <= HOLE_MAX
                assert 0 <= y and y + h <= SIZE and 0 <= x and x + w <= SIZE
                assert union[y:y + h, x:x + w].any()
            # The mask: the first hole (a rectangle, or strokes inside their box) and the others.
            mask, (y, x, h, w) = batch["mask"][b], batch["hole"][b]
            box = np.zeros_like(mask)
            box[y:y + h, x:x + w] = 1
            first = box if shape == "rect" else mask * box
            assert first.any() and set(np.unique(mask)) == {0.0, 1.0}
            np.testing.assert_array_equal(mask, np.maximum(first, union))
            # The local patch: centred on the first hole, inside the image, holding it whole.
            ly, lx = batch["local_fake"][b]
            assert [ly, lx] == centred((y, x, h, w))
            assert 0 <= ly <= SIZE - LOCAL and 0 <= lx <= SIZE - LOCAL
            assert ly <= y and y + h <= ly + LOCAL and lx <= x and x + w <= lx + LOCAL
    assert set(counts) == {1, 2, 3}


def test_several_holes_are_a_pure_function_of_seed_and_element(photo_files, noise_photos):
    config = holes_config(seed=4, shape="free")
    stream = take(data_loader.training_dataset(photo_files, config), 3)
    again = take(data_loader.training_dataset(photo_files, config), 3)
    resumed = take(data_loader.training_dataset(photo_files, config,
                                                start_element=2 * config.batch_size), 1)
    other = take(data_loader.training_dataset(photo_files, holes_config(seed=5, shape="free")), 1)
    for a, b in zip(stream, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in stream[2]:
        np.testing.assert_array_equal(resumed[0][key], stream[2][key], err_msg=key)
    assert not np.array_equal(other[0]["mask"], stream[0]["mask"])
    # Two workers' pipelines together yield the single-device batches.
    single = first_batches(noise_photos, config, 2, 4)
    workers = [first_batches(noise_photos, config, 2, 4, tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)) for i in range(2)]
    for step in range(2):
        for key in single[step]:
            joined = np.concatenate([workers[0][step][key], workers[1][step][key]])
            np.testing.assert_array_equal(joined, single[step][key], err_msg=key)


def test_the_validation_batch_has_as_many_holes_and_stays_fixed(photo_files):
    config = holes_config(seed=2, max_holes=3)
    one = data_loader.validation_batch(photo_files[:2], holes_config(seed=2, max_holes=1), 8)
    first = data_loader.validation_batch(photo_files[:2], config, count=8)
    second = data_loader.validation_batch(photo_files[:2], config, count=8)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    for key in ("image", "hole", "local_fake", "local_real"):
        np.testing.assert_array_equal(first[key], one[key], err_msg=key)
    assert np.all(first["mask"] >= one["mask"])
    assert (first["mask"].sum(axis=(1, 2, 3)) > one["mask"].sum(axis=(1, 2, 3))).any()


# ------------------------------------------------------------------------------------------
# --data-weights: how often each folder is drawn from


def colour_folders(tmp_path, counts):
    """One folder per count, its photos a plain colour of its own (red, green, blue, ...)."""
    folders = []
    for index, count in enumerate(counts):
        folder = tmp_path / f"folder{index}"
        folder.mkdir()
        for i in range(count):
            pixel = np.zeros(3, np.uint8)
            pixel[index] = 255
            save(np.tile(pixel, (SIZE * 2, SIZE * 2, 1)), folder / f"p{i}.png")
        folders.append(str(folder))
    return folders


def folder_shares(folders, weights, batches=40):
    config = dataclasses.replace(loader_config(seed=3), data_dir=folders, data_weights=weights)
    files = data_loader.find_images(folders)
    images = np.concatenate([b["image"] for b in take(
        data_loader.training_dataset(files, config), batches)])
    owner = images.mean(axis=(1, 2)).argmax(axis=1)  # the colour says the folder
    return np.bincount(owner, minlength=len(folders)) / len(owner)


def test_data_weights_draw_each_folder_as_often_as_its_weight(tmp_path):
    folders = colour_folders(tmp_path, [9, 1])
    unweighted = folder_shares(folders, [])
    assert unweighted[1] < 0.25  # 1 photo in 10: about a tenth of the draws
    even = folder_shares(folders, [1, 1])
    assert 0.35 < even[1] < 0.65  # 160 draws, half expected from the lone photo
    skewed = folder_shares(folders, [1, 3])
    assert skewed[1] > 0.6


def test_data_weights_probabilities_exact(tmp_path):
    folders = colour_folders(tmp_path, [3, 1])
    files = data_loader.find_images(folders)
    cumulative = data_loader.draw_probabilities(files, folders, [1.0, 2.0])
    np.testing.assert_allclose(np.diff(cumulative, prepend=0), [1 / 9, 1 / 9, 1 / 9, 2 / 3])
    assert data_loader.draw_probabilities(files, folders, []) is None


def test_data_weights_without_weights_the_stream_is_unchanged(tmp_path):
    folders = colour_folders(tmp_path, [2, 3])
    files = data_loader.find_images(folders)
    plain = take(data_loader.training_dataset(files, loader_config(seed=5)), 3)
    config = dataclasses.replace(loader_config(seed=5), data_dir=folders)
    same = take(data_loader.training_dataset(files, config), 3)
    for a, b in zip(plain, same):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_data_weights_folder_left_without_photos_exact_message(tmp_path):
    folders = colour_folders(tmp_path, [3, 1])
    files = data_loader.find_images(folders)[:3]  # the lone photo is a validation photo
    with pytest.raises(DataError) as error:
        data_loader.draw_probabilities(files, folders, [1.0, 1.0])
    assert str(error.value) == (f"--data-weights: --data-dir {folders[1]} has no photo left to"
                                " train on")


def test_data_weights_one_per_folder_exact_message():
    with pytest.raises(config_module.ConfigError) as error:
        config_module.resolve(config_module.preset_config("quick"),
                              dict(data_dir=["a", "b"], data_weights=[1.0]))
    assert str(error.value) == "--data-weights: expected one weight per --data-dir folder (2),"\
        " got [1.0]"
