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
import utils
from config import PHASE_NAMES

HISTORY_FIELDS = ["iteration", "phase", "reconstruction", "discriminator", "adversarial",
                  "d_real", "d_completed", "images_per_second"]
GRID_TAG = "samples/masked_input | output | completed | ground_truth"
# Held-out evaluation: the methods scored during training (each a TensorBoard run of its own,
# logs/NAME/SUBFOLDER, so that the same tag draws their curves in one chart), and the metrics.
EVAL_RUNS = {"model": "", "model + blend": "eval_blend", "OpenCV Telea": "eval_telea"}
EVAL_COLUMNS = ("l1_hole", "psnr_hole", "ssim_image")
EVAL_FIELDS = ["iteration", "phase", "method", *evaluate.COLUMNS]
EVAL_GRID_TAG = "eval/masked_input | model | model + blend | ground_truth"


class Reporter:
    """Scalars, step graphs and sample grids for TensorBoard; grids, losses.csv and loss curves
    in the results folder. Only the chief writes (chief=False: the other workers of a
    multi-worker run keep quiet)."""

    def __init__(self, config, logs, results, G, val_batch, mean_pixel, start, chief=True,
                 held_out=()):
        self.config, self.G, self.chief, self.results = config, G, chief, results
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
        self.baseline, self.last_eval = None, {}
        self.rewind(start)

    def rewind(self, iteration):
        """Forget what was recorded after `iteration` (a killed run's tail, or a rollback)."""
        self.history = [row for row in self.history if int(row["iteration"]) <= iteration]
        self.eval_history = [row for row in self.eval_history
                             if int(row["iteration"]) <= iteration]
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
        every = self.config.eval_every
        if self.held_out and every and (iteration % every == 0 or phase_end):
            self.evaluate(phase, iteration)

    def scalars(self, phase, iteration):
        elapsed = time.perf_counter() - self.clock
        self.rate = len(self.pending) * self.config.batch_size / elapsed if elapsed > 0 else 0.0
        means = {k: float(np.mean([m[k] for m in self.pending])) for k in self.pending[0]}
        with self.writer.as_default(step=iteration):
            tf.summary.scalar("phase", phase)
            tf.summary.scalar("speed/images_per_second", self.rate)
            for name in ("reconstruction", "discriminator", "adversarial"):
                if name in means:
                    tf.summary.scalar(f"loss/{name}", means[name])
            if "d_real" in means:
                tf.summary.scalar("discriminator/real", means["d_real"])
                tf.summary.scalar("discriminator/completed", means["d_completed"])
        self.history.append(dict({k: "" for k in HISTORY_FIELDS}, iteration=iteration,
                                 phase=phase, images_per_second=round(self.rate, 3),
                                 **{k: round(v, 6) for k, v in means.items()}))
        self.new_interval()

    def samples(self, phase, iteration):
        if not self.chief:
            return
        outputs = self.G(utils.completion_input(self.val["image"], self.val["mask"],
                                                self.mean_pixel), training=False)
        grid = utils.sample_grid(self.val["image"], self.val["mask"], outputs, self.mean_pixel)
        with self.writer.as_default(step=iteration):
            tf.summary.image(GRID_TAG, grid[None], step=iteration)
        self.writer.flush()
        utils.save_png(os.path.join(self.results, f"phase{phase}_iter{iteration:07d}.png"), grid)
        self.save_history()

    def evaluate(self, phase, iteration):
        """Complete the held-out photos (evaluate.py's holes and metrics) and log the scores
        of the model, of the model with the paper's blending and, once computed, Telea's."""
        if self.baseline is None:
            self.baseline = evaluate.means(evaluate.score(None, self.mean_pixel.numpy(),
                                                          self.held_out, ("OpenCV Telea",))[0])
        per_photo, shown = evaluate.score(self.G, self.mean_pixel.numpy(), self.held_out,
                                          ("model", "model + blend"), examples=4)
        scores = {**evaluate.means(per_photo), **self.baseline}
        for method, values in scores.items():
            with self.eval_writers[method].as_default(step=iteration):
                for column in EVAL_COLUMNS:
                    tf.summary.scalar(f"eval/{column}", values[column])
            self.eval_history.append({"iteration": iteration, "phase": phase, "method": method,
                                      **{c: round(v, 6) for c, v in values.items()}})
        with self.writer.as_default(step=iteration):
            tf.summary.image(EVAL_GRID_TAG, evaluation_grid(shown)[None])
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
    dashed, the phase boundaries and the learning-rate drops marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = {"l1_hole": "L1 in the hole (lower is better)",
              "psnr_hole": "PSNR in the hole, dB (higher is better)",
              "ssim_image": "SSIM of the image (higher is better)"}
    fig, axes = plt.subplots(1, len(EVAL_COLUMNS), figsize=(4.6 * len(EVAL_COLUMNS), 3.4))
    for ax, column in zip(axes, EVAL_COLUMNS):
        for method in EVAL_RUNS:
            points = [(int(r["iteration"]), float(r[column])) for r in rows
                      if r["method"] == method]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, "--" if method == "OpenCV Telea" else "-", label=method,
                        marker="." if len(points) < 30 else None)
        for boundary, name in ((config.tc, "phase 2"), (config.tc + config.td, "phase 3")):
            if 0 < boundary < config.total_iters:
                ax.axvline(boundary, color="gray", lw=0.8, ls=":")
                y = 1.0 if name == "phase 2" else 0.93  # apart when phase 2 is short
                ax.text(boundary, y, f" {name}", transform=ax.get_xaxis_transform(),
                        fontsize=7, va="top", color="gray")
        for drop in config.lr_drops:
            if drop < config.total_iters:
                ax.axvline(drop, color="gray", lw=0.6, ls="--", alpha=0.5)
                ax.text(drop, 0.06, f" lr x{config.lr_drop_factor:g}", fontsize=6, color="gray",
                        transform=ax.get_xaxis_transform())
        ax.set_title(titles[column], fontsize=9)
        ax.set_xlabel("iteration")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(os.path.join(folder, filename), dpi=80)
    plt.close(fig)


def plot_losses(history, folder):
    """folder/losses_phaseP.png: the curves of each phase that has started."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {1: ["reconstruction"], 2: ["discriminator", "d_real", "d_completed"],
              3: ["reconstruction", "adversarial", "discriminator", "d_real", "d_completed"]}
    for phase, names in curves.items():
        rows = [r for r in history if int(r["phase"]) == phase]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], names):
            ax.plot([int(r["iteration"]) for r in rows], [float(r[name]) for r in rows])
            ax.set_title(name.replace("_", " "))
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
                              **{k: f"{v:.4g}" for k, v in metrics.items()},
                              "img/s": f"{rate:.2f}",
                              **{k: f"{v:.4g}" for k, v in self.held_out.items()}},
                             refresh=False)
        self.bar.update(1)
        self.next = done
        if done == self.end:
            self.open(done)
