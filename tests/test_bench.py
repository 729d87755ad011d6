"""bench.py: the FLOPs it counts per phase, and bench.py as a user runs it."""
import json
import re
import sys

import pytest

import bench
import config as cfg
import engine
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


FIGURE_LINES = ["input pipeline alone", "  on 6-megapixel photos", "  the same after prepare.py",
                "float32 matmul peak", "peak resident memory"]
TINY = ["--preset", "quick", "--image-size", "32", "--local-size", "16", "--batch-size", "2",
        "--data-dir", "photos", "--inference-sizes", "32", "--inference-batches", "1",
        "--min-seconds", "0", "--json", "bench.json"]


def test_bench_prints_every_figure_in_float32_and_bfloat16(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", [*TINY, "--steps", "2", "--warmup", "1", "--profile", "prof",
                                     "--precision", "bfloat16"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("glcic bench: 32 px, local 16, batch 2, CPU (AMD EPYC 7B13 (an"
                               " AVX2 CPU without AVX-512)), float32 and bfloat16, XLA off")
    assert lines[1] == ("precision bfloat16 (--precision bfloat16); complete.py's engine: tf"
                        " bfloat16")
    for label in FIGURE_LINES:
        [line] = [line for line in lines if line.startswith(label)]
        first_number = float(re.findall(r"\d+\.?\d*", line[len(label):])[0])
        assert first_number > 0, line
    saved = json.loads((tmp_path / "bench.json").read_text())
    figures = saved["figures"]
    assert saved["settings"]["precisions"] == ["float32", "bfloat16"]
    assert saved["settings"]["engines"][:2] == ["tf", "tf_bfloat16"]
    for label in bench.LABELS.values():
        rows = [line for line in lines if line.startswith(label)]
        assert [row[33:42].strip() for row in rows] == ["float32", "bfloat16"]
        assert re.search(r"images/s +[\d.]+ GFLOP/s +\d+ % of matmul peak$", rows[0]), rows[0]
        assert re.search(r"% of matmul peak +[\d.]+ x float32$", rows[1]), rows[1]
    for name in ("phase1", "phase2", "phase3", "inference"):
        for precision, suffix in (("float32", ""), ("bfloat16", "_bfloat16")):
            assert figures[f"{name}{suffix}_images_per_second"] > 0
            assert figures[f"{name}{suffix}_fraction_of_matmul_peak"] == pytest.approx(
                figures[f"{name}{suffix}_gflops"] / figures[f"matmul_peak{suffix}_gflops"])
    assert saved["settings"]["traces"] == {f"phase{p}{suffix}": 1 for suffix in ("", "_bfloat16")
                                           for p in (1, 2, 3)}
    assert figures["matmul_peak_gflops"] > 0 and figures["matmul_peak_bfloat16_gflops"] > 0
    [line] = [line for line in lines if line.startswith("inference tf bfloat16, 32 px, batch 1")]
    assert line.endswith("x tf  (complete.py's)")
    assert figures["inference_32px_batch1_glcic_images_per_second"] == figures[
        "inference_tf_bfloat16_32px_batch1_images_per_second"]
    assert figures["pipeline_images_per_second"] > 0 and figures["peak_resident_mib"] > 0
    assert figures["pipeline_large_photos_images_per_second"] > 0
    assert figures["pipeline_large_prepared_images_per_second"] > 0
    assert not any(line.startswith("side by side") for line in lines)  # without --pytorch
    for precision in ("float32", "bfloat16"):
        assert any(line.startswith(f"  phase 1 (completion update), {precision}: ")
                   for line in lines)


def test_bench_without_native_bfloat16_measures_float32_only(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", [*TINY, "--steps", "1", "--warmup", "1", "--engines", "tf"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["precisions"] == ["float32"]
    default = "onnx" if engine.available()[0] else "tf"  # complete.py's, though not measured
    assert saved["settings"]["default_engine"] == default
    assert not any("bfloat16" in key for key in saved["figures"])
    assert result.stdout.splitlines()[1] == (
        f"precision float32 (auto: this CPU has no native bfloat16); complete.py's engine:"
        f" {default}")


def test_bench_pytorch_side_by_side_in_rounds(tmp_path, make_photos):
    pytest.importorskip("torch", reason="PyTorch is optional (pip install torch==2.13.0)")
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", [*TINY, "--steps", "1", "--warmup", "1", "--pytorch",
                                     "--rounds", "2", "--precision", "bfloat16"], cwd=tmp_path)
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
            f32, bf16, pt32, ptbf16, over32, overbf16 = map(float, rows[bench.LABELS[f"phase{p}"]])
            assert f32 == pytest.approx(figures[f"phase{p}_images_per_second"], abs=0.006)
            assert bf16 == pytest.approx(figures[f"phase{p}_bfloat16_images_per_second"],
                                         abs=0.006)
            for rate, suffix, ratio in ((pt32, "", over32), (ptbf16, "_bfloat16", overbf16)):
                best = max(figures[f"pytorch_phase{p}_{layout}{suffix}_images_per_second"]
                           for layout in bench.LAYOUTS)
                assert figures[f"pytorch_phase{p}{suffix}_images_per_second"] == best > 0
                assert rate == pytest.approx(best, abs=0.006)
                # glcic trains in bfloat16 (the bench's precision): its figure over PyTorch's
                assert ratio == pytest.approx(bf16 / best, rel=0.01)
        f32, bf16, pt32, ptbf16, over32, overbf16 = map(float, rows["inference 32 px, batch 1"])
        glcic = figures["inference_tf_bfloat16_32px_batch1_images_per_second"]
        assert bf16 == pytest.approx(glcic, abs=0.006)
        assert f32 == pytest.approx(max(figures[f"inference_{e}_32px_batch1_images_per_second"]
                                        for e in ("tf", "onnx") if e in saved["settings"]
                                        ["engines"]), abs=0.006)
        for rate, suffix, ratio in ((pt32, "", over32), (ptbf16, "_bfloat16", overbf16)):
            best = max(figures[f"inference_pytorch_{layout}{suffix}_32px_batch1_images_per_second"]
                       for layout in bench.LAYOUTS)
            assert rate == pytest.approx(best, abs=0.006)
            assert figures[f"inference_32px_batch1_glcic_over_pytorch{suffix}"] == pytest.approx(
                glcic / best)
            assert ratio == pytest.approx(glcic / best, rel=0.01)


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


def test_bench_large_photo_times_each_engine_and_its_memory(tmp_path, make_photos, monkeypatch):
    """--large-photo: the 12-megapixel completion with --scale auto for each engine and both
    hole layouts, seconds and peak memory in the JSON and one line each."""
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    monkeypatch.chdir(tmp_path)
    assert bench.main([*TINY, "--large-photo", "--engines", "tf"]) == 0
    saved = json.loads((tmp_path / "bench.json").read_text())
    figures = saved["figures"]
    assert sorted(figures) == ["large_five_tf_peak_mib", "large_five_tf_seconds",
                               "large_one_tf_peak_mib", "large_one_tf_seconds"]
    assert all(value >= 0 for value in figures.values())
    assert 0 < figures["large_one_tf_seconds"] < 60
    assert saved["settings"]["photo"] == "4000x3000" and saved["settings"]["engines"] == ["tf"]
