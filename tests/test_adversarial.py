"""The adversarial phase works in this implementation: proof by a case where nothing else can.

The photos are random black-and-white blocks (4 px, each block black or white by a coin toss),
so what lies inside a hole cannot be predicted from outside it: the reconstruction loss's best
answer is the mean, a flat grey. Phase 1 learns that grey. Only the context discriminators know
that photos are black and white, so only phases 2 and 3 can take the fill away from grey, toward
the photos' blocks: its sharpness and SWD move toward the photos', where as many more phase-1
iterations leave the fill grey.

Sizes: 32 px photos, local patch 16, holes of 8-12 px, batch 16, an eighth of the paper's
channels, Adam at 2e-4, phases of 300 / 100 / 600 iterations (about 2 minutes here).

alpha is 0.05 rather than the paper's 4e-4. Here the two terms pull against each other as hard
as they can: filling the hole with blocks instead of grey doubles its squared error, which adds
about 0.025 to the reconstruction loss (a mean over the whole image, of which the hole is a
tenth), while -log D(completed) can fall by 1-3. The adversarial term wins only when alpha
times that fall exceeds the reconstruction's rise, and acts within a few hundred iterations
only well above that bound; at 4e-4 it moves nothing in this budget (the fill stays grey).

With GLCIC_ADVERSARIAL_FIGURE=PATH set, the test also writes a figure of the fills to PATH (the
one in docs/results.md), and -s prints the measures.

Each of these breaks makes the test fail (checked by breaking the code once each): the
adversarial term's sign flipped (losses.adversarial_loss), alpha 0, and the local
discriminator's patch for completed images placed away from the hole (data_loader's
local_patches): the global discriminator alone learns nothing here in this budget.
"""
import os

import numpy as np
import pytest
from PIL import Image

import evaluate
import realism
import session
import train
from conftest import run_main, working_directory

pytestmark = pytest.mark.slow

SIZE, BLOCK = 32, 4
TC, TD, T3 = 300, 100, 600
SETTINGS = ["--preset", "quick", "--image-size", SIZE, "--local-size", 16, "--hole-min", 8,
            "--hole-max", 12, "--batch-size", 16, "--width-divisor", 8, "--optimizer", "adam",
            "--learning-rate", 2e-4, "--alpha", 0.05, "--eval-every", 0, "--sample-every",
            10 ** 6, "--checkpoint-every", 10 ** 6, "--summary-every", 20, "--data-dir",
            "photos", "--val-dir", "validation"]


def block_photo(rng):
    """A SIZE x SIZE photo of BLOCK x BLOCK squares, each black or white at random."""
    cells = rng.integers(0, 2, (SIZE // BLOCK, SIZE // BLOCK)).astype(np.uint8) * 255
    return np.repeat(np.kron(cells, np.ones((BLOCK, BLOCK), np.uint8))[..., None], 3, axis=2)


def measure(name, iteration, items):
    """Hole sharpness, hole SWD (x 1e3), the fill's spread (standard deviation) and distance
    from grey for the network of a session's checkpoint, on the validation photos' holes; and
    the fills."""
    network, mean_pixel, _ = session.load_completion_network(name, iteration)
    fills = [evaluate.fill_all(network, item["masked"], item["hole"], mean_pixel, ("model",))
             ["model"] for item in items]
    photos, holes = [item["image"] for item in items], [item["hole"] for item in items]
    return dict(fills=fills, sharpness=realism.sharpness(fills, photos, holes)[0],
                swd=realism.swd(fills, photos, holes)[0],
                spread=float(np.mean([fill[hole].std() / 255 for fill, hole in zip(fills, holes)])),
                grey=float(np.mean([np.abs(fill[hole] / 255 - 0.5).mean()
                                    for fill, hole in zip(fills, holes)])))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two sessions from the same seed: 'gan' (phases of TC / TD / T3) and 'more' (phase 1
    for all TC + TD + T3 iterations), scored after phase 1 and at their ends."""
    root = tmp_path_factory.mktemp("adversarial")
    rng = np.random.default_rng(0)
    for folder, count in (("photos", 200), ("validation", 64)):
        os.makedirs(root / folder)
        for i in range(count):
            Image.fromarray(block_photo(rng)).save(root / folder / f"{i:03d}.png")
    total = TC + TD + T3
    for name, tc, td in (("gan", TC, TD), ("more", total, 0)):
        args = [*SETTINGS, "--session", name, "--tc", tc, "--td", td, "--total-iters", total]
        assert run_main(train, args, root) == 0
    with working_directory(root):
        files = sorted(str(root / "validation" / f) for f in os.listdir(root / "validation"))
        _, mean_pixel, config = session.load_completion_network("gan")
        items = evaluate.held_out(files, config, len(files), "rect", 0, mean_pixel)
        photos, holes = [item["image"] for item in items], [item["hole"] for item in items]
        runs = dict(phase1=measure("gan", TC, items), gan=measure("gan", total, items),
                    more=measure("more", total, items),
                    floor=realism.swd_floor(photos, holes)[0],
                    photo_spread=float(np.mean([p[h].std() / 255 for p, h in zip(photos, holes)])))
    print({name: {k: v for k, v in values.items() if k != "fills"} if isinstance(values, dict)
           else values for name, values in runs.items()})
    if os.environ.get("GLCIC_ADVERSARIAL_FIGURE"):
        figure(os.environ["GLCIC_ADVERSARIAL_FIGURE"], items, runs)
    return runs


def figure(path, items, runs, rows=6, zoom=4):
    """masked input | after phase 1 | after phases 2 and 3 | after as many more phase-1
    iterations | ground truth, for the first validation photos, each pixel repeated zoom x zoom."""
    import utils

    def zoomed(image):
        return np.repeat(np.repeat(image, zoom, 0), zoom, 1)
    total = TC + TD + T3
    red = np.array([220, 40, 40], np.uint8)  # white would not show on these photos
    columns = [("masked input", [np.where(i["hole"][..., None], red, i["image"])
                                 for i in items[:rows]]),
               (f"phase 1, iteration {TC}", runs["phase1"]["fills"][:rows]),
               (f"+ phases 2 and 3, {total}", runs["gan"]["fills"][:rows]),
               (f"phase 1 only, {total}", runs["more"]["fills"][:rows]),
               ("ground truth", [i["image"] for i in items[:rows]])]
    utils.titled_grid(path, [(title, [zoomed(c) for c in cells]) for title, cells in columns])


def test_phase_1_fills_the_unpredictable_hole_with_grey(runs):
    phase1 = runs["phase1"]
    assert runs["photo_spread"] > 0.4  # the photos' holes: black and white
    assert phase1["spread"] < 0.1 and phase1["grey"] < 0.1
    assert phase1["sharpness"] < 0.4


def test_phases_2_and_3_move_the_fill_toward_the_photos(runs):
    phase1, gan = runs["phase1"], runs["gan"]
    assert gan["spread"] > 0.2 and gan["spread"] > 3 * phase1["spread"]
    assert gan["sharpness"] > 0.45 and gan["sharpness"] > 1.5 * phase1["sharpness"]
    assert gan["swd"] < 0.7 * phase1["swd"]


def test_as_many_more_phase_1_iterations_leave_it_grey(runs):
    gan, more = runs["gan"], runs["more"]
    assert more["spread"] < 0.1 and more["sharpness"] < 0.4
    assert gan["spread"] > 3 * more["spread"] and gan["sharpness"] > 3 * more["sharpness"]
    assert gan["swd"] < 0.7 * more["swd"]
