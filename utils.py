"""Small helpers shared by the scripts: user errors, network input, completed image, patches,
grids, files."""
import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image


class UserError(ValueError):
    """A mistake the user can fix (a flag, a file, a session): the message names it. Each
    script's main() prints it as one line and exits with `status`."""
    status = 2


def print_error(error):
    """Print a UserError as the one line `error: ...` and return its exit status."""
    print(f"error: {error}", file=sys.stderr)
    return error.status


def rounded(values, digits=4):
    """Floats as the terminal shows them (a mean pixel: [0.4466, 0.3712, 0.3402]), rounded in
    float64: a float32 rounded stays 0.4465999901294708 once printed. Files keep them whole."""
    return [round(float(v), digits) for v in np.ravel(values)]


def completion_input(images, masks, mean_pixel):
    """The completion network's input: the hole filled with the mean pixel, plus the mask."""
    filled = images * (1.0 - masks) + tf.reshape(mean_pixel, [1, 1, 1, 3]) * masks
    return tf.concat([filled, masks], axis=-1)


def blend(images, outputs, masks):
    """x * (1 - M) + C(x, M) * M: network pixels inside the hole, the photo's elsewhere."""
    return images * (1.0 - masks) + outputs * masks


def crop_patches(images, offsets, size):
    """Square (size x size) patches at per-image (y, x) offsets: (B,S,S,C) -> (B,size,size,C)."""
    steps = tf.range(size)
    rows = offsets[:, 0:1] + steps
    cols = offsets[:, 1:2] + steps
    patches = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(patches, cols, axis=2, batch_dims=1)


def sample_grid(images, masks, outputs, mean_pixel):
    """Rows of masked input | output | completed | ground truth, as one uint8 image."""
    masked = completion_input(images, masks, mean_pixel)[..., :3]
    completed = blend(images, outputs, masks)
    columns = [masked, outputs, completed, images]
    rows = tf.concat(columns, axis=2)
    grid = tf.reshape(rows, [-1, rows.shape[2], 3])
    return tf.cast(tf.round(tf.clip_by_value(grid, 0.0, 1.0) * 255.0), tf.uint8).numpy()


def output_folder(folder, flag):
    """Make `folder` for a script's outputs, before any long work; a UserError naming `flag` if
    it cannot be made or written to."""
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({error.strerror})") from None
    return folder


def save_png(path, array):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def write_json(path, data):
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def titled_grid(path, columns, gap=2, header=22):
    """Write `columns`, [(title, [uint8 (H, W, 3) cell per row])], all cells of one size, as a
    grid with `gap` white pixels between cells and each title above its column: pixel for
    pixel (no resampling), so that blur and two-pixel patterns show as they are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    height, width = columns[0][1][0].shape[:2]
    rows = len(columns[0][1])
    grid_width, grid_height = len(columns) * (width + gap) - gap, rows * (height + gap) - gap
    grid = np.full((grid_height, grid_width, 3), 255, np.uint8)
    for c, (_, cells) in enumerate(columns):
        for r, cell in enumerate(cells):
            grid[r * (height + gap):r * (height + gap) + height,
                 c * (width + gap):c * (width + gap) + width] = cell
    dpi = 100
    fig = plt.figure(figsize=(grid_width / dpi, (grid_height + header) / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, grid_height / (grid_height + header)])
    ax.imshow(grid, interpolation="none")
    ax.set_axis_off()
    for c, (title, _) in enumerate(columns):
        fig.text((c * (width + gap) + width / 2) / grid_width,
                 1 - header / 2 / (grid_height + header), title, ha="center", va="center",
                 fontsize=7 if width < 160 else 9)
    fig.savefig(path, dpi=dpi, pil_kwargs={"quality": 90})
    plt.close(fig)
