"""Photo-like test images, shared by the tests and the fault script."""
import numpy as np


def smooth_photo(rng, height, width):
    """A small photo-like RGB image: smooth gradients plus a little noise."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(3 * x + rng.uniform(0, 6)), np.cos(4 * y + rng.uniform(0, 6)),
                     np.sin(2 * (x + y) + rng.uniform(0, 6))], axis=-1)
    image = (base * 0.4 + 0.5 + rng.normal(0, 0.03, base.shape)) * 255
    return np.clip(image, 0, 255).astype(np.uint8)
