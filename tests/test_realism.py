"""realism.py: the pyramid, the sliced Wasserstein distance and the hole ratios against values
known in advance, and the point of having them all: a blur, a checkerboard and stripes each
caught."""
import math

import cv2
import numpy as np
import pytest

import realism

SIZE = 64


def textures(rng, count):
    """White noise: every neighbourhood alike, the sharpest texture there is."""
    return rng.uniform(size=(count, SIZE, SIZE, 3))


def rectangles(rng, count):
    """One hole of 16-24 px per image."""
    holes = np.zeros((count, SIZE, SIZE), bool)
    for hole in holes:
        (h, w), (y, x) = rng.integers(16, 25, 2), rng.integers(0, SIZE - 24, 2)
        hole[y:y + h, x:x + w] = True
    return holes


def fill(photos, holes, inside):
    """The photos with `inside` in their holes: a completion copies the rest."""
    return np.where(holes[..., None], inside, photos)


CHECKER = np.where(np.indices((SIZE, SIZE)).sum(axis=0) % 2 == 0, 0.1, -0.1)[..., None]
COLUMNS = np.where(np.indices((SIZE, SIZE))[1] % 2 == 0, 0.1, -0.1)[..., None]  # vertical


@pytest.fixture(scope="module")
def textured():
    """16 noise photos with their holes, a re-sampled fill (the same noise, drawn again), a
    blurred one, and the blurred one with a two-pixel checkerboard of +-0.1 added or with
    columns alternating by +-0.1 (vertical stripes)."""
    rng = np.random.default_rng(0)
    photos = textures(rng, 16)
    holes = rectangles(rng, 16)
    blurred = fill(photos, holes, np.stack([cv2.GaussianBlur(p, (0, 0), 1.5) for p in photos]))
    return dict(photos=photos, holes=holes,
                resampled=fill(photos, holes, textures(rng, 16)), blurred=blurred,
                checkered=fill(photos, holes, blurred + CHECKER),
                striped=fill(photos, holes, blurred + COLUMNS))


# ---------------------------------------------------------------------------------------------
# The Laplacian pyramid


@pytest.mark.parametrize("shape, sides", [
    ((128, 128), [128, 64, 32, 16]), ((64, 64), [64, 32, 16]), ((32, 32), [32, 16]),
    ((31, 31), [31]), ((128, 64), [64, 32, 16]), ((47, 65), [47, 24])])
def test_levels_down_to_16_px_on_the_shorter_side(shape, sides):
    image = np.random.default_rng(0).uniform(size=(*shape, 3))
    levels = realism.laplacian_pyramid(image)
    assert [min(level.shape[:2]) for level in levels] == sides
    if shape == (47, 65):
        assert [level.shape for level in levels] == [(47, 65, 3), (24, 33, 3)]  # odd: rounded up


@pytest.mark.parametrize("shape", [(128, 128), (47, 65), (2, 64, 64)])
def test_the_levels_add_up_to_the_image(shape):
    image = np.random.default_rng(1).uniform(size=(*shape, 3))
    levels = realism.laplacian_pyramid(image)
    np.testing.assert_allclose(realism.collapse(levels), image, rtol=0, atol=1e-12)
    smallest = image
    for _ in levels[1:]:
        smallest = realism.pyr_down(smallest)
    np.testing.assert_array_equal(levels[-1], smallest)


def test_the_filter_is_the_binomial_one():
    kernel = np.array([1, 4, 6, 4, 1]) / 16
    impulse = np.zeros((9, 9, 1))
    impulse[4, 4] = 1.0
    # pyr_down keeps the even pixels of the filtered impulse: (1, 6, 1) / 16 on each axis.
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = np.outer([1, 6, 1], [1, 6, 1]) / 256
    np.testing.assert_allclose(realism.pyr_down(impulse)[..., 0], expected, atol=1e-15)
    # pyr_up puts it at (4, 4) with zeros between, filters and multiplies by 4.
    expected = np.zeros((10, 10))
    expected[2:7, 2:7] = 4 * np.outer(kernel, kernel)
    np.testing.assert_allclose(realism.pyr_up(impulse[::2, ::2], (10, 10))[..., 0], expected,
                               atol=1e-15)
    # A constant stays the constant, edges and odd sides included.
    np.testing.assert_allclose(realism.pyr_up(np.full((5, 4, 3), 0.3), (9, 8)), 0.3)


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein distance


def test_sliced_wasserstein_of_1d_sets_is_their_wasserstein_distance():
    # In one dimension every unit direction is +-1: the sorted values differ by 1 each.
    assert realism.sliced_wasserstein([[0.0], [1.0]], [[1.0], [2.0]]) == pytest.approx(1.0)
    assert realism.sliced_wasserstein([[1.0], [0.0]], [[0.0], [1.0]]) == 0.0
    # Sets of 2 and 3: the larger at the quantiles 1/4 and 3/4, interpolated: 0.125 and 0.875.
    assert realism.sliced_wasserstein([[0.0], [1.0]], [[0.0], [0.5], [1.0]]) == pytest.approx(
        0.125)


def test_sliced_wasserstein_of_a_shifted_set_is_the_mean_projected_shift():
    """Shifted by v, each projection moves by |<v, u>|; over unit directions in 2-D its mean is
    |v| 2 / pi."""
    points = np.random.default_rng(2).normal(size=(50, 2))
    distance = realism.sliced_wasserstein(points, points + [3.0, 4.0])
    assert distance == pytest.approx(5 * 2 / math.pi, rel=0.05)


def test_descriptors_are_the_neighbourhoods_at_the_hole():
    image = np.random.default_rng(3).uniform(size=(1, SIZE, SIZE, 3))
    hole = np.zeros((1, SIZE, SIZE), bool)
    hole[0, 20, 30] = True  # one pixel: at the coarser levels, the mask's highest pixel
    levels = realism.laplacian_pyramid(image)
    found = realism.hole_descriptors(image, hole)
    assert [len(d) for d in found] == [1, 1, 1]
    np.testing.assert_array_equal(found[0][0], levels[0][0, 17:24, 27:34].transpose(2, 0, 1))
    np.testing.assert_array_equal(found[1][0], levels[1][0, 7:14, 12:19].transpose(2, 0, 1))
    # Holes everywhere: 128 centres per image and level, placed by the holes and the seed only
    # (a constant added to the images moves only the last level, by that constant).
    images, holes = np.random.default_rng(4).uniform(size=(2, SIZE, SIZE, 3)), np.ones(
        (2, SIZE, SIZE), bool)
    first = realism.hole_descriptors(images, holes, seed=5)
    shifted = realism.hole_descriptors(images + 0.25, holes, seed=5)
    assert [len(d) for d in first] == [256, 256, 256]
    np.testing.assert_allclose(shifted[0], first[0], atol=1e-12)
    np.testing.assert_allclose(shifted[-1] - first[-1], 0.25)
    assert not np.allclose(realism.hole_descriptors(images, holes, seed=6)[0], first[0])


def test_both_sets_are_normalised_by_the_photos_statistics():
    varied = np.random.default_rng(6).uniform(size=(40, 3, 7, 7))
    mean, std = realism.statistics(varied)
    scaled = realism.normalised(varied, mean, std).reshape(40, 3, 49)
    np.testing.assert_allclose(scaled.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=(0, 2)), 1)
    # A flat set keeps its flatness (the photos' std does not blow it up), and a channel
    # of std 0 becomes zeros.
    flat = np.full((5, 3, 7, 7), 0.5)
    np.testing.assert_allclose(realism.normalised(flat, mean, std).reshape(5, 3, 49).std(axis=2), 0)
    np.testing.assert_array_equal(realism.normalised(flat, realism.statistics(flat)[0],
                                                     realism.statistics(flat)[1]), 0.0)


def test_a_flat_fill_scores_far_from_black_and_white_photos():
    """By its own statistics a grey fill's residue would look like the photos' contrast; by
    the photos' it stays flat, far from their blocks."""
    rng = np.random.default_rng(3)
    photos = np.repeat(np.kron(rng.integers(0, 2, (32, 16, 16)), np.ones((1, 4, 4)))[..., None], 3,
                       axis=3)
    holes = rectangles(rng, 32)
    grey = fill(photos, holes, 0.5)
    assert realism.swd(grey, photos, holes)[0] > 2 * realism.swd_floor(photos, holes)[0]


# ---------------------------------------------------------------------------------------------
# Sharpness, checkerboard and stripes, by hand: 4x4 images, one channel repeated, holes of 3x3
# top-left


def gray(rows):
    return np.repeat(np.array(rows, np.float64)[..., None] / 10, 3, axis=-1)


def test_ratios_by_hand():
    completion = gray([[0, 2, 4, 9], [0, 1, 0, 9], [2, 2, 2, 9], [9, 9, 9, 9]])
    ramp = gray([[0, 1, 2, 3]] * 4)
    checker = gray([[0, 1, 0, 1], [1, 0, 1, 0]] * 2)
    hole = np.zeros((4, 4), bool)
    hole[:3, :3] = True  # four 2x2 windows, top-left at (0, 0), (0, 1), (1, 0), (1, 1)
    completions, photos, holes = [completion, checker], [ramp, checker], [hole, hole]
    # The completion's gradients: (2, 0), (2, -1), (1, 2), (-1, 1), tenths; the ramp's (1, 0).
    ours = 2 + 2 * math.sqrt(5) + math.sqrt(2)
    # Its checker responses |a - b - c + d|: 1, 3, 1, 1; the ramp's 0; the checker's 2 each.
    sharp, sharp_per_photo = realism.sharpness(completions, photos, holes)
    assert sharp_per_photo == pytest.approx([ours / 4, 1.0])
    assert sharp == pytest.approx((ours + 4 * math.sqrt(2)) / (4 + 4 * math.sqrt(2)))
    checker_ratio, checker_per_photo = realism.checkerboard(completions, photos, holes)
    assert checker_ratio == pytest.approx((6 + 8) / 8)
    assert math.isnan(checker_per_photo[0]) and checker_per_photo[1] == 1.0  # 6 / 0: nan
    measured = realism.measure(completions, photos, holes)
    assert measured["checkerboard_excess"] == pytest.approx(checker_ratio / sharp)
    # One 3x3 window. The completion's rows' second differences are 0, -2, 0 and its columns'
    # 2, 2, 6, each smoothed by (1, 2, 1) / 4: |-4| / 4 + |2 + 4 + 6| / 4 = 4; the ramp's and
    # the checker's 0 (its rows' 2, -2, 2 cancel): both nan per photo, and 4 / 0 pooled.
    stripes_ratio, stripes_per_photo = realism.stripes(completions, photos, holes)
    assert math.isnan(stripes_ratio) and all(map(math.isnan, stripes_per_photo))
    stripes_ratio, _ = realism.stripes([completion], [gray([[0, 1, 0, 1]] * 4)], [hole])
    assert stripes_ratio == pytest.approx(4 / 2)  # alternating columns: (2 + 4 + 2) / 4 = 2
    assert math.isnan(measured["stripes_hole"]) and math.isnan(measured["stripes_excess"])
    # uint8 photos are read as value / 255: the same ratios.
    as_uint8 = [np.round(np.asarray(x) * 200).astype(np.uint8) for x in (completions, photos)]
    assert realism.sharpness(*as_uint8, holes)[0] == pytest.approx(sharp)


# ---------------------------------------------------------------------------------------------
# Sets of completions: what each measure catches


def test_a_set_against_itself(textured):
    measured = realism.measure(textured["photos"], textured["photos"], textured["holes"])
    assert measured["swd_hole"] == 0.0 and measured["swd_levels"] == [0.0, 0.0, 0.0]
    assert measured["sharpness_hole"] == measured["checkerboard_hole"] == 1.0
    assert measured["checkerboard_excess"] == measured["stripes_excess"] == 1.0
    assert measured["sharpness_per_photo"] == measured["checkerboard_per_photo"] == [1.0] * 16
    assert measured["stripes_per_photo"] == [1.0] * 16


def test_a_blur_is_far_from_the_photos_and_less_sharp(textured):
    photos, holes = textured["photos"], textured["holes"]
    resampled = realism.measure(textured["resampled"], photos, holes)
    blurred = realism.measure(textured["blurred"], photos, holes)
    assert blurred["swd_hole"] > 1.5 * resampled["swd_hole"] > 0  # 284 against 58
    assert resampled["sharpness_hole"] == pytest.approx(1, abs=0.02)
    assert resampled["checkerboard_excess"] == pytest.approx(1, abs=0.02)
    assert resampled["stripes_excess"] == pytest.approx(1, abs=0.02)
    assert blurred["sharpness_hole"] < 0.1 and blurred["checkerboard_excess"] < 0.5
    assert blurred["stripes_excess"] < 0.75
    assert max(blurred["sharpness_per_photo"]) < 0.2


def test_a_checkerboard_fools_swd_not_the_excess(textured):
    """Added to the blur, the two-pixel pattern brings back high frequencies, so SWD improves,
    though no photo looks like it: the checkerboard ratio and its excess say so."""
    photos, holes = textured["photos"], textured["holes"]
    blurred = realism.measure(textured["blurred"], photos, holes)
    checkered = realism.measure(textured["checkered"], photos, holes)
    assert checkered["swd_hole"] < blurred["swd_hole"]  # 242 against 284
    assert checkered["swd_levels"][0] < blurred["swd_levels"][0]
    assert checkered["checkerboard_hole"] > 10 * blurred["checkerboard_hole"]
    assert checkered["checkerboard_excess"] > 1.4 > 3 * blurred["checkerboard_excess"]
    assert checkered["stripes_excess"] < 0.2  # the stripe measure does not see it


def test_stripes_escape_the_checkerboard_measure_not_the_stripe_excess(textured):
    """Alternating columns added to the blur answer nothing to [[1, -1], [-1, 1]], so the
    checkerboard excess stays a blur's; the stripe excess catches them."""
    photos, holes = textured["photos"], textured["holes"]
    blurred = realism.measure(textured["blurred"], photos, holes)
    striped = realism.measure(textured["striped"], photos, holes)
    assert striped["checkerboard_hole"] == pytest.approx(blurred["checkerboard_hole"], rel=1e-9)
    assert striped["sharpness_hole"] > 2 * blurred["sharpness_hole"]
    assert striped["stripes_excess"] > 1.4 > 2 * blurred["stripes_excess"]  # 1.53 and 0.69


def test_the_colour_distance_sees_colours_the_photo_lacks_wherever_they_lie():
    """0 for the photo's own hole pixels in another order; a blur (the hole's mean colours)
    scores between; a fill as sharp as the photo but tinted, which SWD and the ratios barely
    notice, scores far; a photo without a hole is nan."""
    rng = np.random.default_rng(1)
    photo = np.clip(0.5 + 0.05 * rng.standard_normal((32, 32, 3)), 0, 1)
    hole = np.zeros((32, 32), bool)
    hole[8:24, 6:26] = True
    shuffled, blurred, tinted = photo.copy(), photo.copy(), photo.copy()
    shuffled[hole] = rng.permutation(photo[hole])
    blurred[hole] = photo[hole].mean(axis=0)
    tinted[hole] = np.clip(photo[hole] + [-0.2, 0.1, 0.1], 0, 1)  # cyan, as sharp (1.0)
    mean, per_photo = realism.colour_distance(
        [shuffled, blurred, tinted, photo], [photo] * 4, [hole] * 3 + [np.zeros_like(hole)])
    assert per_photo[0] == pytest.approx(0, abs=1e-9)
    assert 4 < per_photo[1] < per_photo[2] / 2  # 5.7 and 13.4 (CIELAB units)
    assert math.isnan(per_photo[3]) and mean == pytest.approx(np.mean(per_photo[:3]))
    # uint8 images give the same, to their rounding
    as_uint8 = [np.round(x * 255).astype(np.uint8) for x in (tinted, photo)]
    assert realism.colour_distance([as_uint8[0]], [as_uint8[1]], [hole])[0] == pytest.approx(
        per_photo[2], abs=0.2)
    measured = realism.measure([tinted], [photo], [hole])
    assert measured["colour_hole"] == pytest.approx(per_photo[2])
    assert measured["colour_per_photo"] == pytest.approx([per_photo[2]])


def test_the_colour_slope_says_which_colours_the_fills_carry_into_their_holes():
    """Twelve photos of random colours: the photos themselves and their holes' mean colours
    (a blur) follow every axis (1); a fill greyed on the green-magenta axis alone follows the
    others, and the column is that axis' 0; doubling a colour axis gives 2; one hole is nan."""
    rng = np.random.default_rng(2)
    photos = np.clip(rng.uniform(0.2, 0.8, (12, 1, 1, 3))
                     + 0.05 * rng.standard_normal((12, 24, 24, 3)), 0, 1)
    holes = np.zeros((12, 24, 24), bool)
    holes[:, 6:18, 4:20] = True
    blurred, greyed, doubled = photos.copy(), photos.copy(), photos.copy()
    rgb_to_opponent = np.array(list(realism.OPPONENT_AXES.values()))
    opponent_to_rgb = np.linalg.inv(rgb_to_opponent)
    for i in range(12):
        hole = holes[i]
        blurred[i][hole] = photos[i][hole].mean(axis=0)
        opponent = photos[i][hole] @ rgb_to_opponent.T
        flat, double = opponent.copy(), opponent.copy()
        flat[:, 2] = 0.0  # no green, no magenta
        double[:, 1] = 2 * (double[:, 1] - opponent[:, 1].mean()) + 2 * opponent[:, 1].mean()
        greyed[i][hole], doubled[i][hole] = flat @ opponent_to_rgb.T, double @ opponent_to_rgb.T
    for same in (photos, blurred):
        slopes = realism.colour_slopes(same, photos, holes)
        assert list(slopes) == ["luminance", "red-blue", "green-magenta"]
        assert list(slopes.values()) == pytest.approx([1, 1, 1])
    slopes = realism.colour_slopes(greyed, photos, holes)
    assert list(slopes.values()) == pytest.approx([1, 1, 0])
    assert realism.weaker_colour_axis(slopes) == pytest.approx(0)
    slopes = realism.colour_slopes(doubled, photos, holes)
    assert list(slopes.values()) == pytest.approx([1, 2, 1])
    assert realism.measure(doubled, photos, holes)["colour_slope"] == pytest.approx(2)
    # uint8 images give the same, to their rounding
    as_uint8 = [np.round(x * 255).astype(np.uint8) for x in (greyed, photos)]
    assert list(realism.colour_slopes(*as_uint8, holes).values()) == pytest.approx(
        [1, 1, 0], abs=0.01)
    # One hole (a photo without one does not count), or holes all of one colour: nan.
    one = realism.colour_slopes(photos[:2], photos[:2], [holes[0], np.zeros_like(holes[0])])
    assert all(math.isnan(v) for v in one.values())
    same_colour = realism.colour_slopes(photos[[0, 0]], photos[[0, 0]], holes[:2])
    assert all(math.isnan(v) for v in same_colour.values())
    assert math.isnan(realism.weaker_colour_axis(same_colour))


def test_the_floor_is_far_below_a_flat_fill():
    rng = np.random.default_rng(7)
    photos, holes = textures(rng, 32), rectangles(rng, 32)
    floor, levels = realism.swd_floor(photos, holes)
    assert len(levels) == 3 and floor == pytest.approx(np.mean(levels))
    gray_fill, _ = realism.swd(fill(photos, holes, 0.5), photos, holes)
    assert floor < 0.5 * gray_fill  # about 70 against 396
    # Two copies of a photo with the same hole: the halves' neighbourhoods are the same.
    assert realism.swd_floor(photos[[0, 0]], holes[[0, 0]]) == (0.0, [0.0, 0.0, 0.0])
    assert math.isnan(realism.swd_floor(photos[:1], holes[:1])[0])


def test_the_two_pixel_period_share_by_hand():
    """A pure checkerboard: 1; white noise: about 1/4 (one of four orthonormal components);
    a ramp or a constant: 0 (a constant has no variance: nan); blocks partly outside the region
    do not count, nor does a map's other region."""
    y, x = np.mgrid[:16, :16]
    board = np.where((y + x) % 2 == 0, 1.0, -1.0)
    everywhere = np.ones((1, 16, 16), bool)
    assert realism.period_two_share(board[None, ..., None], everywhere) == pytest.approx(1)
    noise = np.random.default_rng(0).normal(size=(8, 16, 16, 3))
    assert realism.period_two_share(noise, np.ones((8, 16, 16), bool)) == pytest.approx(
        0.25, abs=0.02)
    ramp = (x + 2.0 * y)[None, ..., None]
    assert realism.period_two_share(ramp, everywhere) == pytest.approx(0, abs=1e-12)
    assert np.isnan(realism.period_two_share(np.ones((1, 16, 16, 1)), everywhere))
    # A checkerboard in the left half of a ramp; the region the right half, then the 2x2
    # blocks straddling column 7-8 and those from column 7 on (odd start: none whole but 8+).
    mixed = np.where(x < 8, board, x + 2.0 * y)[None, ..., None]
    right = np.broadcast_to(x >= 8, (1, 16, 16))
    assert realism.period_two_share(mixed, right) == pytest.approx(0, abs=1e-12)
    assert realism.period_two_share(mixed, np.broadcast_to(x >= 7, (1, 16, 16))) == \
        pytest.approx(0, abs=1e-12)
    assert realism.period_two_share(mixed, ~right) == pytest.approx(1)
    checker, total = realism.period_two_sums(board[None, ..., None], everywhere)
    assert (checker, total) == pytest.approx((256, 256))
    assert np.isnan(realism.period_two_share(board[None, ..., None], ~everywhere))


# ---------------------------------------------------------------------------------------------
# Photos of different sizes (evaluate.py --full-size): measured one by one, pooled


def test_photos_of_different_sizes_are_measured_one_by_one_and_pooled(textured):
    """A 64x64 photo and a 48x80 one: a set against itself scores as photos do; the ratios
    pool each photo's windows (the same as measuring the two apart and adding their sums);
    the pyramid levels are those both photos have (48 px: 48, 24), and a blur of both is far
    from them and less sharp."""
    rng = np.random.default_rng(1)
    photos = [textured["photos"][0], rng.uniform(size=(48, 80, 3))]
    holes = [textured["holes"][0], np.zeros((48, 80), bool)]
    holes[1][10:40, 20:60] = True
    measured = realism.measure(photos, photos, holes)
    assert measured["swd_hole"] == 0.0 and len(measured["swd_levels"]) == 2
    assert measured["sharpness_hole"] == measured["checkerboard_hole"] == 1.0
    blurred = [np.where(h[..., None], cv2.GaussianBlur(p, (0, 0), 1.5), p)
               for p, h in zip(photos, holes)]
    far = realism.measure(blurred, photos, holes)
    assert far["swd_hole"] > 0 and far["sharpness_hole"] < 0.2
    each = [realism.hole_ratio(realism.gradient_magnitude, [b], [p], [h])
            for b, p, h in zip(blurred, photos, holes)]
    assert far["sharpness_per_photo"] == pytest.approx([ratio for ratio, _ in each])
    sums = [(realism.window_pixels([image], [h])[0]) for image, h in ((blurred[0], holes[0]),
                                                                      (blurred[1], holes[1]))]
    ours = sum(realism.gradient_magnitude(*pixels).sum() for pixels in sums)
    theirs = sum(realism.gradient_magnitude(*realism.window_pixels([p], [h])[0]).sum()
                 for p, h in zip(photos, holes))
    assert far["sharpness_hole"] == pytest.approx(ours / theirs)
    descriptors = realism.hole_descriptors(photos, holes)
    assert len(descriptors) == 2 and all(d.shape[1:] == (3, 7, 7) for d in descriptors)
