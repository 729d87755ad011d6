"""engine.py: the completion network converted to ONNX computes what the Keras network computes,
is converted once and again only when the weights change, and TensorFlow runs it without
onnxruntime."""
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import complete
import engine
import exports
import session
import utils
from conftest import CPUINFO, calibrated_network, smooth_photo, working_directory
from model import build_completion_network

MEAN_PIXEL = (0.4, 0.5, 0.6)  # make_session's default
READY, WHY_NOT = engine.available()
needs_onnx = pytest.mark.skipif(not READY, reason=f"ONNX Runtime is not usable here: {WHY_NOT}")
CONVERTING = "Converting the completion network to ONNX once: "
NO_ONNXRUNTIME = ("onnxruntime is not installed (pip install onnxruntime==1.32.0"
                  " tf2onnx==1.17.0)")


def photo_and_hole(height=37, width=53):
    """An odd-sized photo with a hole touching its top and right borders."""
    photo = smooth_photo(np.random.default_rng(5), height, width)
    hole = np.zeros((height, width), bool)
    hole[:15, 30:] = True
    return photo, hole


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(Keras network, its OnnxNetwork): a tiny network whose batch norms are far from the
    identity (statistics of real inputs, random scales and offsets), so that folding them
    into the convolutions is exercised. Scales within 10 % of 1: wider ones (0.5-1.5) amplify
    float32 rounding through the 16 layers until TensorFlow's own output is 7.5e-6 from the
    float64 result, and ONNX Runtime's 1.1e-5 from TensorFlow's."""
    rng = np.random.default_rng(0)
    images = np.stack([smooth_photo(rng, 40, 56) for _ in range(2)]).astype(np.float32) / 255
    masks = np.zeros((2, 40, 56, 1), np.float32)
    masks[:, 4:20, 10:30] = 1
    network = calibrated_network(utils.completion_input(images, masks, tf.constant(MEAN_PIXEL)),
                                 seed=0, mean_pixel=MEAN_PIXEL)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.9, 1.1, layer.gamma.shape))
            layer.beta.assign(rng.normal(0.0, 0.1, layer.beta.shape))
    path = str(tmp_path_factory.mktemp("onnx") / "network.onnx")
    engine.to_onnx(network, path)
    return network, engine.OnnxNetwork(path)


@needs_onnx
def test_onnx_computes_what_tensorflow_computes(converted):
    network, onnx_network = converted
    photo, hole = photo_and_hole()
    seen = []

    def recording(inputs, training=False):
        seen.append(np.asarray(inputs))
        return network(inputs, training=training)

    complete.run_network(recording, photo, hole, MEAN_PIXEL)
    inputs = seen[0]
    assert inputs.shape == (1, 40, 56, 4)  # padded to a multiple of 4, as complete.py does
    expected = network(inputs, training=False).numpy()
    assert expected.std() > 0.05  # every layer matters: not a flat 0.5
    got = onnx_network(inputs, training=False)
    assert got.dtype == np.float32 and got.shape == (1, 40, 56, 3)
    assert np.max(np.abs(got - expected)) < 1e-5

    # The same photo completed: float differences of 1e-5 can still round a pixel to the next
    # level of 255, so a level of difference is allowed (none was seen).
    by_tf, _ = complete.complete(network, photo, hole, MEAN_PIXEL)
    by_onnx, _ = complete.complete(onnx_network, photo, hole, MEAN_PIXEL)
    assert np.max(np.abs(by_tf.astype(int) - by_onnx)) <= 1
    assert np.array_equal(by_onnx[~hole], photo[~hole])


@needs_onnx
def test_the_onnx_file_has_no_batch_norm_and_takes_any_size(converted):
    import onnx
    network, onnx_network = converted
    graph = onnx.load(onnx_network.path).graph
    kinds = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in kinds
    assert kinds.count("Conv") == 15 and kinds.count("ConvTranspose") == 2
    # The dilated convolutions are ONNX Convs with their dilation, not reshapes around them.
    dilations = {tuple(attribute.ints) for node in graph.node if node.op_type == "Conv"
                 for attribute in node.attribute if attribute.name == "dilations"}
    assert {(2, 2), (4, 4), (8, 8), (16, 16)} <= dilations
    assert "SpaceToDepth" not in kinds
    metadata = {p.key: p.value for p in onnx.load(onnx_network.path).metadata_props}
    assert metadata["fingerprint"] == onnx_network.fingerprint == engine.fingerprint(network)
    assert metadata["opset"] == str(engine.OPSET) and metadata["tensorflow"] == tf.__version__
    assert {"network_version", "tf2onnx", "onnx"} <= set(metadata)
    for shape in ((2, 32, 48, 4), (1, 64, 40, 4)):
        inputs = np.random.default_rng(1).uniform(size=shape).astype(np.float32)
        inputs[..., 3] = inputs[..., 3] > 0.7
        got = onnx_network(inputs)
        assert got.shape == shape[:3] + (3,)
        # float32 sums in another order (batch norm folded into the kernels, other kernels):
        # within 2e-5 of outputs in [0, 1], with or without oneDNN
        assert np.max(np.abs(got - network(inputs, training=False).numpy())) < 2e-5
    assert engine.name_of(onnx_network) == "onnx" and engine.name_of(network) == "tf"


def tiny_network(seed):
    keras.utils.set_random_seed(seed)
    return build_completion_network(width_divisor=8, mean_pixel=MEAN_PIXEL)


@needs_onnx
def test_the_conversion_is_kept_and_redone_when_the_weights_change(tmp_path, capsys):
    path = str(tmp_path / "completion_network.onnx")
    first = engine.for_network(tiny_network(0), path)
    assert capsys.readouterr().out.startswith(CONVERTING + path + " (")
    written = os.stat(path).st_mtime_ns
    again = engine.for_network(tiny_network(0), path)  # the same weights, loaded again
    assert capsys.readouterr().out == "" and os.stat(path).st_mtime_ns == written
    assert again.fingerprint == first.fingerprint

    changed = engine.for_network(tiny_network(1), path)
    assert capsys.readouterr().out.startswith(CONVERTING + path)
    assert changed.fingerprint != first.fingerprint
    assert engine.OnnxNetwork(path).fingerprint == changed.fingerprint
    assert [name for name in os.listdir(tmp_path)] == ["completion_network.onnx"]


@needs_onnx
def test_a_folder_that_cannot_be_written_keeps_it_in_the_temporary_folder(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "not_a_folder").write_text("")
    network = tiny_network(0)
    converted = engine.for_network(network, str(tmp_path / "not_a_folder" / "network.onnx"))
    fallback = str(tmp_path / "tmp" / "glcic-onnx" / f"{engine.fingerprint(network)}.onnx")
    assert converted.path == fallback and os.path.isfile(fallback)
    assert capsys.readouterr().out.startswith(CONVERTING + fallback)
    assert engine.for_network(network, str(tmp_path / "not_a_folder" / "network.onnx")).path == (
        fallback)
    assert capsys.readouterr().out == ""


def checkpoint(root, name, iteration, seed):
    """Save a checkpoint of session NAME with other weights, as training would."""
    with working_directory(root):
        network = tiny_network(seed)
        session.Checkpoints(tf.train.Checkpoint(completion_network=network),
                            session.folder(name)).save(iteration, phase_end=True)


@needs_onnx
def test_complete_runs_a_session_with_onnx_one_file_per_checkpoint(tmp_path, make_session,
                                                                    monkeypatch, capsys):
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    photo, _ = photo_and_hole()
    Image.fromarray(photo).save("photo.png")
    job = ["--input", "photo.png", "--box", "30,0,23,15"]
    assert complete.main(["--session", "s", *job, "--output", "one.png"]) == 0
    first = os.path.join(session.folder("s"), "onnx", "iteration-1.onnx")
    assert capsys.readouterr().out.splitlines()[0].startswith(CONVERTING + first)
    written = os.stat(first).st_mtime_ns
    network, _, _ = exports.load_model("s")
    assert engine.name_of(network) == "onnx" and network.path == first
    assert capsys.readouterr().out == ""

    checkpoint(tmp_path, "s", 2, seed=1)
    stale = os.path.join(session.folder("s"), "onnx", "iteration-9.onnx")  # no checkpoint 9
    shutil.copy(first, stale)
    assert complete.main(["--session", "s", *job, "--output", "two.png"]) == 0
    assert not os.path.exists(stale) and os.path.exists(first)
    second = os.path.join(session.folder("s"), "onnx", "iteration-2.onnx")
    assert capsys.readouterr().out.splitlines()[0].startswith(CONVERTING + second)
    assert engine.OnnxNetwork(second).fingerprint != engine.OnnxNetwork(first).fingerprint
    assert not np.array_equal(np.asarray(Image.open("one.png")), np.asarray(Image.open("two.png")))
    assert complete.main(["--session", "s", "--iteration", "1", *job, "--output", "1.png"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Completion network: ONNX Runtime, float32 (auto: this CPU has no native bfloat16)",
        "photo.png: filled 345 pixels -> 1.png"]
    assert os.stat(first).st_mtime_ns == written
    assert np.array_equal(np.asarray(Image.open("one.png")), np.asarray(Image.open("1.png")))


@needs_onnx
def test_an_export_holds_its_onnx_file_and_records_it(tmp_path, make_session, monkeypatch,
                                                      capsys):
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    assert complete.main(["--session", "s", "--export", "exported"]) == 0
    import onnx
    import tf2onnx
    assert "Converting" not in capsys.readouterr().out
    assert exports.ONNX_FILE in os.listdir("exported")
    record = utils.read_json("exported/glcic.json")["onnx"]
    assert record == {"file": "completion_network.onnx", "opset": engine.OPSET, "versions": {
        "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}}
    network, _, _ = exports.load_model(None, "exported")  # the export's file: no conversion
    assert network.path == os.path.join("exported", exports.ONNX_FILE)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# Without onnxruntime


@pytest.fixture
def without_onnxruntime(tmp_path, make_session, monkeypatch):
    """Session 's' and a photo, with `import onnxruntime` failing as if it were not installed."""
    make_session(tmp_path, "s")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    photo, _ = photo_and_hole()
    Image.fromarray(photo).save("photo.png")
    return ["--session", "s", "--input", "photo.png", "--box", "30,0,23,15"]


def test_without_onnxruntime_tensorflow_runs_it(without_onnxruntime, capsys):
    job = without_onnxruntime
    assert engine.available() == (False, "onnxruntime is not installed")
    assert complete.main([*job, "--output", "tf.png", "--engine", "tf"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Completion network: TensorFlow, float32 (auto: this CPU has no native bfloat16)",
        "photo.png: filled 345 pixels -> tf.png"]
    assert complete.main([*job, "--output", "default.png"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "TensorFlow runs the completion network: onnxruntime is not installed (for ONNX"
        " Runtime: pip install onnxruntime==1.32.0 tf2onnx==1.17.0)",
        "Completion network: TensorFlow, float32 (auto: this CPU has no native bfloat16)",
        "photo.png: filled 345 pixels -> default.png"]
    assert np.array_equal(np.asarray(Image.open("tf.png")), np.asarray(Image.open("default.png")))
    assert not os.path.exists(os.path.join(session.folder("s"), "onnx"))


def test_without_onnxruntime_engine_onnx_is_one_line_exit_2(without_onnxruntime, capsys):
    assert complete.main([*without_onnxruntime, "--output", "out.png", "--engine", "onnx"]) == 2
    assert capsys.readouterr().err == f"error: --engine onnx: {NO_ONNXRUNTIME}\n"
    assert not os.path.exists("out.png")


def test_tensorflow_runs_a_compiled_forward_pass_that_follows_the_weights():
    """engine.forward: a Keras network's forward pass, compiled once per network for any size,
    equal to calling the network, and reading the weights as they are when it runs; an
    OnnxNetwork (or anything else) is returned as it is."""
    network = tiny_network(1)
    compiled = engine.forward(network)
    assert engine.forward(network) is compiled
    rng = np.random.default_rng(2)
    for shape in ((1, 24, 32, 4), (2, 40, 28, 4)):
        x = tf.constant(rng.uniform(size=shape).astype(np.float32))
        np.testing.assert_allclose(compiled(x).numpy(), network(x, training=False).numpy(),
                                   atol=1e-6)
    before = compiled(x).numpy()
    network.layers[-1].bias.assign(np.ones(3, np.float32))  # the sigmoid's input, +1
    after = compiled(x).numpy()
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, network(x, training=False).numpy(), atol=1e-6)
    assert compiled.experimental_get_tracing_count() == 1
    stand_in = object()
    assert engine.forward(stand_in) is stand_in


# ---------------------------------------------------------------------------------------------
# Precision


def test_auto_chooses_bfloat16_tensorflow_only_where_the_cpu_has_it():
    cpu = {name: os.path.join(CPUINFO, f"{name}.txt") for name in ("avx2", "avx512_bf16")}
    native = "auto: this CPU computes bfloat16 natively (avx512_bf16)"
    float32_engine = "onnx" if READY else "tf"
    assert engine.choose(None, "auto", False, cpu["avx512_bf16"]) == ("tf", "bfloat16", native)
    assert engine.choose("tf", "auto", False, cpu["avx512_bf16"]) == ("tf", "bfloat16", native)
    assert engine.choose(None, "auto", False, cpu["avx2"])[:2] == (float32_engine, "float32")
    assert engine.choose("onnx", "auto", False, cpu["avx512_bf16"]) == (
        "onnx", "float32", "--engine onnx: ONNX Runtime runs the network in float32")
    assert engine.choose(None, "float32", False, cpu["avx512_bf16"]) == (
        float32_engine, "float32", "--precision float32")
    assert engine.choose(None, "bfloat16", False, cpu["avx2"]) == (
        "tf", "bfloat16", "--precision bfloat16")
    assert engine.choose(None, "auto", True, cpu["avx2"]) == (
        "tf", "float16", "auto: a GPU computes float16 natively")
    with pytest.raises(utils.UserError) as info:
        engine.choose("onnx", "bfloat16", False, cpu["avx512_bf16"])
    assert str(info.value) == ("--engine onnx: ONNX Runtime runs the network in float32 only, not"
                               " bfloat16; use --precision float32, or --engine tf")


def test_the_bfloat16_copy_holds_bfloat16_weights_and_a_float32_output_layer():
    network = tiny_network(3)
    copy = engine.for_network(network, None, "tf", "bfloat16")
    assert copy is not network and engine.precision_of(copy) == "bfloat16"
    assert engine.precision_of(network) == "float32"
    assert {w.dtype for w in network.weights} == {"float32"}  # the network itself is untouched
    assert {w.dtype for layer in copy.layers[:-1] for w in layer.weights} == {"bfloat16"}
    assert {w.dtype for w in copy.layers[-1].weights} == {"float32"}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in copy.layers)
    assert copy.layers[-1].compute_dtype == "float32"
    assert {layer.compute_dtype for layer in copy.layers[1:-1]} == {"bfloat16"}
    x = tf.constant(np.random.default_rng(0).uniform(size=(1, 24, 32, 4)).astype(np.float32))
    y = engine.forward(copy)(x)
    assert y.dtype == tf.float32 and y.shape == (1, 24, 32, 3)
    # What a mixed policy computes (float32 weights, each cast to bfloat16 at every call): the
    # same roundings, so the same outputs but for the order of float32 sums.
    mixed = engine.folded(network, "mixed_bfloat16")
    assert {w.dtype for w in mixed.weights} == {"float32"}
    np.testing.assert_allclose(y.numpy(), engine.forward(mixed)(x).numpy(), atol=1e-5)
    assert engine.for_network(network, None, "tf", "float32") is network


BFLOAT16 = tf.bfloat16.as_numpy_dtype


def test_the_folding_is_computed_from_the_float32_weights():
    """Each folded kernel is the float32 product rounded once to bfloat16, not a product of
    weights already rounded."""
    x = np.random.default_rng(5).uniform(size=(2, 32, 32, 4)).astype(np.float32)
    network = calibrated_network(x, 5)
    copy = engine.folded(network, "bfloat16")
    norm = network.get_layer("bn1")
    scale = norm.gamma.numpy() / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    kernel, bias = network.get_layer("conv1").get_weights()
    assert not np.allclose(scale, 1.0, atol=0.05)  # statistics that change the kernel
    expected = (kernel * scale).astype(BFLOAT16)
    folded_kernel = copy.get_layer("conv1").kernel.numpy()
    assert folded_kernel.dtype == BFLOAT16
    np.testing.assert_array_equal(folded_kernel, expected)
    expected_bias = ((bias - norm.moving_mean.numpy()) * scale + norm.beta.numpy())
    np.testing.assert_array_equal(copy.get_layer("conv1").bias.numpy(),
                                  expected_bias.astype(BFLOAT16))


def trained_and_photos():
    """The shipped network (trained on wallpapers) and 128 px photos with holes as in training."""
    network, mean_pixel, _ = exports.read(exports.PRETRAINED, name=exports.PRETRAINED_NAME)
    rng = np.random.default_rng(3)
    cases = []
    for i in range(4):
        photo = smooth_photo(rng, 128, 128)
        hole = np.zeros((128, 128), bool)
        top, left = rng.integers(8, 64, 2)
        hole[top:top + 56, left:left + 48] = True
        cases.append((photo, hole))
    return network, mean_pixel, cases


def test_bfloat16_completes_within_one_level_of_float32_on_a_trained_network(tmp_path):
    """The shipped network's fills in bfloat16 and float32 differ by at most 1/255 on average
    in the hole; outside it, the photo and its blended version are the input's to the bit."""
    network, mean_pixel, cases = trained_and_photos()
    copy = engine.for_network(network, None, "tf", "bfloat16")
    for photo, hole in cases:
        f32 = complete.complete_photo(network, photo, hole, mean_pixel, "blend")
        bf16 = complete.complete_photo(copy, photo, hole, mean_pixel, "blend")
        difference = np.abs(f32[0].astype(int) - bf16[0].astype(int))
        assert difference[hole].mean() <= 1.0
        assert difference[hole].max() > 0  # it did compute in another precision
        for completed in (*f32[::2], *bf16[::2]):  # completed and blended
            assert np.array_equal(completed[~hole], photo[~hole])


def test_complete_says_what_it_computes_in_and_refuses_onnx_in_bfloat16(tmp_path, make_session,
                                                                         monkeypatch, capsys):
    make_session(tmp_path)
    photo, _ = photo_and_hole()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    job = ["--session", "s", "--input", "photo.png", "--box", "30,0,23,15"]
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx512_bf16.txt"))
    with working_directory(tmp_path):
        assert complete.main([*job, "--output", "auto.png"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "Completion network: TensorFlow, bfloat16 (auto: this CPU computes bfloat16 natively"
            " (avx512_bf16))", "photo.png: filled 345 pixels -> auto.png"]
        assert complete.main([*job, "--output", "x.png", "--engine", "onnx", "--precision",
                              "bfloat16"]) == 2
        assert capsys.readouterr().err == (
            "error: --engine onnx: ONNX Runtime runs the network in float32 only, not bfloat16;"
            " use --precision float32, or --engine tf\n")
        assert not os.path.exists("x.png")


@needs_onnx
def test_every_engine_runs_a_network_with_resize_upsampling(tmp_path):
    """--upsampling resize: ONNX Runtime and the bfloat16 copy (batch norms folded into the
    3x3 convolutions after each upsampling) compute what TensorFlow computes."""
    keras.utils.set_random_seed(0)
    network = build_completion_network(width_divisor=8, mean_pixel=MEAN_PIXEL,
                                       upsampling="resize")
    rng = np.random.default_rng(0)
    x = tf.constant(np.concatenate([rng.uniform(size=(2, 24, 36, 3)),
                                    rng.uniform(size=(2, 24, 36, 1)) > 0.7], -1), tf.float32)
    network(x, training=True)  # batch-norm statistics away from the identity
    expected = network(x, training=False).numpy()
    onnx_network = engine.for_network(network, str(tmp_path / "network.onnx"), "onnx")
    assert np.max(np.abs(onnx_network(x.numpy(), training=False) - expected)) < 1e-5
    folded = engine.folded(network)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded(x).numpy(), expected, atol=1e-5)
    bfloat16 = engine.for_network(network, None, "tf", "bfloat16")
    assert np.max(np.abs(engine.forward(bfloat16)(x).numpy() - expected)) < 0.02
