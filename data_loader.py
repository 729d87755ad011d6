"""Photos on disk -> batches of (image, hole mask, local patch offsets) for training.

Paper, section 4: each photo is resized so that its shorter edge is a random size in
[S, 1.5 S] (256-384 px for S = 256), a random S x S crop is taken, and one random rectangular
hole with edges in [hole_min, hole_max] is cut; the local patch (L x L) is centred on the hole
("centered around the completed region"), shifted only as far as needed to stay inside the
image. The discriminator's real examples use a local patch drawn
independently. Horizontal flips are added.

With --hole-shape free the hole is instead 1-4 random brush strokes drawn inside such a
rectangle (holes as people draw them); `hole` is then the strokes' tight bounding box.

With --max-holes N an image gets 1 to N holes (each count equally likely), each drawn like the
one above, and the mask is their union; the local patch is centred on the first of them
(`hole`), drawn exactly as with one hole: a stream with --max-holes 1 is the one-hole stream.

Element k of the stream is a pure function of (seed, k), so a resumed run sees the same data
as an uninterrupted one.
"""
import errno
import importlib.util
import os
import shutil
import sys
import tempfile
import threading

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps
from tqdm import tqdm

from utils import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
REPO_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(REPO_DIR, "data")

# Default photos: (package, path inside the installed package). Read by file path only.
DEFAULT_PHOTOS = [
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]


class DataError(UserError):
    """A user's data folder or photo cannot be used; the message names it."""


# ---------------------------------------------------------------------------------------------
# Files


def find_images(folders, flag="--data-dir"):
    """Every image file under the folders (recursively, past hidden folders such as
    .thumbnails, which hold copies), sorted for a stable order."""
    files = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise DataError(f"{flag} {folder}: not a folder")
        found = []
        for root, folders_here, names in os.walk(folder, followlinks=True):
            folders_here[:] = [f for f in folders_here if not f.startswith(".")]
            found += [os.path.join(root, name) for name in names
                      if name.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError(f"{flag} {folder}: no image files"
                            f" ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found")
        files += found
    # Wallpaper folders often link one picture under several names: keep each file once.
    unique = {}
    for path in sorted(files):
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def photo_files(folders):
    """The photos of --data-dir; with no folders, the default photos (copied on first use)."""
    if folders:
        return find_images(folders)
    try:
        return find_images([DEFAULT_DATA_DIR])
    except DataError:
        count = install_default_photos()
        print(f"Copied {count} default photos into {DEFAULT_DATA_DIR}/photos (see data/README.md)")
    return find_images([DEFAULT_DATA_DIR])


def draw_probabilities(files, folders, weights):
    """The cumulative probabilities of drawing each of `files` (found in `folders`) when each
    folder is drawn from with its weight (--data-weights) and its photos equally often within
    it; None without weights (every photo equally often)."""
    if not weights:
        return None
    owner = np.empty(len(files), np.int64)
    for i, path in enumerate(files):
        for index, folder in enumerate(folders):
            if not os.path.relpath(path, folder).startswith(os.pardir):
                owner[i] = index
                break
        else:
            raise ValueError(f"{path} is in none of {folders}")
    counts = np.bincount(owner, minlength=len(folders))
    empty = [folders[i] for i in range(len(folders)) if counts[i] == 0]
    if empty:  # all of its photos are validation photos
        raise DataError(f"--data-weights: --data-dir {empty[0]} has no photo left to train on")
    probabilities = np.asarray(weights, np.float64)[owner] / counts[owner]
    cumulative = np.cumsum(probabilities)
    return cumulative / cumulative[-1]


def split_validation(files, seed, split):
    """(training photos, validation photos): a fixed, seeded selection of the photos is kept
    aside, `split` (--val-split) of them: a number of photos (an int), or a fraction (a float:
    at least 1 photo, at most 64; a lone photo is then both)."""
    if isinstance(split, float):
        if len(files) < 2:
            return files, files
        count = min(64, max(1, int(len(files) * split + 1e-9)))  # 0.29 * 100 is 28.99...
    elif split >= len(files):
        raise DataError(f"--val-split {split}: expected fewer photos than the {len(files)} of"
                        " --data-dir, so that some are left for training")
    else:
        count = split
    held = set(np.random.default_rng(seed).choice(len(files), count, replace=False).tolist())
    return ([f for i, f in enumerate(files) if i not in held],
            [f for i, f in enumerate(files) if i in held])


def validation_photos(config, files):
    """(training photos, validation photos, where the validation photos come from) of a
    session's settings: the photos of its --val-dir, or its seeded --val-split of `files`, the
    photos of its --data-dir."""
    if config.val_dir:
        return files, find_images([config.val_dir], "--val-dir"), f"--val-dir {config.val_dir}"
    train, validation = split_validation(files, config.seed, config.val_split)
    return train, validation, (f"--val-split {config.val_split} of --data-dir" if len(files) > 1
                               else "the only photo of --data-dir, also trained on")


def install_default_photos(folder=DEFAULT_DATA_DIR):
    """Copy the photos that scikit-image, scikit-learn and matplotlib ship into `folder`/photos.

    The copy is made in a hidden folder beside it and renamed into place, so processes starting
    together (the workers of a multi-worker run) all see either no photos or all of them."""
    target = os.path.join(folder, "photos")
    os.makedirs(folder, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".photos-", dir=folder)
    try:
        copied = 0
        for package, relpath in DEFAULT_PHOTOS:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                continue
            source = os.path.join(spec.submodule_search_locations[0], relpath)
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(
                    scratch, f"{package}_{os.path.basename(relpath)}"))
                copied += 1
        if copied == 0:
            raise DataError("no --data-dir given and none of scikit-image, scikit-learn,"
                            " matplotlib is installed to provide default photos:"
                            " pip install -r requirements.txt")
        try:
            os.rename(scratch, target)  # replaces an empty folder; fails on a full one
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another process installed them first: keep its copy.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return copied


# ---------------------------------------------------------------------------------------------
# Decoding (Pillow: every common format and colour mode, EXIF orientation, fast JPEG draft)

class BadFiles:
    """The files that could not be decoded, each reported in one warning line however many
    pipeline threads meet it; later draws skip them."""

    def __init__(self):
        self._paths, self._lock = set(), threading.Lock()

    def report(self, path, reason):
        with self._lock:
            if path in self._paths:
                return
            self._paths.add(path)
        tqdm.write(f"warning: skipping {path}: {reason}", file=sys.stderr)

    def __contains__(self, path):
        return path in self._paths

    def sorted(self):
        return sorted(self._paths)

    def reset(self):
        """Forget them all (a new dataset, or a test)."""
        with self._lock:
            self._paths.clear()


BAD_FILES = BadFiles()


# Larger photos are refused with a message instead of exhausting memory (250 M pixels is
# 750 MB as 8-bit RGB). JPEGs are checked after draft decoding, which shrinks them first.
MAX_PIXELS = 250_000_000
Image.MAX_IMAGE_PIXELS = None  # replaced by the check below, made after JPEG draft mode


def load_rgb(path, min_side=None):
    """Decode a photo as 8-bit RGB (H, W, 3), upright as its EXIF orientation says. JPEGs are
    decoded at reduced size when their shorter edge stays >= min_side, which is much faster
    and never changes the crop's content."""
    with Image.open(path) as img:
        if min_side and img.format == "JPEG":
            scale = min_side / min(img.size)
            img.draft("RGB", (int(img.width * scale) + 1, int(img.height * scale) + 1))
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"{img.width}x{img.height} pixels is more than this program"
                             f" decodes ({MAX_PIXELS // 1_000_000} M pixels)")
        img = ImageOps.exif_transpose(img)
        return np.asarray(to_rgb(img))


def to_rgb(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode != "I" or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / peak + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" or img.mode == "LA" or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def try_load(path, min_side=None):
    try:
        image = load_rgb(path, min_side)
    except Exception as error:  # any decoder failure means: skip this file
        BAD_FILES.report(path, f"cannot decode it ({type(error).__name__}: {error})")
        return None
    if min(image.shape[:2]) < 1:
        BAD_FILES.report(path, "empty image")
        return None
    return image


def compute_mean_pixel(files, seed, sample=200):
    """Per-channel mean in [0, 1] of a seeded sample of the photos."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(files))[:sample]
    means = [image.reshape(-1, 3).mean(axis=0) / 255.0
             for image in (try_load(files[i], 64) for i in chosen) if image is not None]
    if not means:
        folders = sorted({os.path.dirname(files[i]) for i in chosen})
        raise DataError(f"--data-dir {', '.join(folders)}: no decodable image among"
                        f" {len(chosen)} files tried")
    return np.mean(means, axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Random geometry (paper): resize + crop, hole, local patches


def _random_int(seed, low, high):
    """Uniform integer in [low, high], stateless."""
    u = tf.random.stateless_uniform([], seed)
    return low + tf.cast(tf.floor(u * tf.cast(high - low + 1, tf.float32)), tf.int32)


def random_box(seeds, image_size, hole_min, hole_max):
    """Rectangle (y, x, h, w) with edges in [hole_min, hole_max], fully inside the image."""
    h = _random_int(seeds[0], hole_min, hole_max)
    w = _random_int(seeds[1], hole_min, hole_max)
    y = _random_int(seeds[2], 0, image_size - h)
    x = _random_int(seeds[3], 0, image_size - w)
    return tf.stack([y, x, h, w])


def centred_patch(hole, image_size, local_size):
    """Offset (y, x) of the local patch centred on the hole (y, x, h, w), clamped to the image;
    since the hole is at most local_size wide, the patch contains it."""
    y, x, h, w = tf.unstack(tf.convert_to_tensor(hole, tf.int32))
    top = tf.clip_by_value((2 * y + h - local_size) // 2, 0, image_size - local_size)
    left = tf.clip_by_value((2 * x + w - local_size) // 2, 0, image_size - local_size)
    return tf.stack([top, left])


def local_patches(seeds, hole, image_size, local_size):
    """Offsets (y, x) of the local patch centred on the hole, and of an independent random one
    for real images (seeds[2:4]; seeds[0:2] are unused, so the real patches stay as before)."""
    ry = _random_int(seeds[2], 0, image_size - local_size)
    rx = _random_int(seeds[3], 0, image_size - local_size)
    return centred_patch(hole, image_size, local_size), tf.stack([ry, rx])


def random_mask(rng, image_size, hole_min, hole_max, shape):
    """(mask, hole) in numpy: an (S, S, 1) float32 0/1 mask and its bounding box (y, x, h, w).
    "rect": the paper's rectangle. "free": 1-4 brush strokes of a few random segments drawn
    inside such a rectangle; `hole` is then their tight bounding box."""
    h, w = rng.integers(hole_min, hole_max + 1, size=2)
    y, x = rng.integers(0, image_size - h + 1), rng.integers(0, image_size - w + 1)
    box = np.zeros((h, w), np.uint8)
    if shape == "rect":
        box[:] = 1
    elif shape == "free":
        far = np.array([w - 1, h - 1])  # the box's last pixel, as (x, y) for OpenCV
        for _ in range(rng.integers(1, 5)):
            width = int(rng.integers(max(1, min(h, w) // 10), max(2, min(h, w) // 4) + 1))
            point = rng.integers((0, 0), (w, h))
            points = [point]
            for _ in range(rng.integers(1, 5)):
                angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.7) * max(h, w)
                point = point + length * np.array([np.cos(angle), np.sin(angle)])
                point = np.clip(far - np.abs(far - np.abs(point)), 0, far)  # bounce off the edges
                points.append(point)
            # Thick OpenCV lines have round caps; drawing on the box clips their edges to it.
            cv2.polylines(box, [np.round(points).astype(np.int32)], False, 1, width)
    else:
        raise ValueError(f"unknown hole shape {shape!r}")
    mask = np.zeros((image_size, image_size, 1), np.float32)
    mask[y:y + h, x:x + w, 0] = box
    rows, cols = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    hole = np.array([rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1], np.int32)
    return mask, hole


def more_holes(config, key):
    """The holes of an image besides its first: 0 to max_holes - 1 of them (each count equally
    likely), each drawn as random_mask draws one, seeded by `key` (a list of integers). Returns
    their union mask (S, S, 1) and their boxes (n, 4) (y, x, h, w)."""
    rng = np.random.default_rng(key)
    holes = [random_mask(rng, config.image_size, config.hole_min, config.hole_max,
                         config.hole_shape) for _ in range(rng.integers(config.max_holes))]
    union = np.zeros((config.image_size, config.image_size, 1), np.float32)
    for mask, _ in holes:
        union = np.maximum(union, mask)
    return union, np.array([box for _, box in holes], np.int32).reshape(-1, 4)


def hole_mask(hole, image_size):
    """(S, S, 1) float mask, 1 inside the rectangle (y, x, h, w)."""
    r = tf.range(image_size)
    rows = (r >= hole[0]) & (r < hole[0] + hole[2])
    cols = (r >= hole[1]) & (r < hole[1] + hole[3])
    return tf.cast(rows[:, None, None] & cols[None, :, None], tf.float32)


def random_crop(image, seeds, image_size):
    """Shorter edge to a random size in [S, 1.5 S], random S x S crop, random flip; -> [0, 1]."""
    shape = tf.shape(image)[:2]
    short = _random_int(seeds[0], image_size, image_size * 3 // 2)
    scale = tf.cast(short, tf.float32) / tf.cast(tf.reduce_min(shape), tf.float32)
    size = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32), image_size)
    image = tf.image.resize(tf.cast(image, tf.float32), size, antialias=True)
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seeds[1])
    image = tf.image.stateless_random_flip_left_right(image, seeds[2])
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def worker_element(counter, global_batch, pipelines, pipeline_id):
    """The element of the single-device stream that counter value `counter` of input pipeline
    `pipeline_id` (of `pipelines`) stands for. Each global batch of `global_batch` elements is
    cut into `pipelines` consecutive slices, one per pipeline, in pipeline order."""
    share = global_batch // pipelines
    return counter // share * global_batch + pipeline_id * share + counter % share


def training_dataset(files, config, start_element=0, input_context=None):
    """Endless batches of dicts: image (B,S,S,3), mask (B,S,S,1), hole (B,4) (the box of the
    hole the local patch is centred on, the first of them), local_fake (B,2) and
    local_real (B,2) offsets of the local patches.

    Element k of the stream is a pure function of (seed, k); batch t holds elements
    [t B, (t + 1) B). With a tf.distribute.InputContext (one input pipeline per worker), the
    pipeline yields per-replica batches of only its own replicas' slices of each global batch,
    in replica order: the workers together decode each element once, and the global batch is
    the one a single device would see."""
    files = list(files)
    batch_size, index = config.batch_size, (lambda c: c)
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        index = lambda c: worker_element(c, config.batch_size, pipelines, pipeline_id)  # noqa: E731
        start_element = start_element // config.batch_size * (config.batch_size // pipelines)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)
    min_side = config.image_size * 3 // 2
    cumulative = draw_probabilities(files, config.data_dir, config.data_weights)

    def load(k):
        rng = np.random.default_rng([config.seed, int(k)])
        for _ in range(1000):
            if cumulative is None:
                path = files[rng.integers(len(files))]
            else:
                path = files[min(np.searchsorted(cumulative, rng.random(), side="right"),
                                 len(files) - 1)]
            if path in BAD_FILES:
                continue
            image = try_load(path, min_side)
            if image is not None:
                return image
        raise RuntimeError(f"no decodable photo found in 1000 draws among {len(files)} files")

    def load_with_free_hole(k):
        rng = np.random.default_rng([config.seed, int(k), 1])
        return (load(k), *random_mask(rng, config.image_size, config.hole_min, config.hole_max,
                                      "free"))

    def draw_more_holes(k):
        return more_holes(config, [config.seed, int(k), 2])[0]

    def element(k):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.cast(config.seed, tf.int64), k]), 11)
        if config.hole_shape == "free":
            image, mask, hole = tf.numpy_function(load_with_free_hole, [k],
                                                  (tf.uint8, tf.float32, tf.int32), stateful=False)
            mask.set_shape([config.image_size, config.image_size, 1])
            hole.set_shape([4])
        else:
            image = tf.numpy_function(load, [k], tf.uint8, stateful=False)
            hole = random_box(seeds[3:7], config.image_size, config.hole_min, config.hole_max)
            mask = hole_mask(hole, config.image_size)
        if config.max_holes > 1:
            mask = tf.maximum(mask, tf.numpy_function(draw_more_holes, [k], tf.float32,
                                                      stateful=False))
            mask.set_shape([config.image_size, config.image_size, 1])
        image.set_shape([None, None, 3])
        local_fake, local_real = local_patches(seeds[7:], hole, config.image_size,
                                               config.local_size)
        return dict(image=random_crop(image, seeds[:3], config.image_size), mask=mask, hole=hole,
                    local_fake=local_fake, local_real=local_real)

    return (tf.data.Dataset.counter(start_element)
            .map(lambda c: element(index(c)), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def validation_batch(files, config, count=6, source="--val-dir"):
    """A fixed batch for the sample grids: centre crops with seeded holes (numpy arrays)."""
    images = []
    for path in files:
        image = try_load(path, config.image_size)
        if image is not None:
            images.append(center_crop(image, config.image_size))
        if len(images) == count:
            break
    if not images:
        raise DataError(f"{source}: no decodable validation image among {len(files)} files")
    seeds = tf.random.experimental.stateless_split([config.seed, 7919], count * 8)
    rng = np.random.default_rng([config.seed, 7919])

    def image_holes(i, seeds):
        if config.hole_shape == "free":
            mask, hole = random_mask(rng, config.image_size, config.hole_min, config.hole_max,
                                     "free")
        else:
            hole = random_box(seeds[:4], config.image_size, config.hole_min, config.hole_max)
            mask, hole = hole_mask(hole, config.image_size).numpy(), hole.numpy()
        mask = np.maximum(mask, more_holes(config, [config.seed, 7919, 2, i])[0])
        fake, real = local_patches(seeds[4:], hole, config.image_size, config.local_size)
        return mask, hole, fake.numpy(), real.numpy()

    masks, holes, fakes, reals = zip(*(image_holes(i, seeds[8 * i:8 * i + 8])
                                       for i in range(count)))
    return dict(image=np.stack([images[i % len(images)] for i in range(count)]),
                mask=np.stack(masks), hole=np.stack(holes), local_fake=np.stack(fakes),
                local_real=np.stack(reals))


def center_crop(image, size):
    """Shorter edge to `size`, centre square crop, float32 in [0, 1]."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    resized = Image.fromarray(image).resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    top, left = (resized.height - size) // 2, (resized.width - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    return np.asarray(crop, dtype=np.float32) / 255.0
