"""Measure how well a trained completion network fills holes, against simple baselines.

    python evaluate.py --session NAME --data-dir PHOTOS
    python evaluate.py --model exported/ --data-dir PHOTOS --hole-shape free --seed 1 --count 50
    python evaluate.py --data-dir PHOTOS        # the pretrained model in pretrained/wallpapers
    python evaluate.py --session NAME --data-dir PHOTOS --max-holes 3   # 1 to 3 holes a photo
    python evaluate.py --data-dir PHOTOS --layers   # also: which layers make a two-pixel period
    python evaluate.py --session NAME --iteration 900 1000 1100 --validation --hole-sets 5

Each photo is centre-cropped to the session's image size and gets one seeded random hole (with
--max-holes N, 1 to N, as training draws them; the first is the one-hole run's): the same holes
for every method, and for every run with the same --seed (--hole-sets N: each photo N times,
with the holes of N seeds). --validation scores a session's own validation photos, to choose a
checkpoint or settings on. Methods: the completion network ("model"), the network with the
paper's post-processing ("model + blend"), the mean pixel the network sees in the hole ("mean
pixel"), and OpenCV's fast marching (Telea) and Navier-Stokes inpainting. Distortion, on [0, 1]
values, inside the hole and over the whole image: mean L1, mean L2 (MSE), PSNR and SSIM,
averaged over the photos (in the hole: over the union of a photo's holes). Realism of the fills
(realism.py), measures of the whole set of fills: SWD in the hole (lower is better, 0 for the
photos themselves; beside it the SWD of two halves of the photos against each other, the scale
of the distance between two sets of real photos), sharpness, checkerboard and stripes (1 is the
photos'), the checkerboard and stripe excess (1 is the photos'; above 1, a two-pixel artefact,
which can lower SWD: never judge realism by SWD alone) and the colour distance to each photo's
own colours in its hole (lower is better; blotches of colours the scene does not have pass the
others). Writes, in results/NAME/eval for --session NAME, results/model-DIRNAME/eval for
--model .../DIRNAME and results/pretrained-wallpapers/eval for the pretrained model, in
results/NAME/eval-validation with --validation (or --out DIR): metrics.csv, metrics.json (with
the per-photo values, SWD per pyramid level and the photos' own), metrics.png, examples.png and
crops.png (the holes up close, 2x); with --layers, layers.csv.
"""
import contextlib
import csv
import dataclasses
import io
import os
import sys
import textwrap

import numpy as np

import runtime  # noqa: E402,F401  (settings TensorFlow reads at import)
import cv2  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402
from tqdm import tqdm  # noqa: E402

import complete  # noqa: E402
import config as cfg  # noqa: E402
import data_loader  # noqa: E402
import engine  # noqa: E402
import exports  # noqa: E402
import realism  # noqa: E402
import session  # noqa: E402
import utils  # noqa: E402

METHODS = ("model", "model + blend", "mean pixel", "OpenCV Telea", "OpenCV Navier-Stokes")
METRICS = {"l1": "L1", "l2": "L2", "psnr": "PSNR", "ssim": "SSIM"}
HIGHER_IS_BETTER = ("psnr", "ssim")
REGIONS = ("hole", "image")
COLUMNS = [f"{metric}_{region}" for region in REGIONS for metric in METRICS]  # l1_hole, ...
# Beside them, the realism of each method's set of fills: realism.COLUMNS (swd_hole, ...).
MAX_PSNR = 100.0  # dB, reported for a perfect match (MSE 0)
EXAMPLES = 4
DEFAULT_SEED, DEFAULT_COUNT = 0, 100  # the held-out holes, here and during training


# ---------------------------------------------------------------------------------------------
# Metrics: prediction and target are (H, W, 3) arrays in [0, 1]; a mask (H, W) or (H, W, 1)
# restricts them to its pixels (all three channels of each).


def difference(prediction, target, mask=None):
    diff = np.asarray(prediction, np.float64) - np.asarray(target, np.float64)
    return diff if mask is None else diff[np.asarray(mask, bool).reshape(diff.shape[:2])]


def l1(prediction, target, mask=None):
    return float(np.mean(np.abs(difference(prediction, target, mask))))


def l2(prediction, target, mask=None):
    return float(np.mean(np.square(difference(prediction, target, mask))))


def psnr(prediction, target, mask=None):
    mse = l2(prediction, target, mask)
    return MAX_PSNR if mse == 0 else min(MAX_PSNR, float(10 * np.log10(1.0 / mse)))


def ssim(prediction, target, mask=None):
    """Whole image: scikit-image's mean SSIM. With a mask: the mean of the SSIM map over it."""
    side = min(np.shape(target)[:2])
    mean, ssim_map = structural_similarity(
        np.asarray(prediction, np.float64), np.asarray(target, np.float64), channel_axis=-1,
        data_range=1.0, full=True, win_size=min(7, side if side % 2 else side - 1))
    if mask is None:
        return float(mean)
    return float(np.mean(ssim_map[np.asarray(mask, bool).reshape(ssim_map.shape[:2])]))


def scores(result, image, hole):
    """Every metric of one completion (uint8) against the photo (uint8), in COLUMNS order."""
    prediction, target = result / 255.0, image / 255.0
    functions = {"l1": l1, "l2": l2, "psnr": psnr, "ssim": ssim}
    return {f"{name}_{region}": functions[name](prediction, target,
                                                hole if region == "hole" else None)
            for region in REGIONS for name in METRICS}


# ---------------------------------------------------------------------------------------------
# The methods, all given the same masked photo: no method sees the pixels of the hole


def model_methods(scales):
    """{method name: scale} of the model at each of --scale's scales: "model" alone for
    native, else "model (auto)", "model (native)", "model (x0.5)", ..."""
    if list(scales) == ["native"]:
        return {"model": "native"}
    return {f"model ({scale if isinstance(scale, str) else f'x{scale:g}'})": scale
            for scale in scales}


def methods_for(scales):
    """Every method scored, in the table's order: each model scale raw and blended, then the
    baselines."""
    models = [name for model in model_methods(scales) for name in (model, f"{model} + blend")]
    return (*models, *METHODS[2:])


def fill_all(network, masked, hole, mean_pixel, methods=METHODS, scales=("native",),
             trained_hole=None, resample="bicubic"):
    """{method: completed uint8 photo} for the bool (H, W) hole of a uint8 photo; the model's
    methods at each of `scales` (model_methods), aiming --scale auto at `trained_hole`, fills
    completed smaller brought back by `resample`."""
    bgr, hole_u8 = cv2.cvtColor(masked, cv2.COLOR_RGB2BGR), hole.astype(np.uint8) * 255

    def opencv(kind):
        return cv2.cvtColor(cv2.inpaint(bgr, hole_u8, 3, kind), cv2.COLOR_BGR2RGB)

    results = {}
    for model, scale in model_methods(scales).items():
        if model in methods or f"{model} + blend" in methods:
            results[model], _ = complete.complete(network, masked, hole, mean_pixel,
                                                  scale=scale, trained_hole=trained_hole,
                                                  resample=resample)
        if f"{model} + blend" in methods:
            results[f"{model} + blend"] = complete.poisson_blend(masked, results[model], hole)
    if "mean pixel" in methods:
        results["mean pixel"] = masked
    if "OpenCV Telea" in methods:
        results["OpenCV Telea"] = opencv(cv2.INPAINT_TELEA)
    if "OpenCV Navier-Stokes" in methods:
        results["OpenCV Navier-Stokes"] = opencv(cv2.INPAINT_NS)
    return {method: results[method] for method in methods}


def held_out(files, config, count, hole_shape, seed, mean_pixel, max_holes=1, hole_sets=1):
    """Up to `count` of the photos, in order, each centre-cropped to the image size with one
    seeded hole, or 1 to max_holes of them as training draws them (data_loader.more_holes): a
    list of dicts (path, image, hole (bool H x W, the union of the holes), boxes (y, x, h, w)
    of each hole, masked: the hole mean-filled, hole_set). The holes of files[i] depend on
    (seed, i) only, and the first is the same whatever max_holes. With hole_sets N > 1 the
    same photos follow again with the holes of seed + 1, ..., seed + N - 1 (set k: the holes
    that seed + k gives alone): N times as many items, set after set."""
    size, photos = config.image_size, []
    more = dataclasses.replace(config, hole_shape=hole_shape, max_holes=max_holes)
    for index, path in enumerate(files):
        if len(photos) == count:
            break
        photo = data_loader.try_load(path, size)
        if photo is not None:
            photos.append((index, path, np.round(data_loader.center_crop(photo, size) * 255)
                           .astype(np.uint8)))
    items = []
    for hole_set in range(hole_sets):
        for index, path, image in photos:
            rng = np.random.default_rng([seed + hole_set, index])
            mask, box = data_loader.random_mask(rng, size, config.hole_min, config.hole_max,
                                                hole_shape)
            boxes = [box.tolist()]
            if max_holes > 1:
                others, other_boxes = data_loader.more_holes(more, [seed + hole_set, index, 2])
                mask, boxes = np.maximum(mask, others), boxes + other_boxes.tolist()
            hole = mask[..., 0] > 0
            items.append(dict(path=path, image=image, hole=hole, boxes=boxes,
                              masked=complete.mean_fill(image, hole, mean_pixel),
                              hole_set=hole_set))
    return items


def full_size_items(files, count, hole_shape, seed, mean_pixel, max_pixels=2_000_000,
                    fractions=(0.1, 0.3), hole_sets=1):
    """Up to `count` of the photos at their own resolution (shrunk to at most max_pixels), each
    with one seeded hole whose box has sides of fractions[0]-fractions[1] of the photo's
    shorter side (a rectangle, or strokes drawn in it), placed anywhere in the photo: items as
    held_out()'s. The hole of files[i] depends on (seed + hole set, i) only."""
    photos = []
    for index, path in enumerate(files):
        if len(photos) == count:
            break
        photo = data_loader.try_load(path)  # uint8
        if photo is None:
            continue
        pixels = photo.shape[0] * photo.shape[1]
        if pixels > max_pixels:
            factor = (max_pixels / pixels) ** 0.5
            size = (int(photo.shape[1] * factor), int(photo.shape[0] * factor))
            photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        photos.append((index, path, photo))
    items = []
    for hole_set in range(hole_sets):
        for index, path, image in photos:
            rng = np.random.default_rng([seed + hole_set, index])
            side = min(image.shape[:2])
            low, high = (max(1, round(f * side)) for f in fractions)
            mask, box = data_loader.random_mask(rng, side, low, high, hole_shape)
            top = int(rng.integers(0, image.shape[0] - side + 1))
            left = int(rng.integers(0, image.shape[1] - side + 1))
            hole = np.zeros(image.shape[:2], bool)
            hole[top:top + side, left:left + side] = mask[..., 0] > 0
            y, x, h, w = (int(v) for v in box)
            items.append(dict(path=path, image=image, hole=hole, boxes=[[y + top, x + left, h, w]],
                              masked=complete.mean_fill(image, hole, mean_pixel),
                              hole_set=hole_set))
    return items


def fill_items(network, mean_pixel, items, methods=METHODS, progress=False, scales=("native",),
               trained_hole=None, resample="bicubic"):
    """Every method on the held-out items: {method: [completed uint8 photo per item]}."""
    completed = {method: [] for method in methods}
    for item in tqdm(items, desc="evaluating", unit="photo", dynamic_ncols=True, leave=False,
                     disable=not progress):
        results = fill_all(network, item["masked"], item["hole"], mean_pixel, methods, scales,
                           trained_hole, resample)
        for method, result in results.items():
            completed[method].append(result)
    return completed


def score(items, completed):
    """The distortion of each method's completions: {method: {column: [value per photo]}}."""
    per_photo = {}
    for method, results in completed.items():
        rows = [scores(result, item["image"], item["hole"])
                for result, item in zip(results, items)]
        per_photo[method] = {column: [row[column] for row in rows] for column in COLUMNS}
    return per_photo


def means(per_photo):
    return {method: {c: float(np.mean(v)) for c, v in columns.items()}
            for method, columns in per_photo.items()}


def photos_and_holes(items):
    return [item["image"] for item in items], [item["hole"] for item in items]


def measure(items, completed, reference=None):
    """Everything measured of each method's completions, as metrics.json keeps it: "mean"
    ({method: {column: value}}: COLUMNS averaged over the photos, and realism.COLUMNS, which
    are measures of the whole set), "per_photo" ({method: {column: [value per photo]}}:
    COLUMNS, sharpness_hole, checkerboard_hole, stripes_hole and colour_hole), "swd_levels"
    ({method: [SWD per pyramid level]}) and "colour_slopes" ({method: {axis: slope}}).
    reference: realism.photo_reference of the items, when already at hand (the same for every
    method and every evaluation of the same items)."""
    photos, holes = photos_and_holes(items)
    if reference is None:
        reference = realism.photo_reference(photos, holes)
    per_photo = score(items, completed)
    mean, levels, slopes = means(per_photo), {}, {}
    for method, results in completed.items():
        found = realism.measure(results, photos, holes, reference=reference)
        mean[method].update({column: found[column] for column in realism.COLUMNS})
        per_photo[method].update(sharpness_hole=found["sharpness_per_photo"],
                                 checkerboard_hole=found["checkerboard_per_photo"],
                                 stripes_hole=found["stripes_per_photo"],
                                 colour_hole=found["colour_per_photo"])
        levels[method], slopes[method] = found["swd_levels"], found["colour_slopes"]
    return dict(mean=mean, per_photo=per_photo, swd_levels=levels, colour_slopes=slopes)


def swd_floor(items):
    """The SWD of the photos against themselves, in two disjoint halves: (SWD, [per level])."""
    return realism.swd_floor(*photos_and_holes(items))


def examples(items, completed, count):
    """The first `count` items with their completions: (path, image, hole, {method: result})."""
    return [(item["path"], item["image"], item["hole"],
             {method: results[index] for method, results in completed.items()})
            for index, item in enumerate(items[:count])]


def evaluate(network, mean_pixel, items, scales=("native",), trained_hole=None,
             resample="bicubic"):
    """Every method on the held-out items (held_out() or full_size_items()), the model at each
    of `scales`: (photos, measured: measure()'s dict with the photos' own SWD, "swd_floor" and
    "swd_floor_levels", examples)."""
    completed = fill_items(network, mean_pixel, items, methods_for(scales), True, scales,
                           trained_hole, resample)
    measured = measure(items, completed)
    measured["swd_floor"], measured["swd_floor_levels"] = swd_floor(items)
    photos = [dict(path=item["path"], hole=item["boxes"][0], holes=item["boxes"],
                   hole_pixels=int(item["hole"].sum()), hole_set=item["hole_set"])
              for item in items]
    return photos, measured, examples(items, completed, EXAMPLES)


# ---------------------------------------------------------------------------------------------
# Report: table, csv, json, figures


def column_title(column):
    if column in realism.COLUMNS:
        return realism.COLUMNS[column]
    metric, region = column.split("_")
    return f"{METRICS[metric]} {region}"


def value_format(column):
    if column.startswith(("psnr", "swd", "colour")):
        return ".2f"
    return ".3f" if column in realism.COLUMNS else ".4f"


def floor_line(floor):
    return "SWD of the photos against themselves (two disjoint halves): " + (
        "needs 2 photos or more" if np.isnan(floor) else f"{floor:.2f}")


def table(header, measured):
    """Distortion, then realism: two blocks of rows, a row per method; then the photos' own
    SWD."""
    mean = measured["mean"]
    width = max(len(method) for method in mean) + 2
    lines = [header]
    for columns, wide in ((COLUMNS, 12), (realism.COLUMNS, 16)):
        lines.append("method".ljust(width) + "".join(f"{column_title(c):>{wide}}"
                                                     for c in columns))
        lines += [method.ljust(width) + "".join(f"{mean[method][c]:>{wide}{value_format(c)}}"
                                                for c in columns) for method in mean]
    return "\n".join(lines + [floor_line(measured["swd_floor"])])


def write_csv(path, means):
    columns = [*COLUMNS, *realism.COLUMNS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", *columns])
        for method in means:
            writer.writerow([method, *(repr(means[method][c]) for c in columns)])


def write_rows(path, fields, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def better(column):
    if column in realism.COLUMNS:
        return ("lower is better" if column in ("swd_hole", "colour_hole")
                else "1 is the photos'")
    return ("higher" if column.split("_")[0] in HIGHER_IS_BETTER else "lower") + " is better"


def plot_metrics(path, header, measured):
    """One bar chart per metric and region, a bar per method; a row of realism charts below,
    with the photos' own value as a dotted line (the SWD of their two halves; 1 for the
    ratios)."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    mean = measured["mean"]
    methods = list(mean)
    realism_rows = -(-len(realism.COLUMNS) // len(METRICS))
    fig, axes = plt.subplots(len(REGIONS) + realism_rows, len(METRICS),
                             figsize=(4 * len(METRICS), 4 * (len(REGIONS) + realism_rows)))
    for ax in axes.flat[len(COLUMNS) + len(realism.COLUMNS):]:
        ax.axis("off")
    for ax, column in zip(axes.flat, [*COLUMNS, *realism.COLUMNS]):
        bars = ax.bar(range(len(methods)), [mean[m][column] for m in methods],
                      color=[colors[i % len(colors)] for i in range(len(methods))])
        ax.bar_label(bars, fmt="%.2f" if column.startswith("psnr") else "%.3g", fontsize=8)
        if column in realism.COLUMNS:
            ax.axhline(measured["swd_floor"] if column == "swd_hole" else
                       0.0 if column == "colour_hole" else 1.0, color="gray", ls=":", lw=1)
        ax.set_title(f"{column_title(column)} ({better(column)})")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=9)
        ax.margins(y=0.15)
    fig.suptitle(header)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_examples(path, examples):
    """A row per photo: masked input (hole in white) | each method | ground truth."""
    methods = list(examples[0][3])
    titles = ["masked input", *methods, "ground truth"]
    fig, axes = plt.subplots(len(examples), len(titles), squeeze=False,
                             figsize=(1.8 * len(titles), 1.9 * len(examples) + 0.4))
    for row, (photo, image, hole, results) in zip(axes, examples):
        panels = [np.where(hole[..., None], np.uint8(255), image),
                  *(results[m] for m in methods), image]
        for ax, panel in zip(row, panels):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        name = os.path.basename(photo)
        row[0].set_ylabel(name if len(name) <= 24 else name[:23] + "…", fontsize=8)
    for ax, title in zip(axes[0], titles):
        ax.set_title("\n".join(textwrap.wrap(title, 13)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def crop_around(image, hole, side):
    """The side x side square of `image` centred on the hole's bounding box, moved inside the
    image."""
    ys, xs = np.nonzero(hole)
    top = int(np.clip((ys.min() + ys.max() + 1 - side) // 2, 0, image.shape[0] - side))
    left = int(np.clip((xs.min() + xs.max() + 1 - side) // 2, 0, image.shape[1] - side))
    return image[top:top + side, left:left + side]


def close_ups(columns, holes, margin=8, zoom=2):
    """The holes up close: each cell of `columns` ([(title, [uint8 image per row])]) cut to its
    row's hole with `margin` pixels around it (one square side for all, the largest hole's),
    enlarged `zoom` times by repeating pixels (no smoothing). Blur, seams and two-pixel
    patterns show there."""
    side = max(max(np.ptp(np.nonzero(hole)[0]), np.ptp(np.nonzero(hole)[1])) + 1
               for hole in holes) + 2 * margin
    side = min(side, *(min(cell.shape[:2]) for cell in columns[0][1]))

    def zoomed(image, hole):
        return np.repeat(np.repeat(crop_around(image, hole, side), zoom, 0), zoom, 1)
    return [(title, [zoomed(cell, hole) for cell, hole in zip(cells, holes)])
            for title, cells in columns]


def plot_crops(path, examples, margin=8, zoom=2):
    """close_ups of the examples, pixel for pixel in the file; columns masked input | each
    method | ground truth."""
    panels = [("masked input", [np.where(hole[..., None], np.uint8(255), image)
                                for _, image, hole, _ in examples])]
    panels += [(method, [results[method] for _, _, _, results in examples])
               for method in examples[0][3]]
    panels.append(("ground truth", [image for _, image, _, _ in examples]))
    utils.titled_grid(path, close_ups(panels, [hole for _, _, hole, _ in examples], margin,
                                      zoom))


def without_nan(value):
    """JSON has no NaN: null instead (a ratio whose photo is flat in its hole)."""
    if isinstance(value, dict):
        return {key: without_nan(v) for key, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


# ---------------------------------------------------------------------------------------------
# --layers: which layers of the completion network make a two-pixel period


def layer_names(network):
    """The completion network's layers to look at: each conv-bn-relu row's output (its ReLU)
    and the output layer."""
    import keras
    return ([layer.name for layer in network.layers if isinstance(layer, keras.layers.ReLU)]
            + [network.layers[-1].name])


def layers_by_period(network, items, mean_pixel, batch=8):
    """For each of layer_names(network): its feature maps' share of variance at the two-pixel
    period (realism.period_two_sums), inside the holes and outside them, pooled over the
    held-out items (their holes taken at each layer's resolution): [dict(layer, size, hole,
    outside)], from the input to the output; size: the maps' height. hole is nan where no 2x2
    block of a layer's maps lies in a hole (small holes at a quarter of the resolution)."""
    import keras
    import tensorflow as tf
    names = layer_names(network)
    probe = keras.Model(network.inputs, [network.get_layer(name).output for name in names])
    sums, sizes = {name: np.zeros(4) for name in names}, {}
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        images = np.stack([item["masked"] for item in part]).astype(np.float32) / 255
        holes = np.stack([item["hole"] for item in part])
        inputs = utils.completion_input(tf.constant(images),
                                        tf.constant(holes[..., None], tf.float32),
                                        tf.constant(mean_pixel, tf.float32))
        for name, maps in zip(names, probe(inputs, training=False)):
            maps = np.asarray(maps, np.float64)
            step = holes.shape[1] // maps.shape[1]  # a map pixel is in the hole if any of
            at_size = holes.reshape(len(part), maps.shape[1], step, maps.shape[2], step).any(
                axis=(2, 4))                        # the photo's pixels it stands for is
            sizes[name] = maps.shape[1]
            sums[name] += (*realism.period_two_sums(maps, at_size),
                           *realism.period_two_sums(maps, ~at_size))
    return [dict(layer=name, size=sizes[name],
                 hole=s[0] / s[1] if s[1] > 0 else float("nan"),
                 outside=s[2] / s[3] if s[3] > 0 else float("nan"))
            for name, s in sums.items()]


def quietly_loaded(args):
    """The Keras network in float32 of --session / --model (already loaded once for another
    engine or precision), without saying again which one it is."""
    with contextlib.redirect_stdout(io.StringIO()):
        return exports.load_model(args.session, args.model, args.iteration, "tf", "float32")[0]


def layers_table(rows):
    lines = ["Two-pixel period by layer: share of each layer's feature maps' variance at the"
             " [[1, -1], [-1, 1]] frequency (smooth maps 0, white noise 0.25, a checkerboard 1)",
             f"{'layer':10s} {'size':>5s} {'hole':>7s} {'outside':>8s}"]
    lines += [f"{r['layer']:10s} {r['size']:5d} {r['hole']:7.4f} {r['outside']:8.4f}"
              for r in rows]
    return "\n".join(lines)


def report(folder, header, settings, photos, measured, examples):
    print(table(header, measured))
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, name)
             for name in ("metrics.csv", "metrics.json", "metrics.png", "examples.png",
                          "crops.png")]
    write_csv(paths[0], measured["mean"])
    utils.write_json(paths[1], without_nan(dict(settings=settings, photos=photos,
                                                methods=list(measured["mean"]),
                                                **measured)))
    plot_metrics(paths[2], header, measured)
    plot_examples(paths[3], examples)
    plot_crops(paths[4], examples)
    print("Wrote " + ", ".join(paths))


# ---------------------------------------------------------------------------------------------
# The command line


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    exports.add_model_flags(parser, several=True)
    parser.add_argument("--data-dir", nargs="+", metavar="DIR",
                        help="folder(s) of photos, searched recursively")
    parser.add_argument("--validation", action="store_true",
                        help="with --session: score the session's own validation photos"
                             " instead of --data-dir's: those of its --val-dir, or those its"
                             " --val-split set aside from its --data-dir (run it where the"
                             " session was trained, with the same photos). They are for"
                             " choosing settings and checkpoints; report on other photos."
                             " Written to results/NAME/eval-validation")
    parser.add_argument("--hole-shape", choices=cfg.HOLE_SHAPES,
                        help="rect or free (default: the session's hole shape)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the holes: the same seed gives the same holes (default: 0)")
    parser.add_argument("--max-holes", type=int, default=1, metavar="N",
                        help="holes per photo: each photo gets 1 to N (each count equally"
                             " likely), as training's --max-holes draws them; the first is the"
                             " one of --max-holes 1 (default: 1)")
    parser.add_argument("--hole-sets", type=int, default=1, metavar="N",
                        help="score each photo N times, with the holes of --seed, --seed + 1,"
                             " ..., --seed + N - 1 (each set the holes that seed gives alone),"
                             " all fills pooled in the means and the realism measures: steadier"
                             " numbers on a few photos, for N times the time (default: 1)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help="at most this many photos, in sorted order (default: 100)")
    parser.add_argument("--full-size", action="store_true",
                        help="score the photos at their own resolution (shrunk to at most"
                             " --max-pixels), each with a seeded hole whose box has sides of"
                             " --hole-fraction of the photo's shorter side, instead of"
                             " centre crops of the training size with its holes. Written to"
                             " results/NAME/eval-full")
    parser.add_argument("--max-pixels", type=int, default=2_000_000, metavar="N",
                        help="with --full-size: larger photos are shrunk to this many pixels"
                             " (default: 2000000)")
    parser.add_argument("--hole-fraction", type=float, nargs=2, default=[0.1, 0.3],
                        metavar=("LOW", "HIGH"),
                        help="with --full-size: the hole's box sides, as fractions of the"
                             " photo's shorter side (default: 0.1 0.3)")
    parser.add_argument("--scale", nargs="+", default=["native"], metavar="S",
                        help="the model at each of these scales, as complete.py --scale: auto,"
                             " native or a factor in (0, 1]; e.g. --scale native auto 0.5"
                             " (default: native)")
    complete.add_resample_flag(parser)
    parser.add_argument("--layers", action="store_true",
                        help="also show which layers of the network make a two-pixel period"
                             " (a checkerboard): each layer's share of its feature maps'"
                             " variance at that period, in the holes and outside them, printed"
                             " and written to layers.csv (TensorFlow, float32)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for the table and figures (default: results/NAME/eval"
                             " for --session NAME, results/model-DIRNAME/eval for --model"
                             " .../DIRNAME, results/pretrained-wallpapers/eval for the"
                             " pretrained model)")
    args = parser.parse_args(argv)
    exports.check_model_flags(parser, args)
    return args


def check_photo_flags(args):
    """One source of photos: --data-dir, or --validation with --session."""
    if args.validation and not args.session:
        raise utils.UserError("--validation: expected --session NAME, whose validation photos"
                              " to score")
    if args.validation and args.data_dir:
        raise utils.UserError("--validation and --data-dir: give one, the session's validation"
                              " photos or these folders")
    if not args.validation and not args.data_dir:
        raise utils.UserError("--data-dir: expected folder(s) of photos (or --validation with"
                              " --session)")


def check_flags(args):
    if args.count < 1:
        raise utils.UserError(f"--count {args.count}: expected at least 1 photo")
    if args.seed < 0:
        raise utils.UserError(f"--seed {args.seed}: expected a non-negative integer")
    if args.max_holes < 1:
        raise utils.UserError(f"--max-holes {args.max_holes}: expected at least 1")
    if args.hole_sets < 1:
        raise utils.UserError(f"--hole-sets {args.hole_sets}: expected at least 1")
    if len(args.iterations) > 1 and args.layers:
        raise utils.UserError("--layers: give one --iteration, not several")
    low, high = args.hole_fraction
    if not 0 < low <= high < 1:
        raise utils.UserError(f"--hole-fraction {low:g} {high:g}: expected 0 < LOW <= HIGH < 1")
    if args.max_pixels < 1:
        raise utils.UserError(f"--max-pixels {args.max_pixels}: expected a positive number")
    args.scales = list(dict.fromkeys(complete.parse_scale(scale) for scale in args.scale))
    if args.full_size and args.max_holes > 1:
        raise utils.UserError("--max-holes: not with --full-size, which draws one hole a photo")
    if len(args.iterations) > 1 and args.scales != ["native"]:
        raise utils.UserError("--scale: give one --iteration with it, not several")
    check_photo_flags(args)


def photo_items(args, config, mean_pixel, files):
    """(the held-out items, where the photos come from, the hole shape): --data-dir's `files`
    or the session's validation photos, with --hole-sets sets of seeded holes."""
    where = ""
    if args.validation:
        _, files, validation = data_loader.validation_photos(
            config, data_loader.photo_files(config.data_dir))
        where = f", its validation photos ({validation})"
    hole_shape = args.hole_shape or config.hole_shape
    if args.full_size:
        items = full_size_items(files, args.count, hole_shape, args.seed, mean_pixel,
                                args.max_pixels, args.hole_fraction, args.hole_sets)
    else:
        items = held_out(files, config, args.count, hole_shape, args.seed, mean_pixel,
                         args.max_holes, args.hole_sets)
    if not items:
        photos = (f"session '{args.session}'{where}" if args.validation
                  else f"--data-dir {' '.join(args.data_dir)}")
        raise data_loader.DataError(f"{photos}: no decodable photo among {len(files)} image"
                                    " files")
    return items, where, hole_shape


def describe(args, config, items, hole_shape, network):
    """The photos, holes and engine, as the header says them."""
    several = f", 1 to {args.max_holes} per photo" if args.max_holes > 1 else ""
    seeds = (f"seeds {args.seed}-{args.seed + args.hole_sets - 1} ({args.hole_sets} hole sets,"
             f" {len(items)} fills)" if args.hole_sets > 1 else f"seed {args.seed}")
    count = len(items) // args.hole_sets
    photos = f"{count} photo{'' if count == 1 else 's'}"
    if args.full_size:
        low, high = args.hole_fraction
        shapes = f"{photos} at their own resolution (at most {args.max_pixels} pixels), " \
                 f"{hole_shape} holes ({low:.0%}-{high:.0%} of the shorter side)"
    else:
        shapes = (f"{photos} ({config.image_size}x{config.image_size} centre crops),"
                  f" {hole_shape} holes ({config.hole_min}-{config.hole_max} px{several})")
    shrunk = any(scale != "native" for scale in args.scales)
    way = ("bicubic, then refined by the network at full size" if args.resample == complete.REFINE
           else args.resample)
    resample = f", fills completed smaller brought back by {way}" if shrunk else ""
    return (f"{shapes}, {seeds}{resample}, engine {engine.name_of(network)},"
            f" {engine.precision_of(network)} ({network.precision_why})")


def main(argv=None):
    args = parse_args(argv)
    args.iterations = args.iteration or [None]
    args.iteration = args.iterations[0]
    try:
        check_flags(args)
        files = None if args.validation else data_loader.find_images(args.data_dir)
        network, mean_pixel, config = exports.load_model(args.session, args.model,
                                                         args.iteration, args.engine,
                                                         args.precision)
        items, where, hole_shape = photo_items(args, config, mean_pixel, files)
        model = None if args.session else args.model or exports.PRETRAINED_NAME
        name = exports.results_name(args.model or exports.PRETRAINED) if model else args.session
        out = utils.output_folder(args.out or session.eval_dir(name) + (
            "-validation" if args.validation else "") + ("-full" if args.full_size else ""),
            "--out")
        if len(args.iterations) > 1:
            return compare_checkpoints(args, network, mean_pixel, config, items, where,
                                       hole_shape, out)
        photos, measured, examples = evaluate(network, mean_pixel, items, args.scales,
                                              complete.trained_hole_size(config), args.resample)
    except utils.UserError as error:
        return utils.print_error(error)
    source = f"model {model}" if model else f"session '{args.session}'" + (
        f" at iteration {args.iteration}" if args.iteration is not None else "")
    header = f"{source}{where}: {describe(args, config, items, hole_shape, network)}"
    settings = dict(session=args.session, iteration=args.iteration, model=model,
                    engine=engine.name_of(network), precision=engine.precision_of(network),
                    data_dir=config.data_dir if args.validation else args.data_dir,
                    validation=args.validation,
                    hole_shape=hole_shape, max_holes=args.max_holes, seed=args.seed,
                    hole_sets=args.hole_sets, count=args.count, full_size=args.full_size,
                    max_pixels=args.max_pixels if args.full_size else None,
                    hole_fraction=args.hole_fraction if args.full_size else None,
                    scales=args.scales, resample=args.resample,
                    image_size=config.image_size, hole_min=config.hole_min,
                    hole_max=config.hole_max, mean_pixel=np.asarray(mean_pixel).tolist())
    report(out, header, settings, photos, measured, examples)
    if args.layers:
        keras_network = network if engine.name_of(network) == "tf" and \
            engine.precision_of(network) == "float32" else quietly_loaded(args)
        rows = layers_by_period(keras_network, items, mean_pixel)
        print(layers_table(rows))
        path = os.path.join(out, "layers.csv")
        write_rows(path, ["layer", "size", "hole", "outside"], rows)
        print(f"Wrote {path}")
    print_skipped()
    return 0


def print_skipped():
    skipped = data_loader.BAD_FILES.sorted()
    if skipped:
        print(f"Skipped {len(skipped)} undecodable file(s): see the warnings above")


# ---------------------------------------------------------------------------------------------
# Several checkpoints of a session (--iteration N N ...), on the same photos and holes

CHECKPOINT_COLUMNS = ("l1_hole", "psnr_hole", "ssim_image", "swd_hole", "sharpness_hole",
                      "checkerboard_excess", "stripes_excess", "colour_hole", "colour_slope")
CHECKPOINT_METHODS = ("model", "model + blend")
BASELINES = ("OpenCV Telea", "OpenCV Navier-Stokes")


def compare_checkpoints(args, network, mean_pixel, config, items, where, hole_shape, out):
    """Score each of the session's checkpoints args.iterations (the first already loaded as
    `network`) on the items, and once the network of its --init-from (when there) and the
    baselines; print one table and write checkpoints.csv."""
    reference = realism.photo_reference(*photos_and_holes(items))
    rows = [dict(method=method, iteration="", **scores) for method, scores in measure(
        items, fill_items(None, mean_pixel, items, BASELINES), reference)["mean"].items()]
    if config.init_from and os.path.isdir(config.init_from):  # where the session started
        start, start_mean_pixel, _ = exports.load_model(None, config.init_from, None,
                                                        args.engine, args.precision)
        completed = fill_items(start, start_mean_pixel, items, ("model",))
        rows.insert(0, dict(measure(items, completed, reference)["mean"]["model"],
                            method=f"--init-from {config.init_from}", iteration=""))
    header = (f"session '{args.session}' at iterations {', '.join(map(str, args.iterations))}"
              f"{where}: {describe(args, config, items, hole_shape, network)}")
    for iteration in args.iterations:
        if network is None:
            network = exports.load_model(args.session, None, iteration, args.engine,
                                         args.precision)[0]
        completed = fill_items(network, mean_pixel, items, CHECKPOINT_METHODS, progress=True)
        rows += [dict(method=method, iteration=iteration, **scores) for method, scores in
                 measure(items, completed, reference)["mean"].items()]
        network = None
    print(checkpoints_table(header, rows))
    path = os.path.join(out, "checkpoints.csv")
    write_rows(path, ["method", "iteration", *COLUMNS, *realism.COLUMNS], rows)
    print(f"Wrote {path}")
    print_skipped()
    return 0


def checkpoints_table(header, rows):
    """A row per checkpoint and method, then the network the session started from (if any)
    and the baselines; the lowest hole L1 and SWD of the model's rows named below."""
    width = max(22, *(len(r["method"]) + 2 for r in rows))
    lines = [header, f"{'method':{width}s}{'iteration':>10s}" + "".join(
        f"{column_title(c):>16s}" for c in CHECKPOINT_COLUMNS)]
    ordered = [r for r in rows if r["iteration"] != ""] + [r for r in rows if r["iteration"] == ""]
    lines += [f"{r['method']:{width}s}{r['iteration']!s:>10s}" + "".join(
        f"{r[c]:>16{value_format(c)}}" for c in CHECKPOINT_COLUMNS) for r in ordered]
    model = [r for r in rows if r["method"] == "model"]
    for column, title in (("l1_hole", "hole L1"), ("swd_hole", "SWD")):
        best = min(model, key=lambda r: r[column])
        lines.append(f"Lowest {title} of the model: iteration {best['iteration']}"
                     f" ({best[column]:{value_format(column)}})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
