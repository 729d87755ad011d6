"""Complete your own photos with a trained completion network.

    python complete.py --session NAME --input photo.jpg --mask mask.png --output out.png
    python complete.py --session NAME --input photo.jpg --box 40,30,64,48 --output out.png --postprocess blend
    python complete.py --session NAME --input photos/ --mask masks/ --output completed/
    python complete.py --session NAME --export exported/      # then: --model exported/ instead of --session
    python complete.py --session NAME --export compact/ --float16   # one file, under half the size
    python complete.py --session NAME --export mean/ --average 1100 1200 1300   # checkpoints averaged
    python complete.py --session NAME --export raw/ --raw   # not the moving average of --ema-decay
    python complete.py --model exported/ --export compact/ --float16  # an export, exported again
    python complete.py --input photo.jpg --mask mask.png --output out.png   # the pretrained model

Without --session or --model, the pretrained model in pretrained/wallpapers completes the photos
(or is exported).
ONNX Runtime runs the network when it is installed (converted once, then reused; see engine.py),
TensorFlow otherwise or with --engine tf.

White pixels of a mask (same size as the photo) are the hole. Pixels outside the hole are
copied from the input exactly. `--postprocess blend` is the paper's post-processing: a fast
marching (Telea) fill of the hole, into which the network's completion is Poisson-blended
(OpenCV's seamless cloning), so that its colours meet the surrounding pixels without a seam.
"""
import os
import sys

import numpy as np

import runtime  # noqa: E402,F401  (settings TensorFlow reads at import)
import cv2  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import config as cfg  # noqa: E402
import engine  # noqa: E402
import exports  # noqa: E402
import session  # noqa: E402
import utils  # noqa: E402
from data_loader import IMAGE_EXTENSIONS, load_rgb  # noqa: E402
from utils import UserError  # noqa: E402

MULTIPLE = 4  # the completion network halves the resolution twice
SCALES = ("auto", "native")  # --scale, besides a factor
RESAMPLING = {"bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4,
              "bilinear": cv2.INTER_LINEAR}  # how a fill completed smaller comes back
REFINE = "refine"  # bicubic, then the network again at full size on the upscaled fill

# ---------------------------------------------------------------------------------------------
# Completion


def complete(network, image, hole, mean_pixel, max_pixels=4_000_000, scale="native",
             trained_hole=None, resample="bicubic"):
    """Fill `hole` (bool H x W) of `image` (uint8 H x W x 3). Returns (completed, raw output),
    both uint8; completed equals image outside the hole.

    scale "native": the network runs at the photo's own resolution, the whole photo at once,
    or above max_pixels one window per group of holes (the hole plus a margin of context), so
    memory depends on the holes, not on the photo. scale "auto": each window is completed
    shrunk so that its largest hole has `trained_hole` pixels across (the holes the network
    was trained on), and the fill comes back to full resolution by `resample` (windows whose
    holes are that small already are completed as native completes them). A number: every
    window shrunk by that factor (at most 1). raw: the network's output where it ran (the
    input elsewhere)."""
    raw = image.copy()
    small = image.shape[0] * image.shape[1] <= max_pixels
    windows = [] if scale == "native" and small else hole_windows(hole, image.shape[:2],
                                                                    sizes=True)
    factors = [window_factor(scale, window[4], trained_hole) for window in windows]
    native = [window[:4] for window, factor in zip(windows, factors) if factor >= 1]
    if small and (scale == "native" or native):  # what native does, for the holes it keeps
        raw, native = run_network(network, image, hole, mean_pixel), []
    for top, left, bottom, right in native:
        raw[top:bottom, left:right] = run_network(network, image[top:bottom, left:right],
                                                  hole[top:bottom, left:right], mean_pixel)
    for (top, left, bottom, right, _), factor in zip(windows, factors):
        if factor < 1:
            raw[top:bottom, left:right] = run_scaled(
                network, image[top:bottom, left:right], hole[top:bottom, left:right],
                mean_pixel, factor, resample)
    inside = hole[..., None]
    return np.where(inside, raw, image), raw


def parse_scale(text, flag="--scale"):
    """--scale: "auto", "native", or a factor in (0, 1] ("native" for 1)."""
    if text in SCALES:
        return text
    try:
        factor = float(text)
    except ValueError:
        factor = None
    if factor is None or not 0 < factor <= 1:
        raise UserError(f"{flag} {text}: expected auto, native or a factor in (0, 1], such as"
                        " 0.5")
    return "native" if factor == 1 else factor


def add_resample_flag(parser):
    """--resample, for complete.py and evaluate.py."""
    parser.add_argument("--resample", choices=(*RESAMPLING, REFINE), default="bicubic",
                        help="how a fill completed smaller (--scale auto or a factor) comes back"
                             " to full size: bicubic (default), lanczos or bilinear"
                             " interpolation, or refine (bicubic, then the network run again at"
                             " full size with that fill in the hole: coarse to fine)")


def window_factor(scale, largest, trained_hole):
    """How much a window whose largest hole is `largest` pixels across is shrunk (1: not)."""
    if scale == "native":
        return 1.0
    if scale == "auto":
        return min(1.0, trained_hole / largest) if largest else 1.0
    return float(scale)


def run_scaled(network, image, hole, mean_pixel, factor, resample="bicubic"):
    """The network's output for a crop completed `factor` times smaller: the crop shrunk by
    area averaging (a pixel touched by the hole is hole), completed, and brought back to the
    crop's size by `resample` (uint8, the crop's shape); "refine": brought back by bicubic, then
    given to the network again at the crop's size as the hole's content (instead of the mean
    pixel), the network's output of that pass."""
    h, w = hole.shape
    size = (max(MULTIPLE, round(w * factor)), max(MULTIPLE, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    output = run_network(network, small, small_hole, mean_pixel)
    if resample != REFINE:
        return cv2.resize(output, (w, h), interpolation=RESAMPLING[resample])
    coarse = cv2.resize(output, (w, h), interpolation=cv2.INTER_CUBIC)
    return run_network(network, np.where(hole[..., None], coarse, image), hole, mean_pixel,
                       keep_hole=True)


def complete_photo(network, image, hole, mean_pixel, postprocess="none", max_pixels=4_000_000,
                   scale="native", trained_hole=None, resample="bicubic"):
    """A photo with its hole filled, as complete.py and serve.py give it: (completed, raw
    output, blended), blended None unless postprocess is "blend" (at full resolution)."""
    completed, raw = complete(network, image, hole, mean_pixel, max_pixels, scale, trained_hole,
                              resample)
    blended = poisson_blend(image, completed, hole) if postprocess == "blend" else None
    return completed, raw, blended


def trained_hole_size(config):
    """The hole the network was trained on, in pixels across: the middle of its range."""
    return (config.hole_min + config.hole_max) / 2


def run_network(network, image, hole, mean_pixel, keep_hole=False):
    """One forward pass on a crop padded (by reflection) to a multiple of 4; the hole filled
    with the mean pixel, as in training, or with keep_hole left as `image` has it."""
    h, w = hole.shape
    pad = ((0, -h % MULTIPLE), (0, -w % MULTIPLE))
    x = np.pad(image.astype(np.float32) / 255.0, pad + ((0, 0),), mode="reflect" if min(h, w) > 4 else "edge")
    m = np.pad(hole.astype(np.float32), pad)[..., None]
    if keep_hole:
        inputs = tf.concat([x[None], m[None]], axis=-1)
    else:
        inputs = utils.completion_input(x[None], m[None], tf.constant(mean_pixel))
    output = np.asarray(engine.forward(network)(inputs))[0, :h, :w]
    return np.round(np.clip(output, 0.0, 1.0) * 255.0).astype(np.uint8)


def hole_windows(hole, shape, margin=None, sizes=False):
    """Boxes (top, left, bottom, right) around the connected holes (each with a margin of
    context: its size, at least 64 px, or `margin`), merged where they overlap; with sizes,
    each box ends with the longer side of its largest hole."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, w, h, _ in stats[1:count]:
        pad = margin if margin is not None else max(64, max(w, h))
        boxes.append([max(0, y - pad), max(0, x - pad), min(shape[0], y + h + pad),
                      min(shape[1], x + w + pad), max(w, h)])
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]),
                                max(a[3], b[3]), max(a[4], b[4])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return [tuple(b) if sizes else tuple(b[:4]) for b in boxes]


def poisson_blend(image, completed, hole):
    """The paper's post-processing: Telea fill of the hole, then seamless (Poisson) cloning of
    the completion into it, one connected hole at a time. Outside the hole: the input."""
    border = 8  # seamlessClone needs the cloned region away from the image edge
    pad = ((border, border), (border, border))
    mask = np.pad(hole.astype(np.uint8) * 255, pad)
    source = cv2.cvtColor(np.pad(completed, pad + ((0, 0),), mode="reflect"), cv2.COLOR_RGB2BGR)
    result = cv2.cvtColor(np.pad(image, pad + ((0, 0),), mode="reflect"), cv2.COLOR_RGB2BGR)
    result = cv2.inpaint(result, mask, 3, cv2.INPAINT_TELEA)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    for label in range(1, count):
        region = cv2.dilate((labels == label).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
        x, y, w, h = cv2.boundingRect(region)
        result = cv2.seamlessClone(source, result, region, (x + w // 2, y + h // 2),
                                   cv2.NORMAL_CLONE)
    blended = cv2.cvtColor(result, cv2.COLOR_BGR2RGB)[border:-border, border:-border]
    return np.where(hole[..., None], blended, image)


# ---------------------------------------------------------------------------------------------
# Files and the command line


def read_mask(path, shape):
    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L")) > 127
    except Exception as error:
        raise UserError(f"--mask {path}: cannot read it as an image ({error})")
    if mask.shape != tuple(shape):
        raise UserError(f"--mask {path}: {mask.shape[1]}x{mask.shape[0]} pixels, expected the"
                        f" input's size {shape[1]}x{shape[0]}")
    return mask


def box_mask(boxes, shape, flag="--box"):
    """The hole of rectangles "X,Y,W,H"; a UserError naming `flag` and the bad one."""
    mask = np.zeros(shape, bool)
    for text in boxes:
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise UserError(f"{flag} {text}: expected X,Y,W,H (four integers)")
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > shape[1] or y + h > shape[0]:
            raise UserError(f"{flag} {text}: expected a box of positive size inside the"
                            f" {shape[1]}x{shape[0]} image")
        mask[y:y + h, x:x + w] = True
    return mask


def read_image(path):
    try:
        return load_rgb(path)
    except Exception as error:
        raise UserError(f"--input {path}: cannot read it as an image ({error})")


def save_image(path, array):
    """Write via a temporary file, so a failure never leaves half an output behind."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext}"
    try:
        Image.fromarray(array).save(tmp)
    except (OSError, ValueError) as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"--output {path}: cannot write it ({error})")
    os.replace(tmp, path)


def jobs(args):
    """(input path, mask source, output path) for each photo, checked before any work."""
    if os.path.isdir(args.input):
        names = sorted(n for n in os.listdir(args.input) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise UserError(f"--input {args.input}: no image files found")
        if args.mask and not os.path.isdir(args.mask):
            raise UserError(f"--mask {args.mask}: expected a folder of masks, since --input is"
                            " a folder")
        if os.path.isfile(args.output):
            raise UserError(f"--output {args.output}: expected a folder, since --input is one")
        result = []
        for name in names:
            stem = os.path.splitext(name)[0]
            mask = None
            if args.mask:
                matches = [m for m in sorted(os.listdir(args.mask))
                           if os.path.splitext(m)[0] == stem]
                if not matches:
                    raise UserError(f"--mask {args.mask}: no mask named {stem}.png for"
                                    f" {os.path.join(args.input, name)}")
                mask = os.path.join(args.mask, matches[0])
            result.append((os.path.join(args.input, name), mask,
                           os.path.join(args.output, stem + ".png")))
        return result
    if not os.path.isfile(args.input):
        raise UserError(f"--input {args.input}: no such file or folder")
    if args.mask and not os.path.isfile(args.mask):
        raise UserError(f"--mask {args.mask}: no such file")
    return [(args.input, args.mask, args.output)]


def mean_fill(image, hole, mean_pixel):
    """The hole filled with the mean pixel: what the completion network sees (uint8)."""
    return np.where(hole[..., None], np.round(np.asarray(mean_pixel) * 255).astype(np.uint8),
                    image)


def steps_image(image, hole, raw, completed, blended, mean_pixel):
    """masked input | raw output | completed | blended, side by side."""
    panels = [mean_fill(image, hole, mean_pixel), raw, completed]
    panels += [blended] if blended is not None else []
    return np.concatenate(panels, axis=1)


def process(network, mean_pixel, job, args):
    source, mask_path, output = job
    image = read_image(source)
    hole = read_mask(mask_path, image.shape[:2]) if mask_path else box_mask(args.box, image.shape[:2])
    if not hole.any():
        save_image(output, image)
        print(f"{source}: the mask is empty, nothing to fill; copied the input to {output}")
        return
    completed, raw, blended = complete_photo(network, image, hole, mean_pixel, args.postprocess,
                                             args.max_pixels, args.scale, args.trained_hole,
                                             args.resample)
    save_image(output, blended if blended is not None else completed)
    if args.save_steps:
        root, ext = os.path.splitext(output)
        save_image(f"{root}_steps{ext}", steps_image(image, hole, raw, completed, blended,
                                                     mean_pixel))
    print(f"{source}: filled {int(hole.sum())} pixels -> {output}")


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    exports.add_model_flags(parser)
    parser.add_argument("--export", metavar="DIR",
                        help="write the completion network of --session or --model (default: the"
                             " pretrained model) to DIR, with its mean pixel, configuration and"
                             " what it records of its training and origin")
    parser.add_argument("--float16", action="store_true",
                        help="with --export: one file of float16 kernels (biases and batch-norm"
                             " statistics stay float32), under half the size of the .keras file;"
                             " no SavedModel")
    parser.add_argument("--average", type=int, nargs="+", metavar="N",
                        help="with --export and --session: export the mean of the completion"
                             " network's weights (batch-norm statistics included) over the"
                             " session's checkpoints of these iterations, e.g. its last three;"
                             " in phase 3 the fills swing from one checkpoint to the next, and"
                             " the mean is steadier than any one (docs/results.md)")
    parser.add_argument("--raw", action="store_true",
                        help="with --export and --session: the completion network's own weights,"
                             " not the moving average of them that a session trained with"
                             " --ema-decay keeps (which the session's samples, evaluations and"
                             " completions use)")
    parser.add_argument("--input", help="a photo, or a folder of photos")
    parser.add_argument("--mask", help="mask image (white = hole, the photo's size), or a folder"
                                       " of masks named like the photos")
    parser.add_argument("--box", action="append", metavar="X,Y,W,H",
                        help="a rectangular hole in pixels; repeat for several holes")
    parser.add_argument("--output", help="output image (.png), or a folder for a folder input")
    parser.add_argument("--postprocess", choices=("none", "blend"), default="none",
                        help="blend: the paper's fast marching + Poisson blending (default: none)")
    parser.add_argument("--save-steps", action="store_true",
                        help="also write OUTPUT_steps.png: masked | raw output | completed | blended")
    parser.add_argument("--scale", default="native", metavar="auto|native|F",
                        help="native (default): complete at the photo's own resolution; auto:"
                             " each group of holes at the resolution where its largest hole is"
                             " as wide as the holes the network was trained on, the fill brought"
                             " back to full size (smaller holes stay native); a factor F in"
                             " (0, 1]: every group of holes F times smaller")
    add_resample_flag(parser)
    parser.add_argument("--max-pixels", type=int, default=4_000_000,
                        help="larger photos are completed window by window around the holes"
                             " (default: 4000000)")
    args = parser.parse_args(argv)
    exports.check_model_flags(parser, args)
    try:
        args.scale = parse_scale(args.scale)
    except UserError as error:
        parser.error(str(error))
    if args.average and not (args.export and args.session):
        parser.error("--average applies only to --export DIR with --session NAME")
    if args.raw and not (args.export and args.session):
        parser.error("--raw applies only to --export DIR with --session NAME")
    if args.average and args.iteration is not None:
        parser.error("give either --iteration or --average")
    if args.average and len(set(args.average)) != len(args.average):
        parser.error(f"--average: expected different iterations, got"
                     f" {' '.join(map(str, args.average))}")
    if args.export:
        if args.engine or args.precision or any([args.input, args.mask, args.box, args.output]):
            parser.error("--export takes only --session, --iteration, --average, --raw, --model"
                         " and --float16")
    elif args.float16:
        parser.error("--float16 applies only to --export DIR")
    else:
        if not args.input or not args.output:
            parser.error("--input and --output are required (or --export DIR)")
        if bool(args.mask) == bool(args.box):
            parser.error("give either --mask or --box (one or more)")
    return args


def export(args):
    """--export DIR: the completion network of --session (one checkpoint, or the mean of
    several: --average), --model or the pretrained model, written to DIR with its mean pixel
    and configuration; an export's records of its origin (convert.py's "source") and of its
    training are kept."""
    if args.session:
        name = f"session '{args.session}'"
    else:
        folder = args.model or exports.PRETRAINED
        name = f"the export {args.model}" if args.model else (
            f"the pretrained model {exports.PRETRAINED_NAME}")
        if os.path.realpath(args.export) == os.path.realpath(folder):
            raise UserError(f"--export {args.export}: that is the folder of {name} itself;"
                            " export to another folder")
    if args.average:
        iterations = sorted(args.average)
        network, mean_pixel, config = session.load_averaged_network(args.session, iterations,
                                                                    args.raw)
        name += f" (the mean of its checkpoints of iterations {', '.join(map(str, iterations))})"
        records = {"training": {"iteration": iterations[-1], "averaged": iterations}}
    elif args.session:
        network, mean_pixel, config = session.load_completion_network(
            args.session, args.iteration, args.raw)
        records = {"training": exports.training(args.session, args.iteration, args.raw)}
        if "moving_average" in records["training"]:
            name += " (the moving average of its weights)"
        elif args.raw:
            name += " (its own weights)"
    else:
        network, mean_pixel, config = exports.load_model(None, args.model, None, "tf", "float32")
        # as the export recorded them: the mean pixel not rounded to float32, the
        # configuration without the settings added since
        meta = exports.read_metadata(folder)[2]
        mean_pixel, config = meta["mean_pixel"], meta["config"]
        records = {key: meta.get(key) for key in ("source", "training")}
    exports.write(network, mean_pixel, config, args.export, float16=args.float16, **records)
    print(f"Exported the completion network of {name} to {os.path.normpath(args.export)}/"
          + (" (float16)" if args.float16 else ""))


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.export:
            export(args)
            return 0
        network, mean_pixel, config = exports.load_model(args.session, args.model, args.iteration,
                                                         args.engine, args.precision)
        print(f"Completion network: {engine.describe(network)}")
        args.trained_hole = trained_hole_size(config)
        for job in jobs(args):
            process(network, mean_pixel, job, args)
        return 0
    except UserError as error:
        return utils.print_error(error)


if __name__ == "__main__":
    sys.exit(main())
