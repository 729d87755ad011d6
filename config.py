"""The typed training configuration, its three named presets and its command-line flags.

Each setting is declared once, below: its paper value (the default), its flag's help, its
choices or the range it must lie in. The parser and validate() are built from these.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field

from utils import UserError

PRESETS = ("paper", "cpu", "quick")
HOLE_SHAPES = ("rect", "free")
XLA_CHOICES = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
MIXED = "mixed"  # what --mixed-precision sets: float16 on a GPU, bfloat16 on a CPU
DEFAULT_LEARNING_RATE = {"adadelta": 1.0, "adam": 2e-4}
PHASE_NAMES = {1: "phase 1 completion", 2: "phase 2 discriminator", 3: "phase 3 joint"}

# Settings that define the shape of the networks: a session cannot change them on resume.
ARCHITECTURE_SETTINGS = ("image_size", "local_size", "optimizer", "width_divisor", "upsampling",
                         "gan_loss")


class ConfigError(UserError):
    """A user's setting is out of range; the message names the flag."""


def setting(default, help, choices=None, check=None, expected=None, **kwargs):
    """A Config field: its default, its flag's help, and what validate() accepts: one of
    `choices`, or a value for which `check` is true (`expected` says which, in words)."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata=dict(help=help, choices=choices, check=check,
                                          expected=expected, **kwargs))


def multiple_of_4(value):
    return value >= 4 and value % 4 == 0


def fraction_or_count(text):
    """--val-split: a whole number such as 20 is a count of photos (int), any other number a
    fraction of them (float)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


NON_NEGATIVE = dict(check=lambda v: v >= 0, expected="a non-negative iteration count")
EVERY = dict(check=lambda v: v >= 1, expected="a positive iteration count")


@dataclass
class Config:
    data_dir: list = setting(
        list, "folder(s) of photos, searched recursively (default: data/, filled on first use"
              " with the photos that scikit-image, scikit-learn and matplotlib ship)",
        nargs="+", metavar="DIR")
    data_weights: list = setting(
        list, "with several --data-dir folders, how often each is drawn from: one weight per"
              " folder, e.g. --data-weights 1 1 draws each folder's photos half of the time"
              " however many each holds (default: every photo equally often). Not part of the"
              " networks: a session may change them when it resumes",
        nargs="+", metavar="W", type=float,
        check=lambda v: all(has_type(w, float) and w > 0 for w in v),
        expected="positive numbers, one per --data-dir folder")
    val_dir: str = setting(
        "", "folder of validation photos for the sample grids and --eval-every (default:"
            " --val-split of --data-dir)")
    val_split: float = setting(
        0.05, "without --val-dir, how many of --data-dir's photos (chosen by --seed) are kept"
              " aside as validation photos, never trained on: a fraction such as 0.1 (at least"
              " 1 photo, at most 64) or a number such as 20 (default: 0.05). They choose"
              " settings and checkpoints; report results on other photos, with evaluate.py. A"
              " session may change it when it resumes, as --data-dir",
        metavar="F|N", type=fraction_or_count,
        check=lambda v: 0 < v <= 0.5 if isinstance(v, float) else v >= 1,
        expected="a fraction in (0, 0.5] or a whole number of photos (at least 1)")
    session: str = setting(
        "default", "name of the run; its checkpoints, TensorBoard logs and sample grids are"
                   " kept under that name, and the same command resumes it (default: default)",
        check=lambda v: v and "/" not in v and v not in (".", ".."),
        expected="a plain name without '/'")
    init_from: str = setting(
        "", "start a new session from the completion network of an export (complete.py"
            " --export) instead of random weights, with its mean pixel; e.g. --tc 0 to go"
            " straight to phases 2 and 3 on your photos. Unused when the session resumes",
        metavar="DIR")
    preset: str = setting(
        "paper", "named settings: paper, cpu (default without a GPU) or quick (a smoke run);"
                 " any flag below overrides its value", choices=PRESETS)
    image_size: int = setting(
        256, "side of the square training crop, a multiple of 4 (paper: 256)",
        check=multiple_of_4, expected="a positive multiple of 4")
    local_size: int = setting(
        128, "side of the local patch seen by the local discriminator (paper: 128)",
        check=multiple_of_4, expected="a positive multiple of 4")
    hole_min: int = setting(
        96, "smallest edge of the random rectangular hole, or of the box a free-form hole is"
            " drawn in (paper: 96)", check=lambda v: v >= 1, expected="at least 1")
    hole_max: int = setting(
        128, "largest edge of the random rectangular hole, or of the box a free-form hole is"
             " drawn in (paper: 128)")
    hole_shape: str = setting(
        "rect", "shape of the random holes: rect (the paper's rectangles) or free (random brush"
                " strokes, like holes people draw)", choices=HOLE_SHAPES)
    max_holes: int = setting(
        1, "holes per training image: each image gets 1 to N (each count equally likely), each"
           " drawn as --hole-shape says, and the local patch is centred on one of them (paper:"
           " 1). Not part of the networks: a session may change it when it resumes",
        check=lambda v: v >= 1, expected="at least 1")
    width_divisor: int = setting(
        1, "divide the channels of every layer of both networks by N: 1 is the paper's"
           " networks; the tests use 8 for tiny, fast runs",
        check=lambda v: v >= 1 and 32 % v == 0, expected="a divisor of 32 (1, 2, 4, 8, ...)")
    batch_size: int = setting(
        96, "images per iteration (paper: 96)", check=lambda v: v >= 1, expected="at least 1")
    accumulate: int = setting(
        1, "gradient accumulation: compute each batch as N micro-batches of --batch-size / N"
           " images, one after the other, in less memory, their gradients summed into one"
           " update (the whole batch's gradient). Batch norm normalizes each micro-batch with"
           " its own statistics and updates its moving averages once per micro-batch. Not part"
           " of the networks: a session may change it when it resumes",
        check=lambda v: v >= 1, expected="at least 1")
    tc: int = setting(90_000, "iterations of phase 1, completion network only (paper: 90000)",
                      **NON_NEGATIVE)
    td: int = setting(10_000, "iterations of phase 2, discriminator only (paper: 10000)",
                      **NON_NEGATIVE)
    total_iters: int = setting(
        500_000, "total iterations; phase 3 trains both networks (paper: 500000)", **NON_NEGATIVE)
    alpha: float = setting(
        0.0004, "weight of the adversarial loss in phase 3 (paper: 0.0004)",
        check=lambda v: v >= 0, expected="a non-negative weight")
    recon_loss: str = setting(
        "mse", "reconstruction loss in the hole: mse (paper) or l1", choices=("mse", "l1"))
    recon_colour: str = setting(
        "rgb", "the colours the reconstruction loss measures the error in: rgb (paper), or"
               " whitened: luminance, red-blue and green-magenta, each scaled by its spread"
               " in natural photos, so that the network learns the photos' least varied"
               " colour directions sooner (a small network from scratch: green within 2000"
               " iterations, still grey after 6000 on rgb); use it from the start, with"
               " --recon-loss mse and no --ssim-loss (with l1, or with the structural term"
               " beside it, the green did not come, and switching to them took it away)."
               " Not the paper's. A session may change it when it resumes",
        choices=("rgb", "whitened"))
    optimizer: str = setting("adadelta", "adadelta (paper) or adam", choices=("adadelta", "adam"))
    learning_rate: float = setting(
        1.0, "learning rate (default: 1.0 for adadelta, as in the paper; 2e-4 for adam)",
        check=lambda v: v > 0, expected="a positive number")
    lr_drops: list = setting(
        list, "iterations after which the learning rate is multiplied by --lr-drop-factor, e.g."
              " --lr-drops 40000 60000 (default: none, as the paper). Not part of the networks:"
              " a session may change them when it resumes",
        nargs="*", metavar="N", type=int,
        check=lambda v: all(has_type(n, int) and n >= 1 for n in v) and list(v) == sorted(set(v)),
        expected="increasing positive iteration counts")
    lr_drop_factor: float = setting(
        0.25, "what each of --lr-drops multiplies the learning rate by (default: 0.25)",
        check=lambda v: 0 < v <= 1, expected="a number in (0, 1]")
    lr_plateau: int = setting(
        0, "in phase 1, multiply the learning rate by --lr-drop-factor when N held-out"
           " evaluations (--eval-every) in a row since the last drop have not lowered the"
           " validation hole L1 below its best so far; each drop is added to the session's"
           " --lr-drops, so a resumed run keeps it (default 0: never, as the paper). A session"
           " may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative number of evaluations (0: off)")
    d_learning_rate: float = setting(
        0.0, "learning rate of the discriminator; 0 (default): the same as the completion"
             " network's, --lr-drops included, as in the paper. A positive rate stays constant:"
             " --lr-drops then anneal the completion network only, and phases 2 and 3 train the"
             " discriminator at this rate. A session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative number (0: as --learning-rate)")
    # What other implementations change where the paper's phase 3 fails at small scale
    # (docs/training.md, "When the discriminator wins"). The defaults are the paper's.
    d_loss_scale: float = setting(
        1.0, "multiply the discriminator's loss by S in phase 3 (GLCIC-PyTorch: alpha, 0.0004);"
             " 1: the paper. With Adadelta this shrinks its phase-3 steps; Adam mostly undoes"
             " a constant scale once its moment estimates catch up. A session may change it"
             " when it resumes",
        check=lambda v: 0 < v <= 1, expected="a number in (0, 1]")
    label_smoothing: float = setting(
        0.0, "one-sided label smoothing: the discriminator's target for real images is 1 - S"
             " in phases 2 and 3 (Salimans et al. 2016 use 0.1); completed images keep 0 and"
             " the completion network's adversarial target stays 1. 0: the paper. A session"
             " may change it when it resumes",
        check=lambda v: 0 <= v < 0.5, expected="a number in [0, 0.5)")
    d_batches: str = setting(
        "separate", "how the discriminator sees a batch in training: separate (the photos and"
                    " the completed images as two batches, as GLCIC-PyTorch does) or joint"
                    " (one batch of both). Its batch norm normalizes each batch by that"
                    " batch's statistics, so with separate batches it can tell a batch of"
                    " completed images by what they share (docs/results.md, \"Why the"
                    " discriminator wins\"); joint batches leave it only each image to judge."
                    " A session may change it when it resumes",
        choices=("separate", "joint"))
    checkerboard_penalty: float = setting(
        0.0, "add W times the output's checkerboard excess in the hole (its response to"
             " [[1,-1],[-1,1]] beyond the photo's times the output's sharpness, per image and"
             " 2x2 window) to the completion network's loss in phases 1 and 3; not in the"
             " paper. 0: none. A session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative weight")
    stripes_penalty: float = setting(
        0.0, "add W times the output's excess of two-pixel stripes in the hole (columns or rows"
             " alternating, which the checkerboard penalty does not see: the same with the"
             " stripe response, per 3x3 window) to the completion network's loss in phases 1"
             " and 3; not in the paper. 0: none. A session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative weight")
    coarse_loss: float = setting(
        0.0, "add W times the coarse reconstruction loss to the completion network's loss in"
             " phases 1 and 3: the L1 distance between the completed image and the photo"
             " averaged over 4x4 blocks, weighted by each block's share of the hole (the"
             " fill's colours at a quarter of the resolution, blind to its texture). Holds the"
             " colours in place while the adversarial term adds texture; not in the paper. 0:"
             " none. A session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative weight")
    ssim_loss: float = setting(
        0.0, "add W times the structural loss to the completion network's loss in phases 1"
             " and 3: 1 - SSIM of the completed image against the photo on each 7x7 window"
             " that reaches into the hole (as the evaluation's image SSIM measures it),"
             " averaged over the image like the reconstruction loss. Rewards the photo's local"
             " contrast where L1 and L2 reward a blur; not in the paper. 0: none. A session"
             " may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative weight")
    colour_loss: float = setting(
        0.0, "add W times the colour loss to the completion network's loss in phases 1 and 3:"
             " the L1 distance between the mean colour of the fill and of the photo in each"
             " image's hole on the red-blue and green-magenta axes, blind to luminance and"
             " texture. Aims at the colours a per-pixel loss learns last (green turning grey);"
             " not in the paper. 0: none. A session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative weight")
    d_lowpass: bool = setting(
        False, "the discriminator sees its images (the whole and the local patch) through a"
               " 3x3 binomial filter ([1,2,1] x [1,2,1] / 16), blind to the two-pixel period:"
               " its gradient then carries none of it to the completion network (with the"
               " paper's strided discriminator, three quarters of that gradient lies there,"
               " the dot grid's source). Not the paper's. A session may change it when it"
               " resumes")
    gan_loss: str = setting(
        "bce", "the adversarial loss and its discriminator: bce (the paper's: cross-entropy,"
               " batch norm in the discriminator) or hinge (not the paper's: the hinge loss of"
               " SN-GAN and DeepFill v2, max(0, 1 - D(real)) + max(0, 1 + D(completed)) for"
               " the discriminator and -D(completed) for the completion network, with the"
               " paper's discriminator layers spectrally normalized, without batch norm, leaky"
               " ReLU). Part of the discriminator: a session keeps it",
        choices=("bce", "hinge"))
    upsampling: str = setting(
        "transposed", "how the completion network doubles its resolution, twice: transposed"
                      " (the paper's 4x4 transposed convolutions) or resize (nearest-neighbour"
                      " upsampling, then a 3x3 convolution: no checkerboard by construction,"
                      " Odena et al. 2016; not the paper's, and the authors' weights and"
                      " --init-from of a transposed network do not load into it)",
        choices=("transposed", "resize"))
    transposed_init: str = setting(
        "default", "initial kernels of the two transposed convolutions: default (Keras'"
                   " Glorot uniform, as any layer) or checkerboard-free (each 4x4 kernel a 3x3"
                   " one convolved with a 2x2 box, so the layer starts as resize upsampling"
                   " does: nearest neighbour, then a 3x3 convolution). Only for new networks",
        choices=("default", "checkerboard-free"))
    ema_decay: float = setting(
        0.0, "keep an exponential moving average of the completion network's weights (its"
             " batch-norm statistics included), moved towards them by 1 - D after every"
             " iteration that trains it (phases 1 and 3): D = 0.995 averages over about the"
             " last 1 / (1 - D) = 200 iterations. Sample grids, evaluations, complete.py,"
             " evaluate.py, serve.py and exports of the session then use the average"
             " (complete.py --export --raw: the network itself). 0: none, as the paper. A"
             " session may change it when it resumes; turned on, the average starts from the"
             " network as it is",
        check=lambda v: 0 <= v < 1, expected="a number in [0, 1)")
    checkpoint_every: int = setting(
        1000, "save a checkpoint every N iterations (also at phase ends and on Ctrl-C)", **EVERY)
    keep_checkpoints: int = setting(
        3, "how many of the checkpoints written every --checkpoint-every iterations to keep, the"
           " newest (default: 3; 0: every one). Those at phase ends are always kept. Not part of"
           " the networks: a session may change it when it resumes",
        check=lambda v: v >= 0, expected="a non-negative number (0: every one)")
    summary_every: int = setting(100, "write TensorBoard scalars every N iterations", **EVERY)
    sample_every: int = setting(
        1000, "write validation grids (TensorBoard and results) every N iterations", **EVERY)
    eval_every: int = setting(
        2000, "every N iterations (and at each phase's end) complete the validation photos"
              " (--val-dir, or --val-split of --data-dir) with evaluate.py's seeded holes"
              " and log its metrics to TensorBoard under eval/; 0: never",
        check=lambda v: v >= 0, expected="a non-negative iteration count")
    eval_hole_sets: int = setting(
        1, "give each validation photo N hole sets at each evaluation (--eval-every): those of"
           " evaluate.py's seeds 0 to N - 1, pooled, as evaluate.py --validation --hole-sets N"
           " scores them. A steadier curve on a few validation photos, for N times the"
           " evaluation's time. A session may change it when it resumes",
        check=lambda v: v >= 1, expected="at least 1")
    bn_batches: int = setting(
        0, "before the completion network is saved, sampled or evaluated, set its batch-norm"
           " statistics to their mean over N fixed training batches (0: keep the running"
           " averages, as the paper's code does; with small batches they follow the last few"
           " batches, and completions shift in colour from one checkpoint to the next)",
        check=lambda v: v >= 0, expected="a non-negative number of batches")
    seed: int = setting(0, "seed of the initial weights, the data stream, holes and validation"
                           " batch")
    deterministic: bool = setting(
        False, "bit-identical runs for the same --seed on the CPU (slower kernels)")
    on_nan: str = setting(
        "stop", "when a loss becomes NaN or infinite: stop (keeping every good checkpoint), or"
                " rollback to the last good checkpoint and skip the batches that caused it",
        choices=("stop", "rollback"))
    xla: str = setting(
        "auto", "compile each training step with XLA: auto (on with a GPU, off on a CPU, where"
                " it is slower), on or off", choices=XLA_CHOICES)
    precision: str = setting(
        "float32", "what the networks compute in: float32, bfloat16, float16, or auto (float16 on"
                   " a GPU, bfloat16 on a CPU that computes it natively, such as AVX-512 BF16 or"
                   " AMX; float32 on other CPUs). Weights, batch-norm statistics, losses, the"
                   " discriminator's logit and the optimizers stay float32, and so do"
                   " checkpoints. float32 by default: bfloat16 trains 1.6-2x faster where native"
                   " but did not keep within 2 %% of float32's held-out L1 (docs/training.md,"
                   " \"Precision\"). A session keeps the precision it started with unless given;"
                   " --mixed-precision is float16 on a GPU, bfloat16 on a CPU",
        choices=PRECISIONS + (MIXED,), flag_choices=PRECISIONS)
    strategy: str = setting(
        "auto", "tf.distribute strategy: auto (mirrored with several GPUs, multiworker when"
                " TF_CONFIG names several workers, else default), default (one device),"
                " mirrored (every GPU of this machine) or multiworker (machines listed in"
                " TF_CONFIG); --batch-size stays the global batch", choices=STRATEGIES)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A Config from a saved session or export: unknown keys are dropped (settings of newer
        versions), missing ones take the paper's values (settings added since), and the
        values are checked as the flags are."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "precision" not in values:  # saved before --precision: --mixed-precision or float32
            values = dict(values, precision=MIXED if values.get("mixed_precision") else "float32")
        config = cls(**{k: v for k, v in values.items() if k in names})
        config.validate()
        return config

    def learning_rate_at(self, iteration):
        """The learning rate of the step after `iteration` iterations: --learning-rate, times
        --lr-drop-factor for each of --lr-drops that `iteration` has reached."""
        drops = sum(drop <= iteration for drop in self.lr_drops)
        return self.learning_rate * self.lr_drop_factor ** drops

    def d_learning_rate_at(self, iteration):
        """The discriminator's learning rate of the step after `iteration` iterations."""
        return self.d_learning_rate or self.learning_rate_at(iteration)

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
        """ConfigError naming the first setting that is out of range."""
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))

        def need(ok, name, expected):
            if not ok:
                raise ConfigError(f"{flag(name)}: expected {expected}, got {getattr(self, name)}")
        need(not self.data_weights or len(self.data_weights) == len(self.data_dir),
             "data_weights", f"one weight per --data-dir folder ({len(self.data_dir)})")
        need(self.local_size <= self.image_size, "local_size",
             f"at most --image-size ({self.image_size})")
        need(self.hole_min <= self.hole_max, "hole_max", f"at least --hole-min ({self.hole_min})")
        need(self.hole_max <= self.local_size, "hole_max", f"at most --local-size"
             f" ({self.local_size}) so the local patch can contain the hole")
        need(self.batch_size % self.accumulate == 0, "accumulate",
             f"a divisor of --batch-size ({self.batch_size})")
        need(self.gan_loss == "bce" or not self.label_smoothing, "label_smoothing",
             "0 with --gan-loss hinge (its margin does the smoothing's work)")
        need(not self.lr_plateau or self.eval_every, "lr_plateau",
             "0 with --eval-every 0 (it counts held-out evaluations)")
        need(self.tc + self.td <= self.total_iters, "total_iters",
             f"at least --tc + --td ({self.tc} + {self.td} = {self.tc + self.td})")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def check_setting(name, value):
    """ConfigError if `value` is not one that setting `name` accepts on its own: its type, its
    choices, its range (validate() also checks the settings against each other)."""
    f = FIELDS[name]
    meta = f.metadata
    if not has_type(value, f.type):
        raise ConfigError(f"{flag(name)}: expected {f.type.__name__}, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{flag(name)}: expected one of {', '.join(meta['choices'])}, got"
                          f" {value!r}")
    if meta["check"] and not meta["check"](value):
        raise ConfigError(f"{flag(name)}: expected {meta['expected']}, got {value!r}")


def has_type(value, kind):
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def flag(name):
    return "--" + name.replace("_", "-")


# Preset values; fields not listed keep the paper's values (the dataclass defaults).
PRESET_VALUES = {
    "paper": {},
    "cpu": dict(image_size=128, local_size=64, hole_min=48, hole_max=64, batch_size=8,
                tc=3000, td=300, total_iters=10_000, checkpoint_every=250, summary_every=25,
                sample_every=250, eval_every=250, bn_batches=50),
    "quick": dict(image_size=64, local_size=32, hole_min=16, hole_max=24, batch_size=4,
                  tc=30, td=10, total_iters=60, checkpoint_every=20, summary_every=2,
                  sample_every=10, eval_every=20, bn_batches=4),
}


def preset_config(name):
    return Config(preset=name, **PRESET_VALUES[name])


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_flag(parser, name, **overrides):
    """Add the flag of Config field `name` as declared (help, choices, type), with overrides."""
    f = FIELDS[name]
    meta = f.metadata
    kwargs = dict(default=argparse.SUPPRESS, help=meta["help"], dest=f.name)
    if f.type is bool:
        kwargs.update(action=argparse.BooleanOptionalAction)
    elif f.type is list:
        kwargs.update(nargs=meta["nargs"], metavar=meta["metavar"], type=meta.get("type", str))
    elif meta["choices"]:
        kwargs.update(choices=meta.get("flag_choices", meta["choices"]))
    elif "metavar" in meta:
        kwargs.update(type=meta.get("type", f.type), metavar=meta["metavar"])
    else:
        kwargs.update(type=f.type, metavar="N" if f.type is int else None)
    kwargs.update(overrides)
    parser.add_argument(flag(f.name), **kwargs)


def add_mixed_precision(parser):
    """--mixed-precision: the earlier name of --precision float16 on a GPU, bfloat16 on a CPU."""
    parser.add_argument("--mixed-precision", dest="precision", action="store_const", const=MIXED,
                        default=argparse.SUPPRESS,
                        help="the same as --precision float16 on a GPU, bfloat16 on a CPU")
    parser.add_argument("--no-mixed-precision", dest="precision", action="store_const",
                        const="float32", default=argparse.SUPPRESS,
                        help="the same as --precision float32")


def build_parser(description):
    parser = ArgumentParser(description=description)
    for f in dataclasses.fields(Config):
        add_flag(parser, f.name)
    add_mixed_precision(parser)
    parser.add_argument("--fresh", action="store_true",
                        help="start the session over; the old one is moved aside, not deleted")
    return parser


def resolve(base, overrides):
    """Apply the explicitly given flags to a base configuration (a preset or a saved session)."""
    values = dataclasses.asdict(base)
    if "preset" in overrides and overrides["preset"] != base.preset:
        values.update(dataclasses.asdict(preset_config(overrides["preset"])))
        values.update(data_dir=base.data_dir, data_weights=base.data_weights,
                      val_dir=base.val_dir, val_split=base.val_split, session=base.session)
    values.update(overrides)
    if "val_split" in overrides and values["val_dir"]:
        raise ConfigError(f"--val-split {values['val_split']}: not used with --val-dir"
                          f" {values['val_dir']}, whose photos are the validation photos; give"
                          " one of the two (--val-dir '' for none)")
    if "optimizer" in overrides and "learning_rate" not in overrides:
        values["learning_rate"] = DEFAULT_LEARNING_RATE.get(values["optimizer"], 1.0)
    config = Config(**values)
    config.validate()
    return config


def differences(old, new):
    """(setting, old value, new value) for each setting that differs."""
    a, b = dataclasses.asdict(old), dataclasses.asdict(new)
    return [(k, a[k], b[k]) for k in a if a[k] != b[k]]
