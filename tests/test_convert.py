"""convert.py: the authors' Torch7 files into exports, checked module by module.

The files here are synthetic, written by tests/torch7.py in torch.save's format and laid out
as completionnet_places2.t7 is (torch.load gives {model = nn.Sequential of 50 modules, mean}).
"""
import hashlib
import os

import numpy as np
import pytest
import torch7
from conftest import run_main, run_script, tiny_args
from PIL import Image

import complete
import convert
import exports
import model
import train

MEAN_PIXEL = (0.45, 0.42, 0.38)


def synthetic(width_divisor=1, dtype=np.float32, seed=0, image=None):
    """The modules of a synthetic release, calibrated on `image` (network input) if given."""
    rng = np.random.default_rng(seed)
    modules = torch7.official_modules(rng, model.COMPLETION_LAYERS, width_divisor, dtype)
    if image is not None:
        torch7.calibrate(modules, image, rng)
    return modules


def write_release(path, modules, mean_pixel=MEAN_PIXEL):
    torch7.save(str(path), torch7.release(modules, mean_pixel))
    return str(path)


def image_and_hole(seed=1, height=20, width=28):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(1, height, width, 3))
    hole = np.zeros((1, height, width, 1))
    hole[:, 0:9, 17:28] = 1.0  # touching the top and right borders
    return image, hole


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
def test_the_converted_network_computes_what_the_torch_network_computes(tmp_path, dtype):
    image, hole = image_and_hole()
    x = torch7.network_input(image, hole, MEAN_PIXEL)
    modules = synthetic(dtype=dtype, image=x)  # the paper's widths
    path = write_release(tmp_path / "completionnet_places2.t7", modules)
    assert run_main(convert, [path, "exported/places2"], tmp_path) == 0
    network, mean_pixel, config = exports.read(str(tmp_path / "exported" / "places2"))
    np.testing.assert_allclose(mean_pixel, MEAN_PIXEL, rtol=1e-6)
    assert config.width_divisor == 1 and config.hole_shape == "rect"
    expected = torch7.forward(modules, x)
    assert expected.std() > 0.1  # every layer matters: not a flat 0.5
    garbage = np.where(hole > 0, 0.9, image)  # the content of the hole is ignored
    got = network(np.concatenate([garbage, hole], -1).astype(np.float32), training=False)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_the_export_records_the_source_its_licence_and_completes_a_photo(tmp_path, capsys):
    path = write_release(tmp_path / "completionnet_places2_freeform.t7", synthetic(8))
    assert run_main(convert, [path, "out"], tmp_path) == 0
    out = capsys.readouterr().out
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert f"Converted {path} (sha256 {digest[:16]}...)" in out and "-> out\n" in out
    assert "CC BY-NC-SA 4.0" in out
    _, config, meta = exports.read_metadata(str(tmp_path / "out"))
    assert meta["source"]["file"] == "completionnet_places2_freeform.t7"
    assert meta["source"]["sha256"] == digest
    assert meta["source"]["licence"].startswith("CC BY-NC-SA 4.0")
    assert config.width_divisor == 8 and config.hole_shape == "free"
    assert config.session == "completionnet_places2_freeform" and config.image_size == 256

    photo = np.random.default_rng(0).integers(0, 256, (36, 44, 3), np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    done = run_script("complete.py", ["--model", "out", "--input", "photo.png", "--box",
                                      "10,8,12,12", "--output", "done.png"], tmp_path)
    assert done.returncode == 0, done.stderr
    completed = np.asarray(Image.open(tmp_path / "done.png"))
    outside = np.ones(photo.shape[:2], bool)
    outside[8:20, 10:22] = False
    np.testing.assert_array_equal(completed[outside], photo[outside])
    assert not np.array_equal(completed[~outside], photo[~outside])


def test_a_converted_network_exported_again_keeps_its_source(tmp_path, capsys):
    """complete.py --model DIR --export: the float16 copy of a conversion still names the file,
    its sha256 and its licence, with the same mean pixel and configuration."""
    write_release(tmp_path / "completionnet_celeba.t7", synthetic(8))
    assert run_main(convert, ["completionnet_celeba.t7", "converted"], tmp_path) == 0
    assert run_main(complete, ["--model", "converted", "--export", "compact", "--float16"],
                    tmp_path) == 0
    assert capsys.readouterr().out.endswith("Exported the completion network of the export"
                                            " converted to compact/ (float16)\n")
    _, _, converted = exports.read_metadata(str(tmp_path / "converted"))
    mean_pixel, config, compact = exports.read_metadata(str(tmp_path / "compact"))
    assert compact["source"] == converted["source"]
    assert compact["source"]["file"] == "completionnet_celeba.t7"
    assert compact["weights"] == exports.FLOAT16_WEIGHTS and "training" not in compact
    assert compact["mean_pixel"] == converted["mean_pixel"]
    np.testing.assert_allclose(mean_pixel, MEAN_PIXEL, rtol=1e-6)
    assert compact["config"] == converted["config"] and config.session == "completionnet_celeba"


def test_fine_tuning_from_a_converted_network_and_resuming(tmp_path, make_photos, capsys):
    write_release(tmp_path / "release.t7", synthetic(8))
    assert run_main(convert, ["release.t7", "converted"], tmp_path) == 0
    make_photos(tmp_path / "photos", 4)
    args = tiny_args("photos", session="tuned", tc=0, td=2, total=2) + ["--init-from",
                                                                        "converted"]
    assert run_main(train, args, tmp_path) == 0
    assert "Starting from the completion network of converted" in capsys.readouterr().out
    args[args.index("--total-iters") + 1] = "3"
    assert run_main(train, args, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Resuming session 'tuned' at iteration 2 (phase 3 joint)" in out
    assert "Finished 3 iterations" in out


# ---------------------------------------------------------------------------------------------
# Files that are not the network: one line, exit status 2, nothing written


def replace(modules, index, module):
    modules[index - 1] = module
    return modules


def edit(modules, index, **fields):
    modules[index - 1].fields.update(fields)
    return modules


BAD_RELEASES = {
    "a wrong layer": (
        lambda m: replace(m, 3, torch7.Module("nn.Tanh")),
        "module 3 (nn.Tanh, row 1 of the network): expected nn.ReLU"),
    "a wrong stride": (
        lambda m: edit(m, 4, dW=1),
        "module 4 (nn.SpatialConvolution, row 2 of the network): dW is 1, expected 2"),
    "Keras' padding": (
        lambda m: edit(m, 10, padW=0),
        "module 10 (nn.SpatialConvolution, row 4 of the network): padW is 0, expected 1"),
    "a wrong dilation": (
        lambda m: edit(m, 22, dilationH=2),
        "module 22 (nn.SpatialDilatedConvolution, row 8 of the network): dilationH is 2,"
        " expected 4"),
    "a dilated row without dilation": (
        lambda m: replace(m, 19, torch7.convolution(np.random.default_rng(0), 32, 32, 3)),
        "module 19 (nn.SpatialConvolution, row 7 of the network): expected"
        " nn.SpatialDilatedConvolution"),
    "Keras' epsilon": (
        lambda m: edit(m, 2, eps=1e-3),
        "module 2 (nn.SpatialBatchNormalization, row 1 of the network): eps is 0.001,"
        " expected 1e-05"),
    "an output adjustment": (
        lambda m: edit(m, 37, adjW=1),
        "module 37 (nn.SpatialFullConvolution, row 13 of the network): adjW is 1, expected 0"),
    "a missing module": (
        lambda m: m[:-1],
        "the network has 49 modules, expected 50 (16 convolution + batch norm + ReLU, then"
        " convolution + Sigmoid)"),
    "a wrong width": (
        lambda m: edit(m, 7, nOutputPlane=20),
        "module 7 (nn.SpatialConvolution, row 3 of the network): nOutputPlane is 20,"
        " expected 16"),
    "a weight of the wrong shape": (
        lambda m: edit(m, 4, weight=np.zeros((16, 8, 3, 2), np.float32)),
        "module 4 (nn.SpatialConvolution): weight is (16, 8, 3, 2), expected (16, 8, 3, 3)"),
    "a first layer that is no convolution": (
        lambda m: replace(m, 1, torch7.Module("nn.ReLU")),
        "module 1 (nn.ReLU) is not a convolution with 64 output planes (or 64/N, N dividing"
        " 32)"),
}


@pytest.mark.parametrize("case", BAD_RELEASES)
def test_a_file_that_is_not_the_network_is_one_line(tmp_path, capsys, case):
    mutate, message = BAD_RELEASES[case]
    path = write_release(tmp_path / "bad.t7", mutate(synthetic(8)))
    assert run_main(convert, [path, "out"], tmp_path) == 2
    assert capsys.readouterr().err == f"error: {path}: {message}\n"
    assert not os.path.exists(tmp_path / "out")


def test_a_truncated_or_foreign_file_is_one_line(tmp_path, capsys):
    path = write_release(tmp_path / "whole.t7", synthetic(8))
    with open(path, "rb") as f:
        data = f.read()
    for name, content in (("truncated.t7", data[:len(data) // 2]), ("header.t7", data[:30]),
                          ("photo.t7", b"\x89PNG\r\n\x1a\n" + bytes(100))):
        (tmp_path / name).write_bytes(content)
        assert run_main(convert, [name, "out"], tmp_path) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {name}: not a Torch7 file, or truncated (")
        assert err.count("\n") == 1
    assert run_main(convert, ["missing.t7", "out"], tmp_path) == 2
    assert capsys.readouterr().err == "error: missing.t7: no such file\n"
    torch7.save(str(tmp_path / "table.t7"), {"weights": [1.0, 2.0]})
    assert run_main(convert, ["table.t7", "out"], tmp_path) == 2
    assert capsys.readouterr().err == (
        "error: table.t7: not a completion network release (expected a table with 'model' and"
        " 'mean', as torch.load gives for completionnet_places2.t7)\n")
    write_release(tmp_path / "mean.t7", synthetic(8), mean_pixel=(120, 110, 100))
    assert run_main(convert, ["mean.t7", "out"], tmp_path) == 2
    assert capsys.readouterr().err == ("error: mean.t7: 'mean' is [120.0, 110.0, 100.0],"
                                       " expected values in [0, 1]\n")
    assert not os.path.exists(tmp_path / "out")


def test_an_existing_export_is_not_overwritten(tmp_path, capsys):
    path = write_release(tmp_path / "release.t7", synthetic(8))
    assert run_main(convert, [path, "out"], tmp_path) == 0
    before = os.path.getmtime(tmp_path / "out" / "glcic.json")
    assert run_main(convert, [path, "out"], tmp_path) == 2
    assert capsys.readouterr().err == ("error: out: already holds an export; choose another"
                                       " OUT_DIR or remove it\n")
    assert os.path.getmtime(tmp_path / "out" / "glcic.json") == before


def test_convert_py_as_a_user_runs_it(tmp_path, capsys, monkeypatch):
    path = write_release(tmp_path / "release.t7", synthetic(8, dtype=np.float64))
    done = run_script("convert.py", [path, "exported/release"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert os.path.isfile(tmp_path / "exported" / "release" / "completion_network.keras")
    # argparse's usage error exits with status 2 itself (in this process: one TensorFlow start
    # less), naming the program as the command line does.
    monkeypatch.setattr("sys.argv", [os.path.join(os.path.dirname(convert.__file__),
                                                  "convert.py")])
    with pytest.raises(SystemExit) as exit:
        run_main(convert, [path], tmp_path)
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("convert.py: error: the following"
                                                        " arguments are required: OUT_DIR")
