"""The pretrained models shipped in pretrained/: their files, their metadata, and photos
completed with them (the default with no session and no flag)."""
import os

import numpy as np
import pytest
from conftest import run_main
from PIL import Image

import complete
import evaluate
import exports
from model import NETWORK_VERSION, build_completion_network

FILES = {"glcic.json", exports.FLOAT16_WEIGHTS, "README.md"}


def test_the_files_are_small_and_complete():
    # and, once used, its conversion for ONNX Runtime (not in git)
    assert set(os.listdir(exports.PRETRAINED)) - {exports.ONNX_FILE} == FILES
    size = os.path.getsize(os.path.join(exports.PRETRAINED, exports.FLOAT16_WEIGHTS))
    assert 1_000_000 < size < 15_000_000


def test_the_metadata_says_how_it_was_trained_and_how_it_scores():
    mean_pixel, config, meta = exports.read_metadata(exports.PRETRAINED)
    assert meta["network_version"] == NETWORK_VERSION
    assert (config.preset, config.image_size, config.width_divisor, config.batch_size) == (
        "cpu", 128, 2, 8)
    assert (config.tc, config.td, config.total_iters, config.bn_batches) == (8750, 1000, 16000, 50)
    assert (config.optimizer, config.learning_rate, config.lr_drops, config.lr_drop_factor,
            config.d_learning_rate) == ("adam", 2e-4, [3786, 6277], 0.25, 2e-4)
    assert config.data_dir == ["prepared/wallpapers"] and config.val_dir == "prepared/heldout"
    assert meta["training"]["iteration"] == config.tc  # the end of phase 1
    held_out = meta["training"]["held_out"]
    assert set(held_out) == {"model", "model + blend", "OpenCV Telea"}
    # What docs/results.md says of it: blended, it beats Telea's PSNR and MSE in the hole; the raw
    # network beats Telea's MSE there, not its L1.
    model, blend, telea = (held_out[m] for m in ("model", "model + blend", "OpenCV Telea"))
    assert blend["psnr_hole"] > telea["psnr_hole"] + 0.5
    assert blend["l2_hole"] < model["l2_hole"] < telea["l2_hole"]
    assert model["l1_hole"] > telea["l1_hole"]
    np.testing.assert_allclose(mean_pixel, [0.4458, 0.4694, 0.4727], atol=1e-4)


def test_it_completes_a_photo_by_default(tmp_path, capsys):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 3, (90, 130, 3)), axis=0)
    photo = np.clip(smooth - smooth.min() + 40, 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert run_main(complete, ["--input", "photo.png", "--box", "40,30,36,28", "--output",
                               "out.png"], tmp_path) == 0
    assert capsys.readouterr().out.startswith(
        "Using the pretrained model pretrained/wallpapers (neither --session nor --model given)")
    out = np.asarray(Image.open(tmp_path / "out.png"))
    hole = np.zeros(photo.shape[:2], bool)
    hole[30:58, 40:76] = True
    np.testing.assert_array_equal(out[~hole], photo[~hole])
    # The hole holds a completion near its surroundings, not the mean-pixel fill.
    mean_fill = complete.mean_fill(photo, hole, exports.read_metadata(exports.PRETRAINED)[0])
    assert not np.array_equal(out[hole], mean_fill[hole])
    assert evaluate.l1(out / 255, photo / 255, hole) < evaluate.l1(mean_fill / 255, photo / 255,
                                                                   hole)


GAN = os.path.join(os.path.dirname(exports.PRETRAINED), "wallpapers-gan")


def test_the_adversarially_trained_model_is_small_and_says_how_it_was_trained():
    assert set(os.listdir(GAN)) - {exports.ONNX_FILE} == FILES
    assert 1_000_000 < os.path.getsize(os.path.join(GAN, exports.FLOAT16_WEIGHTS)) < 15_000_000
    mean_pixel, config, meta = exports.read_metadata(GAN)
    first, _, _ = exports.read_metadata(exports.PRETRAINED)
    np.testing.assert_array_equal(mean_pixel, first)  # the phase-1 model's, trained on
    assert meta["network_version"] == NETWORK_VERSION
    assert (config.init_from, config.tc, config.td, config.total_iters) == (
        "pretrained/wallpapers", 0, 300, 1600)
    assert (config.d_batches, config.d_lowpass, config.alpha, config.recon_loss,
            config.checkerboard_penalty, config.stripes_penalty, config.ema_decay) == (
        "joint", True, 0.04, "l1", 1.0, 0.1, 0.995)
    assert (config.data_dir, config.val_split, config.val_dir) == (["prepared/wallpapers"], 12, "")
    # The moving average of checkpoint 1100: 800 updates, one per phase-3 iteration.
    assert meta["training"]["iteration"] == 1100
    assert meta["training"]["moving_average"] == {"decay": 0.995, "updates": 800}


def completed_by(model, tmp_path, seed):
    """(photo, the model's completion of a 36 x 28 box in it, the box's hole): a smooth photo
    written to tmp_path/photo.png, completed by complete.py --model into out.png; the pixels
    outside the hole checked to be the photo's."""
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.normal(0, 3, (96, 128, 3)), axis=0)
    photo = np.clip(smooth - smooth.min() + 40, 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert run_main(complete, ["--model", model, "--input", "photo.png", "--box", "40,30,36,28",
                               "--output", "out.png"], tmp_path) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    hole = np.zeros(photo.shape[:2], bool)
    hole[30:58, 40:76] = True
    np.testing.assert_array_equal(out[~hole], photo[~hole])
    return photo, out, hole


def test_the_adversarially_trained_model_completes_a_photo(tmp_path, capsys):
    photo, out, hole = completed_by(GAN, tmp_path, 1)
    # A fill of its own: neither the mean-pixel fill it starts from nor the phase-1 model's.
    mean_fill = complete.mean_fill(photo, hole, exports.read_metadata(GAN)[0])
    assert not np.array_equal(out[hole], mean_fill[hole])
    assert run_main(complete, ["--input", "photo.png", "--box", "40,30,36,28", "--output",
                               "first.png"], tmp_path) == 0
    first = np.asarray(Image.open(tmp_path / "first.png"))
    assert np.abs(out[hole].astype(int) - first[hole].astype(int)).mean() > 2


PHOTOS = os.path.join(os.path.dirname(exports.PRETRAINED), "photos")
PHOTOS_ITERATION = 2500  # phase 1's best checkpoint: of the last stretch, continued
# --init-from the export of iteration 10000, so iteration 12500 from the start


def test_the_natural_photo_model_in_training_is_the_papers_full_network():
    """pretrained/photos: the export of the run on natural photos so far (phase 1, the paper's
    full widths), float16, with the mix it was trained on; what `--init-from` continues."""
    assert set(os.listdir(PHOTOS)) - {exports.ONNX_FILE} == FILES
    assert 5_000_000 < os.path.getsize(os.path.join(PHOTOS, exports.FLOAT16_WEIGHTS)) < 15_000_000
    mean_pixel, config, meta = exports.read_metadata(PHOTOS)
    assert meta["network_version"] == NETWORK_VERSION
    assert (config.width_divisor, config.image_size, config.hole_min, config.hole_max) == (
        1, 128, 48, 64)
    assert config.data_weights == [2, 1, 1, 1, 1] and len(config.data_dir) == 5
    assert config.val_dir == "prepared/photos/val"
    assert config.precision == "bfloat16" and config.tc == 30000 and config.learning_rate == 5e-5
    assert config.init_from == "pretrained/photos"
    assert (config.recon_loss, config.ema_decay) == ("l1", 0.995)
    assert meta["training"]["iteration"] == PHOTOS_ITERATION
    network, _, _ = exports.read(PHOTOS)
    assert network.count_params() == build_completion_network().count_params()  # 6.1 million


PHOTOS_WHITENED = os.path.join(os.path.dirname(exports.PRETRAINED), "photos-whitened")


def test_the_second_natural_photo_run_is_the_papers_full_network_in_phase_1():
    """pretrained/photos-whitened: the best checkpoint so far of the second phase 1 from
    scratch (absolute error, structural term, moving average), float16, scored on validation."""
    assert set(os.listdir(PHOTOS_WHITENED)) - {exports.ONNX_FILE} == FILES
    mean_pixel, config, meta = exports.read_metadata(PHOTOS_WHITENED)
    assert meta["network_version"] == NETWORK_VERSION
    assert (config.width_divisor, config.image_size, config.hole_min, config.hole_max) == (
        1, 128, 48, 64)
    assert (config.recon_loss, config.recon_colour, config.ssim_loss, config.ema_decay) == (
        "l1", "rgb", 0.4, 0.995)
    assert not config.init_from and config.tc == 20000 and config.lr_drops == [10500]
    assert meta["training"]["iteration"] == 11500
    held_out = meta["training"]["held_out"]
    assert held_out["model"]["l1_hole"] < held_out["OpenCV Telea"]["l1_hole"]
    network, _, _ = exports.read(PHOTOS_WHITENED)
    assert network.count_params() == build_completion_network().count_params()


@pytest.mark.parametrize("model", [PHOTOS, PHOTOS_WHITENED], ids=os.path.basename)
def test_the_natural_photo_model_completes_a_photo(tmp_path, model):
    photo, out, hole = completed_by(model, tmp_path, 2)
    mean_fill = complete.mean_fill(photo, hole, exports.read_metadata(model)[0])
    assert evaluate.l1(out / 255, photo / 255, hole) < evaluate.l1(mean_fill / 255, photo / 255,
                                                                   hole)
