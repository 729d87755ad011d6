"""config.py: the settings' declarations, presets, flags, validation and saved configurations."""
import dataclasses
import os

import pytest

import config as cfg
import train
import utils
from conftest import TINY

FIELDS = {f.name: f for f in dataclasses.fields(cfg.Config)}
WITH_CHOICES = [name for name, f in FIELDS.items() if f.metadata["choices"]]


# ---------------------------------------------------------------------------------------------
# Schedule and presets


def test_phases_follow_the_schedule():
    config = cfg.Config(tc=3, td=2, total_iters=7)
    assert [config.phase(i) for i in range(7)] == [1, 1, 1, 2, 2, 3, 3]
    assert [config.phase_range(p) for p in (1, 2, 3)] == [(0, 3), (3, 5), (5, 7)]
    assert [cfg.PHASE_NAMES[p] for p in (1, 2, 3)] == [
        "phase 1 completion", "phase 2 discriminator", "phase 3 joint"]


def test_presets_and_flag_overrides():
    paper = cfg.preset_config("paper")
    assert (paper.image_size, paper.local_size, paper.hole_min, paper.hole_max) == (
        256, 128, 96, 128)
    assert (paper.batch_size, paper.tc, paper.td, paper.total_iters) == (96, 90000, 10000, 500000)
    assert (paper.alpha, paper.optimizer, paper.recon_loss) == (0.0004, "adadelta", "mse")
    assert paper.width_divisor == 1
    cpu = cfg.preset_config("cpu")
    assert (cpu.image_size, cpu.local_size, cpu.hole_min, cpu.hole_max) == (128, 64, 48, 64)
    config = cfg.resolve(cpu, {"batch_size": 3, "optimizer": "adam"})
    assert (config.batch_size, config.learning_rate, config.image_size) == (3, 2e-4, 128)


# ---------------------------------------------------------------------------------------------
# Flags and their help


def test_every_setting_has_help_text():
    for name, f in FIELDS.items():
        assert isinstance(f.metadata["help"], str) and f.metadata["help"].strip(), name


def test_help_names_every_flag_with_its_paper_value():
    help_text = cfg.build_parser("x").format_help()
    for name in ["--data-dir", "--val-dir", "--session", "--preset", "--image-size",
                 "--local-size", "--hole-min", "--hole-max", "--batch-size", "--tc", "--td",
                 "--total-iters", "--alpha", "--recon-loss", "--optimizer", "--learning-rate",
                 "--checkpoint-every", "--summary-every", "--sample-every", "--seed", "--fresh",
                 "--width-divisor"]:
        assert name in help_text
    for name in FIELDS:
        assert cfg.flag(name) in help_text
    text = " ".join(help_text.split())
    for value in ["paper: 256", "paper: 128", "paper: 96)", "paper: 90000", "paper: 10000",
                  "paper: 500000", "paper: 0.0004"]:
        assert value in text


def test_precision_and_xla_flags_parse_and_mixed_precision_stays_an_alias(capsys):
    parser = cfg.build_parser("test")
    assert vars(parser.parse_args(["--mixed-precision", "--xla", "on"])) == {
        "precision": "mixed", "xla": "on", "fresh": False}
    assert vars(parser.parse_args(["--no-mixed-precision"]))["precision"] == "float32"
    for value in cfg.PRECISIONS:
        assert vars(parser.parse_args(["--precision", value]))["precision"] == value
    assert cfg.Config().precision == "float32"  # train.py's default (docs/training.md, "Precision")
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "mixed"])  # only through --mixed-precision
    assert "argument --precision: invalid choice: 'mixed'" in capsys.readouterr().err
    with pytest.raises(cfg.ConfigError, match="^--xla: expected one of auto, on, off, got 'yes'$"):
        cfg.Config(xla="yes").validate()


def test_add_flag_overrides_help_but_keeps_choices(capsys):
    parser = cfg.ArgumentParser(prog="x")
    cfg.add_flag(parser, "xla", help="other")
    [action] = [a for a in parser._actions if "--xla" in a.option_strings]
    assert action.help == "other"
    assert tuple(action.choices) == cfg.XLA_CHOICES
    assert "other" in parser.format_help()
    assert vars(parser.parse_args(["--xla", "off"])) == {"xla": "off"}
    assert vars(parser.parse_args([])) == {}  # unset flags leave the preset's value
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--xla", "yes"])
    assert info.value.code == 2
    assert "--xla: invalid choice: 'yes'" in capsys.readouterr().err


def test_hole_shape_flag_and_sessions_saved_before_it():
    parser = cfg.build_parser("train")
    assert parser.parse_args(["--hole-shape", "free"]).hole_shape == "free"
    assert "hole_shape" not in vars(parser.parse_args([]))
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--hole-shape", "star"])
    assert info.value.code == 2
    old = dataclasses.asdict(cfg.preset_config("cpu"))
    del old["hole_shape"]
    loaded = cfg.Config.from_dict(old)
    assert loaded.hole_shape == "rect" and loaded.image_size == 128
    assert cfg.resolve(loaded, {"hole_shape": "free"}).hole_shape == "free"
    with pytest.raises(cfg.ConfigError, match="--hole-shape"):
        cfg.Config(hole_shape="star").validate()
    assert "hole_shape" not in cfg.ARCHITECTURE_SETTINGS


def test_max_holes_and_accumulate_change_on_resume_and_default_to_one():
    parser = cfg.build_parser("train")
    args = vars(parser.parse_args(["--max-holes", "3", "--accumulate", "2"]))
    assert (args["max_holes"], args["accumulate"]) == (3, 2)
    old = dataclasses.asdict(cfg.preset_config("cpu"))
    del old["max_holes"], old["accumulate"]  # a session saved before these settings
    loaded = cfg.Config.from_dict(old)
    assert (loaded.max_holes, loaded.accumulate) == (1, 1)
    assert (cfg.Config().max_holes, cfg.Config().accumulate) == (1, 1)
    resumed = cfg.resolve(loaded, {"max_holes": 4, "accumulate": 8})
    assert [(name, a, b) for name, a, b in cfg.differences(loaded, resumed)] == [
        ("max_holes", 1, 4), ("accumulate", 1, 8)]
    assert not {"max_holes", "accumulate"} & set(cfg.ARCHITECTURE_SETTINGS)


# ---------------------------------------------------------------------------------------------
# Validation from the declarations


def test_config_errors_are_user_errors():
    assert issubclass(cfg.ConfigError, utils.UserError)
    assert cfg.ConfigError.status == 2


def test_fields_with_choices_are_the_expected_ones():
    assert set(WITH_CHOICES) == {"preset", "hole_shape", "recon_loss", "optimizer", "on_nan",
                                 "xla", "strategy", "precision", "upsampling",
                                 "transposed_init", "d_batches", "gan_loss", "recon_colour"}


@pytest.mark.parametrize("name", WITH_CHOICES)
def test_a_value_outside_the_choices_is_refused_naming_the_flag(name, capsys):
    choices = FIELDS[name].metadata["choices"]
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config(**{name: "x"}).validate()
    assert str(info.value) == f"{cfg.flag(name)}: expected one of {', '.join(choices)}, got 'x'"
    for choice in choices:  # every declared choice is accepted
        cfg.Config(**{name: choice}).validate()
    with pytest.raises(SystemExit) as exit_info:
        cfg.build_parser("x").parse_args([cfg.flag(name), "x"])
    assert exit_info.value.code == 2
    assert f"{cfg.flag(name)}: invalid choice: 'x'" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [
    ("optimizer", "--optimizer: expected one of adadelta, adam, got 'x'"),
    ("recon_loss", "--recon-loss: expected one of mse, l1, got 'x'"),
    ("recon_colour", "--recon-colour: expected one of rgb, whitened, got 'x'"),
])
def test_choice_messages_written_out(name, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config(**{name: "x"}).validate()
    assert str(info.value) == message


def test_width_divisor_must_divide_32():
    for good in (1, 2, 4, 8, 16, 32):
        cfg.Config(width_divisor=good).validate()
    for bad in (0, 3, 5, 64):
        with pytest.raises(cfg.ConfigError) as info:
            cfg.Config(width_divisor=bad).validate()
        assert str(info.value) == (f"--width-divisor: expected a divisor of 32 (1, 2, 4, 8, ...),"
                                   f" got {bad}")
    assert "width_divisor" in cfg.ARCHITECTURE_SETTINGS


@pytest.mark.parametrize("name, good, bad, message", [
    ("d_loss_scale", (1.0, 0.0004), (0.0, -1.0, 2.0), "a number in (0, 1]"),
    ("label_smoothing", (0.0, 0.1, 0.49), (-0.1, 0.5, 1.0), "a number in [0, 0.5)"),
    ("checkerboard_penalty", (0.0, 0.1, 10.0), (-0.1,), "a non-negative weight"),
    ("stripes_penalty", (0.0, 0.1, 10.0), (-0.1,), "a non-negative weight"),
    ("ema_decay", (0.0, 0.5, 0.999), (-0.1, 1.0, 2.0), "a number in [0, 1)"),
    ("keep_checkpoints", (0, 1, 3, 100), (-1,), "a non-negative number (0: every one)"),
    ("coarse_loss", (0.0, 1.0, 10.0), (-0.5,), "a non-negative weight"),
    ("ssim_loss", (0.0, 1.0, 10.0), (-0.5,), "a non-negative weight"),
    ("colour_loss", (0.0, 1.0, 10.0), (-0.5,), "a non-negative weight"),
])
def test_the_departures_from_the_paper_take_their_ranges(name, good, bad, message):
    assert cfg.Config().__dict__[name] == FIELDS[name].default  # the paper's by default
    for value in good:
        cfg.Config(**{name: value}).validate()
    for value in bad:
        with pytest.raises(cfg.ConfigError) as info:
            cfg.Config(**{name: value}).validate()
        assert str(info.value) == f"{cfg.flag(name)}: expected {message}, got {value}"
    assert name not in cfg.ARCHITECTURE_SETTINGS  # a session may change it on resume


def test_the_upsampling_is_part_of_the_network_and_the_initializer_is_not():
    assert "upsampling" in cfg.ARCHITECTURE_SETTINGS
    assert "transposed_init" not in cfg.ARCHITECTURE_SETTINGS
    old = cfg.Config().to_dict()
    for name in ("upsampling", "transposed_init", "d_loss_scale", "label_smoothing",
                 "checkerboard_penalty", "stripes_penalty", "d_batches", "d_lowpass",
                 "ema_decay"):
        del old[name]  # a session or export saved before these existed: as before them
    restored = cfg.Config.from_dict(old)
    assert (restored.upsampling, restored.transposed_init, restored.d_loss_scale,
            restored.label_smoothing, restored.checkerboard_penalty, restored.stripes_penalty,
            restored.d_batches, restored.d_lowpass, restored.ema_decay) == (
        "transposed", "default", 1.0, 0.0, 0.0, 0.0, "separate", False, 0.0)
    assert "d_lowpass" not in cfg.ARCHITECTURE_SETTINGS
    assert "d_batches" not in cfg.ARCHITECTURE_SETTINGS


def test_the_hinge_loss_is_part_of_the_discriminator_and_takes_no_label_smoothing():
    assert cfg.Config().gan_loss == "bce"  # the paper's
    assert "gan_loss" in cfg.ARCHITECTURE_SETTINGS  # its discriminator has other weights
    old = cfg.Config().to_dict()
    del old["gan_loss"]  # saved before the option existed
    assert cfg.Config.from_dict(old).gan_loss == "bce"
    cfg.Config(gan_loss="hinge").validate()
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config(gan_loss="hinge", label_smoothing=0.1).validate()
    assert str(info.value) == ("--label-smoothing: expected 0 with --gan-loss hinge (its margin"
                               " does the smoothing's work), got 0.1")


# ---------------------------------------------------------------------------------------------
# Saved configurations (session.json, exports)


@pytest.mark.parametrize("mixed, precision", [(False, "float32"), (True, "mixed"),
                                              (None, "float32")])
def test_sessions_saved_before_precision_keep_what_they_trained_in(mixed, precision):
    old = cfg.Config().to_dict()
    del old["precision"]
    if mixed is not None:
        old["mixed_precision"] = mixed
    assert cfg.Config.from_dict(old).precision == precision
    assert cfg.Config.from_dict(dict(old, precision="bfloat16")).precision == "bfloat16"


def test_from_dict_with_an_unknown_optimizer_is_a_config_error():
    saved = cfg.preset_config("quick").to_dict()
    saved["optimizer"] = "adamw"
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config.from_dict(saved)
    assert str(info.value) == "--optimizer: expected one of adadelta, adam, got 'adamw'"
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config.from_dict({"optimizer": "adamw"})
    assert str(info.value) == "--optimizer: expected one of adadelta, adam, got 'adamw'"


@pytest.mark.parametrize("key, value, message", [
    ("image_size", "32", "--image-size: expected int, got '32'"),
    ("batch_size", True, "--batch-size: expected int, got True"),
    ("alpha", "0.1", "--alpha: expected float, got '0.1'"),
    ("deterministic", 1, "--deterministic: expected bool, got 1"),
    ("data_dir", "photos", "--data-dir: expected list, got 'photos'"),
])
def test_wrong_types_from_json_are_config_errors_naming_the_flag(key, value, message):
    saved = cfg.preset_config("quick").to_dict()
    saved[key] = value
    with pytest.raises(cfg.ConfigError) as info:
        cfg.Config.from_dict(saved)
    assert str(info.value) == message


def test_from_dict_drops_unknown_keys_and_fills_missing_ones_with_the_papers_values():
    saved = cfg.preset_config("quick").to_dict()
    del saved["width_divisor"]  # sessions saved before --width-divisor
    del saved["recon_loss"]
    saved["a_setting_of_a_newer_version"] = 3
    loaded = cfg.Config.from_dict(saved)
    assert loaded.width_divisor == 1
    assert loaded.recon_loss == cfg.Config().recon_loss == "mse"
    assert (loaded.image_size, loaded.preset) == (64, "quick")
    assert not hasattr(loaded, "a_setting_of_a_newer_version")
    # Saved before --precision: float32, as those sessions trained without --mixed-precision.
    assert cfg.Config.from_dict({}) == dataclasses.replace(cfg.preset_config("paper"),
                                                           precision="float32")
    assert cfg.Config.from_dict(loaded.to_dict()) == loaded


def test_from_dict_accepts_an_integer_learning_rate():
    # JSON writes 1.0 as 1.0, but a hand-edited session.json may say 1.
    assert cfg.Config.from_dict({"learning_rate": 1}).learning_rate == 1


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, no traceback, nothing written


SPLIT_EXPECTED = "a fraction in (0, 0.5] or a whole number of photos (at least 1)"
BAD_FLAGS = [
    (["--hole-max", "20"], "--hole-max: expected at most --local-size (16) so the local patch"
                           " can contain the hole, got 20"),
    (["--local-size", "40"], "--local-size: expected at most --image-size (32), got 40"),
    (["--image-size", "30"], "--image-size: expected a positive multiple of 4, got 30"),
    (["--tc", "-1"], "--tc: expected a non-negative iteration count, got -1"),
    (["--tc", "5", "--td", "5", "--total-iters", "8"],
     "--total-iters: expected at least --tc + --td (5 + 5 = 10), got 8"),
    (["--hole-min", "13"], "--hole-max: expected at least --hole-min (13), got 12"),
    (["--width-divisor", "3"], "--width-divisor: expected a divisor of 32 (1, 2, 4, 8, ...),"
                               " got 3"),
    (["--session", "a/b"], "--session: expected a plain name without '/', got 'a/b'"),
    (["--max-holes", "0"], "--max-holes: expected at least 1, got 0"),
    (["--accumulate", "0"], "--accumulate: expected at least 1, got 0"),
    (["--batch-size", "6", "--accumulate", "4"],
     "--accumulate: expected a divisor of --batch-size (6), got 4"),
    (["--val-split", "0"], f"--val-split: expected {SPLIT_EXPECTED}, got 0"),
    (["--val-split", "-0.1"], f"--val-split: expected {SPLIT_EXPECTED}, got -0.1"),
    (["--val-split", "1.0"], f"--val-split: expected {SPLIT_EXPECTED}, got 1.0"),
    (["--val-split", "2"], "--val-split 2: expected fewer photos than the 2 of --data-dir, so"
                           " that some are left for training"),
    (["--val-dir", "photos", "--val-split", "1"],
     "--val-split 1: not used with --val-dir photos, whose photos are the validation photos;"
     " give one of the two (--val-dir '' for none)"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_out_of_range_flags_are_one_line_errors(tmp_path, monkeypatch, capsys, make_photos,
                                                flags, message):
    make_photos(tmp_path / "photos", 2)
    monkeypatch.chdir(tmp_path)
    code = train.main(["--data-dir", "photos", "--preset", "quick", *TINY, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {message}\n"
    assert os.listdir(tmp_path) == ["photos"]  # nothing written


def test_lr_drops_multiply_the_learning_rate_from_the_step_after_each():
    config = cfg.resolve(cfg.preset_config("cpu"), dict(learning_rate=0.4, lr_drops=[10, 20]))
    assert [config.learning_rate_at(n) for n in (0, 9, 10, 19, 20, 10 ** 6)] == pytest.approx(
        [0.4, 0.4, 0.1, 0.1, 0.025, 0.025])
    assert cfg.Config().lr_drops == [] and cfg.Config().learning_rate_at(10 ** 6) == 1.0
    assert [config.d_learning_rate_at(n) for n in (0, 10, 20)] == pytest.approx([0.4, 0.1, 0.025])
    constant = cfg.resolve(config, dict(d_learning_rate=0.3))
    assert [constant.d_learning_rate_at(n) for n in (0, 10, 20)] == [0.3, 0.3, 0.3]
    assert constant.learning_rate_at(20) == pytest.approx(0.025)
    parsed = cfg.build_parser("t").parse_args(["--lr-drops", "100", "200"])
    assert parsed.lr_drops == [100, 200]
    assert cfg.build_parser("t").parse_args(["--lr-drops"]).lr_drops == []


@pytest.mark.parametrize("values, message", [
    (dict(lr_drops=[20, 10]), "--lr-drops: expected increasing positive iteration counts, got"
                              " [20, 10]"),
    (dict(lr_drops=[0]), "--lr-drops: expected increasing positive iteration counts, got [0]"),
    (dict(lr_drops=[5, 5]), "--lr-drops: expected increasing positive iteration counts, got"
                            " [5, 5]"),
    (dict(lr_drop_factor=0.0), "--lr-drop-factor: expected a number in (0, 1], got 0.0"),
    (dict(lr_drop_factor=2), "--lr-drop-factor: expected a number in (0, 1], got 2"),
    (dict(lr_plateau=-1), "--lr-plateau: expected a non-negative number of evaluations (0: off),"
                          " got -1"),
    (dict(lr_plateau=2, eval_every=0), "--lr-plateau: expected 0 with --eval-every 0 (it counts"
                                       " held-out evaluations), got 2"),
])
def test_bad_lr_drops_are_config_errors(values, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.resolve(cfg.preset_config("cpu"), values)
    assert str(info.value) == message


def test_val_split_is_a_fraction_or_a_count_and_survives_json():
    parser = cfg.build_parser("t")
    assert parser.parse_args(["--val-split", "20"]).val_split == 20
    assert isinstance(parser.parse_args(["--val-split", "20"]).val_split, int)
    assert parser.parse_args(["--val-split", "0.1"]).val_split == 0.1
    assert "val_split" not in vars(parser.parse_args([]))
    assert cfg.Config().val_split == 0.05 and cfg.preset_config("cpu").val_split == 0.05
    for good in (0.05, 0.5, 1, 20):
        cfg.Config(val_split=good).validate()
    for bad in (0, -3, 0.0, -0.1, 0.51, 1.0, 20.0, True):
        with pytest.raises(cfg.ConfigError, match=r"^--val-split: expected "):
            cfg.Config(val_split=bad).validate()
    count = cfg.Config.from_dict(dict(cfg.Config(val_split=20).to_dict()))
    assert count.val_split == 20 and isinstance(count.val_split, int)
    old = cfg.preset_config("cpu").to_dict()
    del old["val_split"]  # a session saved before --val-split: today's split
    assert cfg.Config.from_dict(old).val_split == 0.05


def test_val_split_flag_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cfg.build_parser("t").parse_args(["--val-split", "ten"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --val-split" in err and "'ten'" in err


def test_val_split_is_kept_on_a_change_of_preset_and_refused_beside_a_val_dir():
    mine = cfg.resolve(cfg.preset_config("cpu"), {"val_split": 7, "val_dir": ""})
    assert cfg.resolve(mine, {"preset": "quick"}).val_split == 7
    # A later --val-dir takes precedence; the split is kept, unused, for a later --val-dir ''.
    with_dir = cfg.resolve(mine, {"val_dir": "held"})
    assert (with_dir.val_dir, with_dir.val_split) == ("held", 7)
    with pytest.raises(cfg.ConfigError) as info:  # the saved --val-dir would make it unused
        cfg.resolve(with_dir, {"val_split": 3})
    assert str(info.value) == ("--val-split 3: not used with --val-dir held, whose photos are the"
                               " validation photos; give one of the two (--val-dir '' for none)")
    assert cfg.resolve(with_dir, {"val_split": 3, "val_dir": ""}).val_split == 3
