"""The typed training configuration, its three named presets and its command-line flags."""
import argparse
import dataclasses
import json
from dataclasses import dataclass, field

PRESETS = ("paper", "cpu", "quick")
HOLE_SHAPES = ("rect", "free")
XLA_CHOICES = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
DEFAULT_LEARNING_RATE = {"adadelta": 1.0, "adam": 2e-4}

# Settings that define the shape of the networks: a session cannot change them on resume.
ARCHITECTURE_SETTINGS = ("image_size", "local_size", "optimizer")


class ConfigError(ValueError):
    """A user's setting is out of range; the message names the flag."""


@dataclass
class Config:
    data_dir: list = field(default_factory=list)
    val_dir: str = ""
    session: str = "default"
    preset: str = "paper"
    image_size: int = 256
    local_size: int = 128
    hole_min: int = 96
    hole_max: int = 128
    hole_shape: str = "rect"
    batch_size: int = 96
    tc: int = 90_000
    td: int = 10_000
    total_iters: int = 500_000
    alpha: float = 0.0004
    recon_loss: str = "mse"
    optimizer: str = "adadelta"
    learning_rate: float = 1.0
    checkpoint_every: int = 1000
    summary_every: int = 100
    sample_every: int = 1000
    seed: int = 0
    deterministic: bool = False
    on_nan: str = "stop"
    xla: str = "auto"
    mixed_precision: bool = False
    strategy: str = "auto"

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def phase(self, iteration):
        """1, 2 or 3: which phase of the schedule an iteration belongs to."""
        if iteration < self.tc:
            return 1
        return 2 if iteration < self.tc + self.td else 3

    def phase_range(self, phase):
        """[first, end) iterations of a phase."""
        ends = [0, self.tc, self.tc + self.td, self.total_iters]
        return ends[phase - 1], ends[phase]

    def validate(self):
        def need(ok, flag, expected):
            if not ok:
                raise ConfigError(f"{flag}: expected {expected}")
        need(self.preset in PRESETS, "--preset", f"one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name in ("image_size", "local_size"):
            value = getattr(self, name)
            need(value >= 4 and value % 4 == 0, flag(name),
                 f"a positive multiple of 4, got {value}")
        need(self.local_size <= self.image_size, "--local-size",
             f"at most --image-size ({self.image_size}), got {self.local_size}")
        need(self.hole_min >= 1, "--hole-min", f"at least 1, got {self.hole_min}")
        need(self.hole_min <= self.hole_max, "--hole-max",
             f"at least --hole-min ({self.hole_min}), got {self.hole_max}")
        need(self.on_nan in ("stop", "rollback"), "--on-nan",
             f"stop or rollback, got {self.on_nan!r}")
        need(self.strategy in STRATEGIES, "--strategy",
             f"one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        need(self.xla in XLA_CHOICES, "--xla", f"one of {', '.join(XLA_CHOICES)}, got {self.xla!r}")
        need(self.hole_shape in HOLE_SHAPES, "--hole-shape",
             f"one of {', '.join(HOLE_SHAPES)}, got {self.hole_shape!r}")
        need(self.hole_max <= self.local_size, "--hole-max",
             f"at most --local-size ({self.local_size}) so the local patch can contain the hole,"
             f" got {self.hole_max}")
        need(self.batch_size >= 1, "--batch-size", f"at least 1, got {self.batch_size}")
        for name in ("tc", "td", "total_iters"):
            need(getattr(self, name) >= 0, flag(name),
                 f"a non-negative iteration count, got {getattr(self, name)}")
        need(self.tc + self.td <= self.total_iters, "--total-iters",
             f"at least --tc + --td ({self.tc} + {self.td} = {self.tc + self.td}),"
             f" got {self.total_iters}")
        need(self.alpha >= 0, "--alpha", f"a non-negative weight, got {self.alpha}")
        need(self.learning_rate > 0, "--learning-rate", f"a positive number, got {self.learning_rate}")
        for name in ("checkpoint_every", "summary_every", "sample_every"):
            need(getattr(self, name) >= 1, flag(name),
                 f"a positive iteration count, got {getattr(self, name)}")
        need(self.session and "/" not in self.session and self.session not in (".", ".."),
             "--session", f"a plain name without '/', got {self.session!r}")


def flag(name):
    return "--" + name.replace("_", "-")


# Preset values; fields not listed keep the paper's values (the dataclass defaults).
PRESET_VALUES = {
    "paper": {},
    "cpu": dict(image_size=128, local_size=64, hole_min=48, hole_max=64, batch_size=8,
                tc=3000, td=300, total_iters=10_000, checkpoint_every=250, summary_every=25,
                sample_every=250),
    "quick": dict(image_size=64, local_size=32, hole_min=16, hole_max=24, batch_size=4,
                  tc=30, td=10, total_iters=60, checkpoint_every=20, summary_every=2,
                  sample_every=10),
}


def preset_config(name):
    return Config(preset=name, **PRESET_VALUES[name])


FLAG_HELP = {
    "data_dir": "folder(s) of photos, searched recursively (default: data/, filled on first use"
                " with the photos that scikit-image, scikit-learn and matplotlib ship)",
    "val_dir": "folder of validation photos for the sample grids (default: a held-out slice of"
               " --data-dir)",
    "session": "name of the run: saved_sessions/NAME, logs/NAME, results/NAME (default: default)",
    "preset": "named settings: paper, cpu (default without a GPU) or quick (a smoke run);"
              " any flag below overrides its value",
    "image_size": "side of the square training crop, a multiple of 4 (paper: 256)",
    "local_size": "side of the local patch seen by the local discriminator (paper: 128)",
    "hole_min": "smallest edge of the random rectangular hole, or of the box a free-form hole"
                " is drawn in (paper: 96)",
    "hole_max": "largest edge of the random rectangular hole, or of the box a free-form hole"
                " is drawn in (paper: 128)",
    "hole_shape": "shape of the random holes: rect (the paper's rectangles) or free (random"
                  " brush strokes, like holes people draw)",
    "batch_size": "images per iteration (paper: 96)",
    "tc": "iterations of phase 1, completion network only (paper: 90000)",
    "td": "iterations of phase 2, discriminator only (paper: 10000)",
    "total_iters": "total iterations; phase 3 trains both networks (paper: 500000)",
    "alpha": "weight of the adversarial loss in phase 3 (paper: 0.0004)",
    "recon_loss": "reconstruction loss in the hole: mse (paper) or l1",
    "optimizer": "adadelta (paper) or adam",
    "learning_rate": "learning rate (default: 1.0 for adadelta, as in the paper; 2e-4 for adam)",
    "checkpoint_every": "save a checkpoint every N iterations (also at phase ends and on Ctrl-C)",
    "summary_every": "write TensorBoard scalars every N iterations",
    "sample_every": "write validation grids (TensorBoard and results/) every N iterations",
    "seed": "seed of the initial weights, the data stream, holes and validation batch",
    "deterministic": "bit-identical runs for the same --seed on the CPU (slower kernels)",
    "on_nan": "when a loss becomes NaN or infinite: stop (keeping every good checkpoint), or"
              " rollback to the last good checkpoint and skip the batches that caused it",
    "xla": "compile each training step with XLA: auto (on with a GPU, off on a CPU, where it"
           " is slower), on or off",
    "mixed_precision": "compute in float16 on a GPU or bfloat16 on a CPU, keeping weights and"
                       " losses in float32 (fast only on hardware with those instructions)",
    "strategy": "tf.distribute strategy: auto (mirrored with several GPUs, multiworker when"
                " TF_CONFIG names several workers, else default), default (one device), mirrored"
                " (every GPU of this machine) or multiworker (machines listed in TF_CONFIG);"
                " --batch-size stays the global batch",
}
CHOICES = {"preset": PRESETS, "hole_shape": HOLE_SHAPES, "on_nan": ("stop", "rollback"),
           "recon_loss": ("mse", "l1"), "optimizer": ("adadelta", "adam"), "xla": XLA_CHOICES,
           "strategy": STRATEGIES}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(description):
    parser = ArgumentParser(description=description)
    for f in dataclasses.fields(Config):
        kwargs = dict(default=argparse.SUPPRESS, help=FLAG_HELP[f.name], dest=f.name)
        if f.name == "data_dir":
            kwargs.update(nargs="+", metavar="DIR")
        elif f.type is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif f.name in CHOICES:
            kwargs.update(choices=CHOICES[f.name])
        else:
            kwargs.update(type=type(f.default) if f.name != "learning_rate" else float,
                          metavar="N" if f.type is int else None)
        parser.add_argument(flag(f.name), **kwargs)
    parser.add_argument("--fresh", action="store_true",
                        help="start the session over; the old one is moved aside, not deleted")
    return parser


def resolve(base, overrides):
    """Apply the explicitly given flags to a base configuration (a preset or a saved session)."""
    values = dataclasses.asdict(base)
    if "preset" in overrides and overrides["preset"] != base.preset:
        values.update(dataclasses.asdict(preset_config(overrides["preset"])))
        values.update(data_dir=base.data_dir, val_dir=base.val_dir, session=base.session)
    values.update(overrides)
    if "optimizer" in overrides and "learning_rate" not in overrides:
        values["learning_rate"] = DEFAULT_LEARNING_RATE[values["optimizer"]]
    config = Config(**values)
    config.validate()
    return config


def differences(old, new):
    """(setting, old value, new value) for each setting that differs."""
    a, b = dataclasses.asdict(old), dataclasses.asdict(new)
    return [(k, a[k], b[k]) for k in a if a[k] != b[k]]
