"""bench.py: the FLOPs it counts per phase, and bench.py as a user runs it."""
import glob
import json
import re
import sys

import pytest

import bench
import config as cfg
import model
from conftest import run_script


def test_phase_flops_count_backward_as_two_forwards():
    config = cfg.resolve(cfg.preset_config("cpu"), {})
    g = model.completion_flops(128)
    d = model.discriminator_flops(128, 64)
    assert bench.phase_flops(config) == {"phase1": 3 * g, "phase2": g + 6 * d,
                                         "phase3": 3 * g + 9 * d, "inference": g}


# ---------------------------------------------------------------------------------------------
# bench.py as a user runs it


FIGURE_LINES = ["phase 1 (completion update)", "phase 2 (discriminator update)",
                "phase 3 (joint update)", "inference (completion forward)",
                "input pipeline alone", "  on 6-megapixel photos", "  the same after prepare.py",
                "float32 matmul peak", "peak resident memory"]
TINY = ["--preset", "quick", "--image-size", "32", "--local-size", "16", "--batch-size", "2",
        "--data-dir", "photos", "--inference-sizes", "32", "--inference-batches", "1",
        "--min-seconds", "0", "--json", "bench.json"]


def test_bench_prints_every_figure(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", [*TINY, "--steps", "2", "--warmup", "1", "--profile", "prof"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("glcic bench: 32 px, local 16, batch 2, CPU, float32, XLA off")
    for label in FIGURE_LINES:
        [line] = [line for line in lines if line.startswith(label)]
        first_number = float(re.findall(r"\d+\.?\d*", line[len(label):])[0])
        assert first_number > 0, line
    for label in FIGURE_LINES[:4]:
        [line] = [line for line in lines if line.startswith(label)]
        assert re.search(r"images/s +[\d.]+ GFLOP/s +\d+ % of matmul peak$", line), line

    saved = json.loads((tmp_path / "bench.json").read_text())
    figures = saved["figures"]
    for name in ("phase1", "phase2", "phase3", "inference"):
        assert figures[f"{name}_images_per_second"] > 0
        assert figures[f"{name}_gflops"] > 0
        assert figures[f"{name}_fraction_of_matmul_peak"] == pytest.approx(
            figures[f"{name}_gflops"] / figures["matmul_peak_gflops"])
    assert figures["pipeline_images_per_second"] > 0 and figures["peak_resident_mib"] > 0
    assert figures["pipeline_large_photos_images_per_second"] > 0
    assert figures["pipeline_large_prepared_images_per_second"] > 0
    # The steps were traced once each: timing never included a retrace.
    assert saved["settings"]["traces"] == {"phase1": 1, "phase2": 1, "phase3": 1}
    assert len(saved["rounds"]) == 1 and saved["rounds"][0].items() <= figures.items()

    # --profile: a trace per phase, and the op types that took the most time in each.
    assert lines.count("profile in prof/: seconds per step of the op types that took the most"
                       " (ops that ran at the same time each count in full)") == 1
    for phase, label in (("phase1", "phase 1"), ("phase2", "phase 2"), ("phase3", "phase 3")):
        assert glob.glob(str(tmp_path / "prof" / phase / "**" / "*.xplane.pb"), recursive=True)
        ops = figures[f"{phase}_op_seconds_per_step"]
        assert list(ops.values()) == sorted(ops.values(), reverse=True) and min(ops.values()) > 0
        assert any("Conv2DBackprop" in name for name in ops), ops  # every phase trains convs
        assert figures[f"{phase}_profiled_seconds_per_step"] > 0
        [at] = [i for i, line in enumerate(lines) if line.startswith(f"  {label} (")]
        top = next(iter(ops))
        assert re.fullmatch(rf"    {top} +{ops[top]:.3f} s", lines[at + 1]), lines[at + 1]
    assert "StatefulPartitionedCall" not in figures["phase1_op_seconds_per_step"]

    # Inference by engine: one line each, with ONNX's ratio to TensorFlow.
    import engine
    onnx, reason = engine.available()
    for name in ("tf", "onnx") if onnx else ("tf",):
        [line] = [line for line in lines if line.startswith(f"inference {name}, 32 px, batch 1 ")]
        key = f"inference_{name}_32px_batch1"
        assert figures[f"{key}_images_per_second"] > 0
        assert figures[f"{key}_ms_per_call"] == pytest.approx(
            1000 / figures[f"{key}_images_per_second"])
        numbers = [float(n) for n in re.findall(r"\d+\.\d+", line)]
        assert numbers[:2] == pytest.approx([figures[f"{key}_images_per_second"],
                                             figures[f"{key}_ms_per_call"]], abs=0.06), line
        assert re.search(r"images/s +[\d.]+ ms per call( +[\d.]+ x tf)?$", line), line
    if onnx:
        ratio = figures["inference_onnx_32px_batch1_over_tf"]
        assert ratio == pytest.approx(figures["inference_onnx_32px_batch1_images_per_second"]
                                      / figures["inference_tf_32px_batch1_images_per_second"])
        [line] = [line for line in lines if line.startswith("inference onnx, 32 px, batch 1 ")]
        assert line.endswith(f"{ratio:8.2f} x tf")
    else:
        assert f"inference onnx: skipped, {reason}" in lines
    assert not any(line.startswith("side by side") for line in lines)  # without --pytorch


def test_bench_pytorch_side_by_side_in_rounds(tmp_path, make_photos):
    pytest.importorskip("torch", reason="PyTorch is optional (pip install torch==2.13.0)")
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", [*TINY, "--steps", "1", "--warmup", "1", "--pytorch",
                                     "--rounds", "2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["pytorch"] and saved["settings"]["rounds"] == 2
    assert len(saved["rounds"]) == 2 and "round 1 of 2:" in lines and "round 2 of 2:" in lines
    tables = [i for i, line in enumerate(lines) if line.startswith("side by side with PyTorch")]
    assert len(tables) == 2 and tables[0] < lines.index("round 2 of 2:") < tables[1]

    for table, figures in zip(tables, saved["rounds"]):
        rows = {line[:32].strip(): line[32:].split() for line in lines[table + 2:table + 6]}
        for p in (1, 2, 3):
            tf_rate, onnx_rate, rate, layout, ratio = rows[bench.LABELS[f"phase{p}"]]
            assert float(tf_rate) == pytest.approx(figures[f"phase{p}_images_per_second"],
                                                   abs=0.006)
            assert onnx_rate == "-"
            best = max(figures[f"pytorch_phase{p}_{layout}_images_per_second"]
                       for layout in bench.LAYOUTS)
            assert figures[f"pytorch_phase{p}_images_per_second"] == best > 0
            assert bench.LAYOUT_NAMES[figures[f"pytorch_phase{p}_layout"]] == layout
            assert float(ratio) == pytest.approx(figures[f"phase{p}_over_pytorch"], abs=0.006)
            assert figures[f"phase{p}_over_pytorch"] == pytest.approx(
                figures[f"phase{p}_images_per_second"] / best)
        *_, layout, ratio = rows["inference 32 px, batch 1"]
        glcic = max(figures[f"inference_{e}_32px_batch1_images_per_second"]
                    for e in saved["settings"]["engines"])
        best = max(figures[f"inference_pytorch_{layout}_32px_batch1_images_per_second"]
                   for layout in bench.LAYOUTS)
        assert figures["inference_32px_batch1_glcic_over_pytorch"] == pytest.approx(glcic / best)
        assert float(ratio) == pytest.approx(glcic / best, abs=0.006)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "error: --steps: expected at least 1, got 0"),
    (["--rounds", "0"], "error: --rounds: expected at least 1, got 0"),
    (["--min-seconds", "-1"], "error: --min-seconds: expected a non-negative number, got -1.0"),
    (["--data-dir", "missing"], "error: --data-dir"),
    (["--profile", "a_file/traces"],
     "error: --profile a_file/traces: cannot write there (Not a directory)\n"),
])
def test_bench_rejects_bad_flags_in_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("args, message", [
    (["--inference-sizes", "128,30"], "argument --inference-sizes: expected comma-separated"
                                      " multiples of 4, got '128,30'"),
    (["--inference-batches", "0"], "argument --inference-batches: expected comma-separated"
                                   " positive numbers, got '0'"),
    (["--engines", "tf,cuda"], "argument --engines: expected a comma-separated list of tf, onnx,"
                               " got 'tf,cuda'"),
])
def test_bench_rejects_bad_lists_in_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        bench.main(args)
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_bench_pytorch_without_pytorch_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--pytorch"]) == 2
    assert capsys.readouterr().err == (
        "error: --pytorch: PyTorch is not installed (pip install torch==2.13.0)\n")
    assert not (tmp_path / "data").exists()  # refused before anything was done
