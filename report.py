"""What a training run shows: TensorBoard scalars, graphs and sample grids, the same grids and
the loss curves as files (results/), and the progress bar."""
import contextlib
import csv
import os
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import evaluate
import realism
import utils
from config import PHASE_NAMES

# What a step returns: its losses and the discriminator's mean outputs (checked for NaN, shown
# in the progress bar), and the gradients' norms (grad_g, grad_d: of the completion network's
# and the discriminator's update; in phase 3, the squared norms of the two terms' gradients at
# the completion network's output).
PENALTIES = ("checkerboard", "stripes", "coarse", "ssim", "colour")  # --...-penalty, --...-loss
LOSSES = ("reconstruction", "discriminator", "adversarial", "d_real", "d_completed", *PENALTIES)
GRADIENTS = {"grad_g": "gradients/completion_network", "grad_d": "gradients/discriminator",
             "grad_out_reconstruction": "gradients/output_reconstruction",
             "grad_out_adversarial": "gradients/output_adversarial",
             "adversarial_share": "gradients/adversarial_share"}
HISTORY_FIELDS = ["iteration", "phase", *LOSSES, "images_per_second", *GRADIENTS,
                  "learning_rate", "d_learning_rate"]
# The learning rates each step ran with (the interval's mean), as TensorBoard tags.
LEARNING_RATES = {"learning_rate": "learning_rate/completion_network",
                  "d_learning_rate": "learning_rate/discriminator"}
GRID_TAG = "samples/masked_input | output | completed | ground_truth"
# Held-out evaluation: the methods scored during training (each a TensorBoard run of its own,
# logs/NAME/SUBFOLDER, so that the same tag draws their curves in one chart), with the SWD of
# two halves of the photos against each other (FLOOR: the scale of real against real), and the
# metrics logged (eval/TAG) and drawn.
FLOOR = "photos, two halves"
EVAL_RUNS = {"model": "", "model + blend": "eval_blend", "OpenCV Telea": "eval_telea",
             FLOOR: "eval_floor"}
EVAL_COLUMNS = ("l1_hole", "psnr_hole", "ssim_image")
EVAL_TAGS = {**{column: column for column in EVAL_COLUMNS}, "swd_hole": "swd",
             "sharpness_hole": "sharpness", "checkerboard_hole": "checkerboard",
             "checkerboard_excess": "checkerboard_excess", "stripes_hole": "stripes",
             "stripes_excess": "stripes_excess", "colour_hole": "colour",
             "colour_slope": "colour_slope"}
EVAL_FIELDS = ["iteration", "phase", "method", *evaluate.COLUMNS, *realism.COLUMNS]
EVAL_GRID_TAG = "eval/masked_input | model | model + blend | ground_truth"


class Reporter:
    """Scalars, step graphs and sample grids for TensorBoard; grids, losses.csv and loss curves
    in the results folder. Only the chief writes (chief=False: the other workers of a
    multi-worker run keep quiet)."""

    def __init__(self, config, logs, results, shown, val_batch, mean_pixel, start, chief=True,
                 held_out=()):
        """shown: a function returning the completion network that samples and evaluations
        show (asked each time: with --ema-decay it is the network until the average's first
        update, the average after)."""
        self.config, self.shown, self.chief, self.results = config, shown, chief, results
        self.writer = (tf.summary.create_file_writer(logs) if chief
                       else tf.summary.create_noop_writer())
        self.val = {k: tf.constant(v) for k, v in val_batch.items()}
        self.mean_pixel = tf.constant(mean_pixel)
        self.history_path = os.path.join(results, "losses.csv")
        self.eval_path = os.path.join(results, "eval.csv")
        self.history = read_csv(self.history_path) if chief else []
        self.eval_history = read_csv(self.eval_path) if chief else []
        self.traced, self.rate = set(), 0.0
        # Held-out evaluation, on the chief only: the fixed photos and holes, the other runs'
        # writers, and Telea's scores (computed once: they never change).
        self.held_out = list(held_out) if chief else []
        self.eval_writers = {method: tf.summary.create_file_writer(os.path.join(logs, folder))
                             for method, folder in EVAL_RUNS.items() if folder and self.held_out}
        self.eval_writers["model"] = self.writer
        self.baseline, self.reference, self.last_eval = None, None, {}
        # Whether the completion network shown was evaluated and has not moved since: phase 2
        # trains only the discriminator, so its evaluations after the first would repeat it.
        self.evaluated = False
        self.rewind(start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """However the loop ends, even by a second Ctrl-C, its events reach the event files."""
        self.flush()

    def flush(self):
        for writer in (self.writer, *self.eval_writers.values()):
            writer.flush()

    def rewind(self, iteration):
        """Forget what was recorded after `iteration` (a killed run's tail, or a rollback)."""
        self.history = [row for row in self.history if int(row["iteration"]) <= iteration]
        self.eval_history = [row for row in self.eval_history
                             if int(row["iteration"]) <= iteration]
        self.evaluated = False
        self.new_interval()

    def new_interval(self):
        self.pending, self.clock = [], time.perf_counter()

    @contextlib.contextmanager
    def graph(self, phase, iteration):
        """Export the graph of the step run inside this block, the first time of each phase."""
        if phase in self.traced:
            yield
            return
        self.traced.add(phase)
        tf.summary.trace_on(graph=True, profiler=False)
        yield
        with self.writer.as_default():
            tf.summary.trace_export(name=f"phase{phase}_step", step=iteration)

    def record(self, phase, iteration, metrics, phase_end):
        """Keep this step's metrics; write scalars and sample grids when they are due."""
        self.pending.append(metrics)
        if iteration % self.config.summary_every == 0 or phase_end:
            self.scalars(phase, iteration)
        if iteration % self.config.sample_every == 0 or phase_end:
            self.samples(phase, iteration)
        if phase != 2:
            self.evaluated = False  # the completion network moved
        every = self.config.eval_every
        if (self.held_out and every and (iteration % every == 0 or phase_end)
                and not self.evaluated):
            self.evaluate(phase, iteration)
            self.evaluated = True

    def scalars(self, phase, iteration):
        elapsed = time.perf_counter() - self.clock
        self.rate = len(self.pending) * self.config.batch_size / elapsed if elapsed > 0 else 0.0
        means = gradient_figures(interval_means(self.pending))
        with self.writer.as_default(step=iteration):
            tf.summary.scalar("phase", phase)
            tf.summary.scalar("speed/images_per_second", self.rate)
            for name in ("reconstruction", "discriminator", "adversarial", *PENALTIES):
                if name in means:
                    tf.summary.scalar(f"loss/{name}", means[name])
            if "d_real" in means:
                tf.summary.scalar("discriminator/real", means["d_real"])
                tf.summary.scalar("discriminator/completed", means["d_completed"])
            for name, tag in {**GRADIENTS, **LEARNING_RATES}.items():
                if name in means:
                    tf.summary.scalar(tag, means[name])
        self.history.append(dict({k: "" for k in HISTORY_FIELDS}, iteration=iteration,
                                 phase=phase, images_per_second=round(self.rate, 3),
                                 **{k: round(v, 6) for k, v in means.items()
                                    if k in HISTORY_FIELDS}))
        self.new_interval()

    def samples(self, phase, iteration):
        if not self.chief:
            return
        outputs = self.shown()(utils.completion_input(self.val["image"], self.val["mask"],
                                                      self.mean_pixel), training=False)
        grid = utils.sample_grid(self.val["image"], self.val["mask"], outputs, self.mean_pixel)
        with self.writer.as_default(step=iteration):
            tf.summary.image(GRID_TAG, grid[None], step=iteration)
        self.writer.flush()
        utils.save_png(os.path.join(self.results, f"phase{phase}_iter{iteration:07d}.png"), grid)
        self.save_history()

    def evaluate(self, phase, iteration):
        """Complete the held-out photos (evaluate.py's holes, distortion and realism measures)
        and log the scores of the model, of the model with the paper's blending and, computed
        once, Telea's and the photos' own SWD (with 2 held-out photos or more). record() calls it
        when due, except in phase 2 once the unchanged completion network has been scored."""
        mean_pixel = self.mean_pixel.numpy()
        if self.baseline is None:
            self.reference = realism.photo_reference(*evaluate.photos_and_holes(self.held_out))
            telea = evaluate.fill_items(None, mean_pixel, self.held_out, ("OpenCV Telea",))
            self.baseline = evaluate.measure(self.held_out, telea, self.reference)["mean"]
            floor, _ = evaluate.swd_floor(self.held_out)
            if not np.isnan(floor):
                self.baseline[FLOOR] = {"swd_hole": floor}
        completed = evaluate.fill_items(self.shown(), mean_pixel, self.held_out,
                                        ("model", "model + blend"))
        scores = {**evaluate.measure(self.held_out, completed, self.reference)["mean"],
                  **self.baseline}
        for method, values in scores.items():
            with self.eval_writers[method].as_default(step=iteration):
                for column, tag in EVAL_TAGS.items():
                    if column in values:
                        tf.summary.scalar(f"eval/{tag}", values[column])
            self.eval_history.append({"iteration": iteration, "phase": phase, "method": method,
                                      **{c: round(v, 6) for c, v in values.items()}})
        with self.writer.as_default(step=iteration):
            tf.summary.image(EVAL_GRID_TAG, evaluation_grid(
                evaluate.examples(self.held_out, completed, 4))[None])
        for writer in self.eval_writers.values():
            writer.flush()
        self.last_eval = {"hole L1": scores["model"]["l1_hole"]}
        write_csv(self.eval_path, EVAL_FIELDS, self.eval_history)
        plot_evaluation(self.eval_history, self.config, self.results)

    def save_history(self):
        if not self.chief:
            return
        write_csv(self.history_path, HISTORY_FIELDS, self.history)
        plot_losses(self.history, self.results)


def interval_means(pending):
    """Each metric's mean over the interval's steps. A float16 step whose scaled gradient
    overflowed is skipped by its optimizer and has no gradient norm: not counted; a metric
    with no value left is left out."""
    means = {}
    for name in pending[0]:
        values = [m[name] for m in pending if np.isfinite(m[name])]
        if values:
            means[name] = float(np.mean(values))
    return means


def gradient_figures(means):
    """The interval's means with the output gradient's squared norms turned into norms (root
    mean square over the interval) and the adversarial term's share of the two."""
    means = dict(means)
    if "grad_out_adversarial_sq" in means and "grad_out_reconstruction_sq" in means:
        adversarial = float(np.sqrt(means.pop("grad_out_adversarial_sq")))
        reconstruction = float(np.sqrt(means.pop("grad_out_reconstruction_sq")))
        means.update(grad_out_adversarial=adversarial, grad_out_reconstruction=reconstruction,
                     adversarial_share=adversarial / max(adversarial + reconstruction, 1e-30))
    return means


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, fields, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def evaluation_grid(shown):
    """A row per held-out photo: masked input (hole in white) | model | model + blend | ground
    truth, as a float image in [0, 1]."""
    rows = [np.concatenate([np.where(hole[..., None], np.uint8(255), image),
                            results["model"], results["model + blend"], image], axis=1)
            for _, image, hole, results in shown]
    return np.concatenate(rows, axis=0).astype(np.float32) / 255.0


def plot_evaluation(rows, config, folder, filename="eval.png"):
    """folder/filename: each held-out metric against iterations, a line per method, Telea's
    dashed, the photos' own SWD dotted and a line at 1 (the photos') for the ratios; the phase
    boundaries and the learning-rate drops marked. Rows without a metric (the floor's, or of an
    eval.csv older than the metric) are left out of its chart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = {"l1_hole": "L1 in the hole (lower is better)",
              "psnr_hole": "PSNR in the hole, dB (higher is better)",
              "ssim_image": "SSIM of the image (higher is better)",
              "swd_hole": "SWD in the hole, x1e3 (lower is better)",
              "sharpness_hole": "sharpness in the hole (1 is the photos')",
              "checkerboard_excess": "checkerboard excess (1 is the photos')",
              "stripes_excess": "stripe excess (1 is the photos')",
              "colour_hole": "colour distance in the hole, CIELAB (lower is better)",
              "colour_slope": "colour slope, the weaker colour axis (1 is the photos')"}
    fig, axes = plt.subplots(3, 3, figsize=(4.6 * 3, 9.9))
    for ax, (column, title) in zip(axes.flat, titles.items()):
        for method in EVAL_RUNS:
            points = [(int(r["iteration"]), float(r[column])) for r in rows
                      if r["method"] == method and r.get(column)]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, {"OpenCV Telea": "--", FLOOR: ":"}.get(method, "-"), label=method,
                        marker="." if len(points) < 30 else None)
        if column in ("sharpness_hole", "checkerboard_excess", "stripes_excess",
                      "colour_slope"):
            ax.axhline(1.0, color="gray", lw=0.8, ls="-.")
        boundaries, drops = chart_marks(rows, config)
        for boundary, name in boundaries:
            ax.axvline(boundary, color="gray", lw=0.8, ls=":")
            y = 1.0 if name == "phase 2" else 0.93  # apart when phase 2 is short
            ax.text(boundary, y, f" {name}", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top", color="gray")
        for drop in drops:
            ax.axvline(drop, color="gray", lw=0.6, ls="--", alpha=0.5)
            ax.text(drop, 0.06, f" lr x{config.lr_drop_factor:g}", fontsize=6, color="gray",
                    transform=ax.get_xaxis_transform())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=len(legend), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(os.path.join(folder, filename), dpi=80)
    plt.close(fig)


def chart_marks(rows, config):
    """The vertical lines of the evaluation chart: [(iteration, "phase 2" or "phase 3")] of the
    phase boundaries and [iteration] of the learning-rate drops that the evaluations have
    reached (a line further on would stretch the axis, and a phase 1 planned far longer than it
    has run would squeeze the curves into a corner)."""
    last = max((int(row["iteration"]) for row in rows), default=0)
    boundaries = [(boundary, name) for boundary, name in (
        (config.tc, "phase 2"), (config.tc + config.td, "phase 3"))
        if 0 < boundary < config.total_iters and boundary <= last]
    return boundaries, [drop for drop in config.lr_drops if drop < config.total_iters
                        and drop <= last]


def plot_losses(history, folder):
    """folder/losses_phaseP.png: the curves of each phase that has started."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {1: ["reconstruction", "grad_g"], 2: ["discriminator", "d_real", "d_completed",
                                                   "grad_d"],
              3: ["reconstruction", "adversarial", "discriminator", "d_real", "d_completed",
                  "grad_g", "grad_d", "adversarial_share"]}
    titles = {"grad_g": "gradient norm, completion network",
              "grad_d": "gradient norm, discriminator",
              "adversarial_share": "adversarial share of the output gradient",
              "checkerboard": "checkerboard excess (penalized)",
              "stripes": "two-pixel stripes excess (penalized)",
              "coarse": "coarse reconstruction (4x4 blocks)",
              "ssim": "structural loss (1 - SSIM, 7x7)",
              "colour": "colour loss (the hole's mean, red-blue and green-magenta)"}
    for phase, names in curves.items():
        rows = [r for r in history if int(r["phase"]) == phase]
        if not rows:
            continue
        penalized = [name for name in PENALTIES if any(r.get(name, "") != "" for r in rows)]
        names = names[:1] + penalized + names[1:]
        columns = min(len(names), 4)
        fig, axes = plt.subplots(-(-len(names) // columns), columns,
                                 figsize=(4 * columns, 3.2 * -(-len(names) // columns)),
                                 squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for ax, name in zip(axes.flat, names):
            points = [(int(r["iteration"]), float(r[name])) for r in rows if r.get(name, "") != ""]
            if points:  # (a losses.csv written before the gradients were logged has none)
                ax.plot(*zip(*points))
            ax.set_title(titles.get(name, name.replace("_", " ")))
            ax.set_xlabel("iteration")
        fig.suptitle(PHASE_NAMES[phase])
        fig.tight_layout()
        fig.savefig(os.path.join(folder, f"losses_phase{phase}.png"), dpi=80)
        plt.close(fig)


class Progress:
    """One tqdm bar per phase, showing the global iteration, the losses and images/s; only the
    chief shows it. As a context manager: opened at the iteration training starts from, and
    closed however the loop ends."""

    def __init__(self, config, start, chief=True):
        self.config, self.chief, self.bar, self.next = config, chief, None, start
        self.held_out = {}  # the last held-out scores, shown until the next evaluation

    def __enter__(self):
        self.open(self.next)
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar = None

    def open(self, iteration):
        """The bar of the phase that iteration `iteration` (counted from 0) belongs to."""
        self.close()
        self.next = iteration
        if iteration < self.config.total_iters:
            phase = self.config.phase(iteration)
            low, self.end = self.config.phase_range(phase)
            self.bar = tqdm(total=self.end - low, initial=iteration - low, unit="it",
                            desc=PHASE_NAMES[phase], dynamic_ncols=True, disable=not self.chief)

    def update(self, done, metrics, rate):
        """`done` iterations are done, the last with these metrics."""
        if done != self.next + 1:
            self.open(done - 1)  # resumed from an older checkpoint (--on-nan rollback)
        self.bar.set_postfix({"iter": f"{done}/{self.config.total_iters}",
                              **{k: f"{v:.4g}" for k, v in metrics.items() if k in LOSSES},
                              "img/s": f"{rate:.2f}",
                              **{k: f"{v:.4g}" for k, v in self.held_out.items()}},
                             refresh=False)
        self.bar.update(1)
        self.next = done
        if done == self.end:
            self.open(done)
