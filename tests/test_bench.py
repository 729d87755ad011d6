"""bench.py: the FLOPs it counts per phase, and bench.py as a user runs it."""
import json
import re

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


def test_bench_prints_every_figure(tmp_path, make_photos):
    make_photos(tmp_path / "photos", count=4, size=(40, 48))
    result = run_script("bench.py", ["--image-size", "32", "--local-size", "16", "--batch-size", "2",
                                     "--steps", "2", "--warmup", "1", "--data-dir", "photos",
                                     "--json", "bench.json"], cwd=tmp_path)
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


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "error: --steps: expected at least 1, got 0"),
    (["--data-dir", "missing"], "error: --data-dir"),
])
def test_bench_rejects_bad_flags_in_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1, err
