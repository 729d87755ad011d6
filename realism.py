"""Measures of how photo-like the fills of holes are, needing no downloaded weights.

The distortion measures of evaluate.py (L1, L2, PSNR, SSIM) reward the blurred average of the
plausible fills; the adversarial phase trades a little of them for realistic texture. These say
whether it bought any, each comparing the completions with the photos inside the holes only:

- SWD: the sliced Wasserstein distance between the two sets of 7x7 neighbourhoods of their
  Laplacian pyramids (ProGAN's, Karras et al. 2018), times 1e3; lower is better, 0 for the
  photos themselves. `swd_floor`, two disjoint halves of the photos against each other, gives
  the scale of the distance between two sets of real photos.
- sharpness: the mean gradient magnitude of the completions over the photos'; 1 is as sharp
  as the photos, below 1 blur, above 1 noise or artefacts.
- checkerboard: the same ratio for the two-pixel period, where transposed convolutions leave
  their artefacts; checkerboard excess = checkerboard / sharpness, about 1 for photo-like
  texture, below 1 for a blur, above 1 for energy in excess at that period. SWD alone is
  fooled by such a pattern (it can lower SWD), hence the excess beside it.
- stripes: the same ratio for stripes of two-pixel period, columns or rows alternating, which
  the checkerboard's [[1, -1], [-1, 1]] does not see: the second difference [1, -2, 1] across,
  smoothed down by [1, 2, 1] / 4, plus the same turned a quarter (a checkerboard answers
  neither); stripe excess = stripes / sharpness, read as the checkerboard excess.
- colour distance: how far the colours of each fill are from the photo's own colours in its
  hole, wherever they lie: the sliced Wasserstein distance between the two sets of hole pixels
  in CIELAB (in units of L*, a* and b*: a distance of about 1 is the smallest difference
  people see), averaged over the photos; lower is better, 0 for the photo itself. The other
  measures compare texture with the photos' texture, not colours with the scene's: a fill of
  colour blotches the scene does not have can pass them, not this. A blur keeps the hole's
  colours but narrows their spread, and scores between.
- colour slope: whether the fills carry each scene's colour into its hole, over the whole set.
  Each hole's mean colour, the fill's and the photo's, is taken on three opponent axes
  (luminance (R + G + B) / 3, red-blue (R - B) / 2, green-magenta (2G - R - B) / 4); on each
  axis, the least-squares slope of the fills' means on the photos' means, across the holes,
  says how much of the photos' variation the fills follow: 1 all of it (as a blur does: it
  keeps each hole's mean), 0 none (every hole gets the same colour), above 1 an exaggeration.
  The column is the slope of the two colour axes that is further from 1 (the per-axis slopes
  are in metrics.json); a network that greys green grass and magenta flowers alike scores
  low here while its colour distance, dominated by the large red-blue spread of daylight
  scenes, barely moves.

Images: lists (or stacks) of (H, W, 3) uint8 arrays or floats in [0, 1]; holes: bool (H, W)
each. Images of different sizes (photos at their own resolution) are measured one by one and
pooled: the neighbourhoods of each pyramid level (as many levels as the smallest image has),
the windows of the ratios.
"""
import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MIN_SIZE = 16  # the smallest level's shorter side: 128 px gives levels of 128, 64, 32, 16
NHOOD = 7  # the neighbourhoods' side, as ProGAN's
PER_IMAGE = 128  # neighbourhoods drawn per image and level, at most
DIRECTIONS = 512  # random directions of the sliced Wasserstein distance
EPSILON = 1e-8  # a channel's std below this is a flat fill's: its values become zeros
SCALE = 1e3  # SWD is reported times this, as ProGAN does
COLUMNS = {"swd_hole": "SWD hole", "sharpness_hole": "sharpness",  # the measures of a set
           "checkerboard_hole": "checkerboard", "checkerboard_excess": "checker excess",
           "stripes_hole": "stripes", "stripes_excess": "stripe excess",
           "colour_hole": "colour distance", "colour_slope": "colour slope"}
COLOUR_DIRECTIONS = 64  # random directions of the colour distance (3-D: 64 are plenty)
OPPONENT_AXES = {"luminance": (1 / 3, 1 / 3, 1 / 3), "red-blue": (1 / 2, 0, -1 / 2),
                 "green-magenta": (-1 / 4, 1 / 2, -1 / 4)}  # of R, G, B
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # a 2x2 window: top-left, top-right, bottom-...
SQUARE = tuple((dy, dx) for dy in range(3) for dx in range(3))  # a 3x3 window, row by row


def as_images(images):
    """A stack (N, H, W, C) of float64 in [0, 1]."""
    stack = np.asarray(images)
    return stack / 255.0 if stack.dtype == np.uint8 else stack.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Laplacian pyramid of (..., H, W, C) arrays: OpenCV's pyrDown and pyrUp, which filter with
# the binomial [1, 4, 6, 4, 1] / 16 along H and W, reflecting at the edges without repeating
# them (d c b | a b c d | c b a)


def each_image(function, x):
    """function applied to each (H, W, C) image of an (..., H, W, C) array (OpenCV drops a
    channel axis of 1: restored)."""
    images = [function(np.ascontiguousarray(image)) for image in x.reshape(-1, *x.shape[-3:])]
    height, width = images[0].shape[:2]
    return np.stack(images).reshape(*x.shape[:-3], height, width, x.shape[-1])


def pyr_down(x):
    """Filter, then keep the even pixels: an odd side n becomes (n + 1) / 2."""
    return each_image(lambda image: cv2.pyrDown(image, borderType=cv2.BORDER_REFLECT_101), x)


def pyr_up(x, shape):
    """Zeros between the pixels, filter, times 4; of side `shape` (H, W): twice x's, less one
    where `shape` is odd."""
    return each_image(lambda image: cv2.pyrUp(image, dstsize=(shape[1], shape[0]),
                                              borderType=cv2.BORDER_REFLECT_101), x)


def level_count(shape, min_size=MIN_SIZE):
    """How many levels until the shorter side, halved (rounding down), would fall below
    min_size: 4 for 128 px, 3 for 64, 2 for 32, 1 below 32."""
    side, count = min(shape[:2]), 1
    while side // 2 >= min_size:
        side, count = side // 2, count + 1
    return count


def gaussian_pyramid(x, count):
    levels = [x]
    for _ in range(count - 1):
        levels.append(pyr_down(levels[-1]))
    return levels


def laplacian_pyramid(image, min_size=MIN_SIZE):
    """Levels of an (..., H, W, C) array, finest first: each gaussian level minus the next one
    brought up, the last the smallest gaussian level; adding them up from the last
    (collapse) gives the image back."""
    image = np.asarray(image, np.float64)
    gauss = gaussian_pyramid(image, level_count(image.shape[-3:-1], min_size))
    return [fine - pyr_up(coarse, fine.shape[-3:-1]) for fine, coarse in zip(gauss, gauss[1:])
            ] + [gauss[-1]]


def collapse(levels):
    image = levels[-1]
    for level in reversed(levels[:-1]):
        image = level + pyr_up(image, level.shape[-3:-1])
    return image


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein distance between the hole neighbourhoods


def centres(value, rng):
    """Up to PER_IMAGE positions (ys, xs) where a downsampled hole mask is above 0.5 (its
    highest pixel when none is: a hole too small for the level)."""
    inside = np.flatnonzero(value > 0.5)
    if not len(inside):
        inside = np.array([np.argmax(value)])
    return np.unravel_index(rng.choice(inside, min(PER_IMAGE, len(inside)), replace=False),
                            value.shape)


def one_size(images):
    """Whether the images (or holes) all have the same height and width."""
    return len({np.shape(image)[:2] for image in images}) <= 1


def hole_descriptors(images, holes, seed=0):
    """Per pyramid level, the (M, 3, 7, 7) neighbourhoods centred in the holes, the hole of a
    level being the mask pyramid-downsampled as the image. The centres depend on the holes and
    the seed only: completions and photos of the same holes give neighbourhoods at the same
    places. Images of different sizes: each image's own (its centres drawn with the seed and
    its index), pooled level by level over the levels every image has."""
    if not one_size(holes):
        each = [hole_descriptors([image], [hole], [seed, index])
                for index, (image, hole) in enumerate(zip(images, holes))]
        return [np.concatenate([levels[k] for levels in each])
                for k in range(min(len(levels) for levels in each))]
    images, rng = as_images(images), np.random.default_rng(seed)
    masks = gaussian_pyramid(np.asarray(holes, np.float64)[..., None],
                             level_count(images.shape[1:3]))
    pad = NHOOD // 2
    descriptors = []
    for level, mask in zip(laplacian_pyramid(images), masks):
        picked = [centres(m[..., 0], rng) for m in mask]
        index = np.concatenate([np.full(len(ys), i) for i, (ys, _) in enumerate(picked)])
        ys, xs = (np.concatenate(axis) for axis in zip(*picked))
        padded = np.pad(level, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
        windows = sliding_window_view(padded, (NHOOD, NHOOD), axis=(1, 2))  # N, H, W, C, 7, 7
        descriptors.append(windows[index, ys, xs])
    return descriptors


def statistics(descriptors):
    """Each colour channel's mean and std over a set of (M, 3, 7, 7) neighbourhoods."""
    return (descriptors.mean(axis=(0, 2, 3), keepdims=True),
            descriptors.std(axis=(0, 2, 3), keepdims=True))


def normalised(descriptors, mean, std):
    """(M, 3, 7, 7) neighbourhoods, each colour channel less `mean` over `std` (the photos'),
    flattened; a channel of std 0 becomes zeros.

    ProGAN's finalize_descriptors normalises each set by its own statistics. Here both sets
    take the photos': by its own, a flat fill's faint residue is blown up to the photos'
    contrast, and the mean-pixel fill of random black-and-white blocks then scores below two
    halves of the photos themselves. With the photos' statistics a blur keeps its low
    contrast, which is what tells it from the photos."""
    std = np.broadcast_to(std, descriptors.shape)
    scaled = np.divide(descriptors - mean, std, out=np.zeros(descriptors.shape),
                       where=std > EPSILON)
    return scaled.reshape(len(descriptors), -1)


def projections(descriptors, directions=DIRECTIONS, seed=0):
    """The rows of (M, D) descriptors projected on `directions` random unit vectors of the seed,
    each projection sorted: (directions, M), in float32 (the sort, the costly part, then takes
    half the time)."""
    descriptors = np.asarray(descriptors, np.float32)
    unit = np.random.default_rng(seed).standard_normal((descriptors.shape[1], directions))
    unit /= np.linalg.norm(unit, axis=0)
    return np.sort(unit.T.astype(np.float32) @ descriptors.T, axis=1)


def at_quantiles(ordered, count):
    """Sorted rows (D, n) linearly interpolated at the quantiles (k + 0.5) / count."""
    n = ordered.shape[1]
    position = np.clip((np.arange(count) + 0.5) / count * n - 0.5, 0, n - 1)
    low = np.floor(position).astype(int)
    high, fraction = np.minimum(low + 1, n - 1), position - low
    return ordered[:, low] * (1 - fraction) + ordered[:, high] * fraction


def wasserstein_1d(first, second):
    """The mean over directions of the 1-D Wasserstein distance between sorted projections:
    the mean absolute difference of the sorted values, sets of different sizes compared at the
    smaller one's quantiles (the larger interpolated there)."""
    small, large = sorted((first, second), key=lambda ordered: ordered.shape[1])
    if large.shape[1] != small.shape[1]:
        large = at_quantiles(large, small.shape[1])
    return float(np.mean(np.abs(small - large), dtype=np.float64))


def sliced_wasserstein(a, b, directions=DIRECTIONS, seed=0):
    """The sliced Wasserstein distance between the rows of a (M, D) and b (N, D)."""
    return wasserstein_1d(projections(a, directions, seed), projections(b, directions, seed))


def photo_reference(photos, holes, seed=0):
    """Per level, what SWD needs of the photos: their neighbourhoods' statistics (mean, std)
    and sorted projections; computed once for every method."""
    levels = []
    for descriptors in hole_descriptors(photos, holes, seed):
        mean, std = statistics(descriptors)
        levels.append((mean, std, projections(normalised(descriptors, mean, std), seed=seed)))
    return levels


def swd_against(images, holes, photos_reference, seed=0):
    """(mean over levels, [per level]), both times SCALE: the images' hole neighbourhoods,
    normalised as the photos' were, against the photos' (a photo_reference())."""
    levels = [SCALE * wasserstein_1d(projections(normalised(d, mean, std), seed=seed), ordered)
              for d, (mean, std, ordered) in zip(hole_descriptors(images, holes, seed),
                                                 photos_reference)]
    return float(np.mean(levels)), levels


def swd(completions, photos, holes, seed=0, reference=None):
    """The completions' hole neighbourhoods against the photos' at the same places:
    (SWD times 1e3, [per level, times 1e3]). Lower is better. reference: the photos'
    photo_reference() with this seed, when already computed."""
    if reference is None:
        reference = photo_reference(photos, holes, seed)
    return swd_against(completions, holes, reference, seed)


def swd_floor(photos, holes, seed=0):
    """The even-numbered photos' hole neighbourhoods against the odd-numbered ones': how far
    apart two sets of real photos are, (SWD, [per level]); (nan, []) for fewer than 2 photos.
    Not a bound for swd(): a completion keeps its photo's surroundings, which fill most of the
    coarse levels' neighbourhoods, and its neighbourhoods are placed as the photo's; the halves
    differ in both, and have half the neighbourhoods each (more sampling noise)."""
    if len(photos) < 2:
        return float("nan"), []
    return swd_against(photos[0::2], holes[0::2],
                       photo_reference(photos[1::2], holes[1::2], seed), seed)


# ---------------------------------------------------------------------------------------------
# Sharpness, checkerboard and stripes: windows lying entirely inside the hole


def window_pixels(images, holes, offsets=CORNERS):
    """The pixels at `offsets` ((dy, dx) pairs) of every window whose pixels all lie inside the
    holes, each (K, C), in the order of `offsets`; and the image of each window (K,)."""
    if not one_size(holes):
        each = [window_pixels([image], [hole], offsets) for image, hole in zip(images, holes)]
        return (tuple(np.concatenate([pixels[k] for pixels, _ in each])
                      for k in range(len(offsets))),
                np.concatenate([np.full(len(n), i) for i, (_, n) in enumerate(each)]))
    holes = np.asarray(holes, bool)
    height = holes.shape[1] - max(dy for dy, _ in offsets)
    width = holes.shape[2] - max(dx for _, dx in offsets)
    inside = np.logical_and.reduce([holes[:, dy:dy + height, dx:dx + width]
                                    for dy, dx in offsets])
    n, y, x = np.nonzero(inside)
    images = np.asarray(images)
    return tuple(as_images(images[n, y + dy, x + dx]) for dy, dx in offsets), n


def gradient_magnitude(top_left, top_right, bottom_left, bottom_right):
    """sqrt(dx^2 + dy^2) of the forward differences at the window's top-left pixel."""
    return np.sqrt((top_right - top_left) ** 2 + (bottom_left - top_left) ** 2)


def checker_response(top_left, top_right, bottom_left, bottom_right):
    """|[[1, -1], [-1, 1]]| on the window: the two-pixel period, where transposed convolutions
    leave their artefacts."""
    return np.abs(top_left - top_right - bottom_left + bottom_right)


def stripe_response(*window):
    """On a 3x3 window (its nine pixels row by row): |[1, -2, 1] across, smoothed down by
    [1, 2, 1] / 4| plus the same turned a quarter. Alternating columns answer the first,
    alternating rows the second; a checkerboard (cancelled by the smoothing) and any ramp
    neither."""
    rows = [window[3 * y:3 * y + 3] for y in range(3)]
    columns = [window[x::3] for x in range(3)]
    smooth = (0.25, 0.5, 0.25)

    def second_difference(before, here, after):
        return before - 2 * here + after
    across = sum(w * second_difference(*row) for w, row in zip(smooth, rows))
    down = sum(w * second_difference(*column) for w, column in zip(smooth, columns))
    return np.abs(across) + np.abs(down)


def hole_ratio(response, completions, photos, holes, offsets=CORNERS):
    """The completions' response summed over the windows (of `offsets`) inside the holes and
    the channels, over the photos' (the ratio of the means: the windows are the same): (pooled
    over the set, [per photo]). A photo whose own sum is 0 (flat in its hole, or a hole holding
    no whole window) has the ratio nan, and still counts in the pooled ratio."""
    sums = []
    for images in (completions, photos):
        pixels, image = window_pixels(images, holes, offsets)
        sums.append(np.bincount(image, response(*pixels).sum(axis=1), minlength=len(holes)))
    ours, theirs = sums
    per_photo = np.divide(ours, theirs, out=np.full(len(ours), np.nan), where=theirs > 0)
    pooled = ours.sum() / theirs.sum() if theirs.sum() > 0 else float("nan")
    return float(pooled), per_photo.tolist()


def sharpness(completions, photos, holes):
    """Mean gradient magnitude in the holes, completions over photos: (pooled, [per photo])."""
    return hole_ratio(gradient_magnitude, completions, photos, holes)


def checkerboard(completions, photos, holes):
    """Mean two-pixel-period response in the holes, completions over photos: (pooled,
    [per photo])."""
    return hole_ratio(checker_response, completions, photos, holes)


def stripes(completions, photos, holes):
    """Mean response to two-pixel stripes in the holes, completions over photos: (pooled,
    [per photo])."""
    return hole_ratio(stripe_response, completions, photos, holes, SQUARE)


def lab(pixels):
    """(K, 3) RGB in [0, 1] -> CIELAB (L* in [0, 100], a* and b* in about [-128, 127]):
    OpenCV's conversion, for sRGB under D65."""
    return cv2.cvtColor(np.asarray(pixels, np.float32)[None], cv2.COLOR_RGB2Lab)[0]


def colour_distance(completions, photos, holes, seed=0):
    """The sliced Wasserstein distance between each completion's and its photo's hole pixels
    in CIELAB: (mean over the photos, [per photo]); nan for a photo without a hole."""
    per_photo = []
    for completion, photo, hole in zip(completions, photos, holes):
        hole = np.asarray(hole, bool)
        if not hole.any():
            per_photo.append(float("nan"))
            continue
        fill, own = (lab(as_images(image)[hole]) for image in (completion, photo))
        per_photo.append(sliced_wasserstein(fill, own, COLOUR_DIRECTIONS, seed))
    found = [value for value in per_photo if not np.isnan(value)]
    return (float(np.mean(found)) if found else float("nan")), per_photo


def colour_slopes(completions, photos, holes):
    """{axis: slope} for OPPONENT_AXES: the least-squares slope, across the holes, of the
    fills' mean colours on the photos' (both less their means over the set). nan on an axis
    along which the photos' holes do not vary, and on every axis with fewer than two holes."""
    pairs = [(as_images(completion)[hole].mean(axis=0), as_images(photo)[hole].mean(axis=0))
             for completion, photo, hole in zip(completions, photos, map(np.asarray, holes))
             if hole.any()]
    if len(pairs) < 2:
        return {axis: float("nan") for axis in OPPONENT_AXES}
    axes = np.array(list(OPPONENT_AXES.values())).T
    fills, own = (np.array(means) @ axes for means in zip(*pairs))
    fills, own = fills - fills.mean(axis=0), own - own.mean(axis=0)
    spread = (own * own).sum(axis=0)
    # To a millionth, and never -0.0: the same fill in every hole is 0, not -1e-17.
    return {axis: round(float((own[:, i] * fills[:, i]).sum() / spread[i]), 6) + 0.0
            if spread[i] > EPSILON else float("nan") for i, axis in enumerate(OPPONENT_AXES)}


def weaker_colour_axis(slopes):
    """Of the red-blue and green-magenta slopes, the one further from 1 (nan if either is)."""
    pair = (slopes["red-blue"], slopes["green-magenta"])
    return float("nan") if np.isnan(pair).any() else max(pair, key=lambda s: abs(s - 1))


def measure(completions, photos, holes, seed=0, reference=None):
    """Every realism measure of a set of completions: COLUMNS, the SWD per level, the
    per-photo ratios and colour distances, and the slope of each colour axis ("colour_slopes").
    reference: as swd's. The excess is nan for a flat fill (sharpness 0)."""
    swd_hole, swd_levels = swd(completions, photos, holes, seed, reference)
    sharp, sharp_per_photo = sharpness(completions, photos, holes)
    checker, checker_per_photo = checkerboard(completions, photos, holes)
    striped, stripes_per_photo = stripes(completions, photos, holes)
    colour, colour_per_photo = colour_distance(completions, photos, holes, seed)
    slopes = colour_slopes(completions, photos, holes)
    return dict(colour_slope=weaker_colour_axis(slopes), colour_slopes=slopes,
                swd_hole=swd_hole, sharpness_hole=sharp, checkerboard_hole=checker,
                checkerboard_excess=checker / sharp if sharp > 0 else float("nan"),
                stripes_hole=striped, stripes_excess=striped / sharp if sharp > 0 else float("nan"),
                colour_hole=colour, swd_levels=swd_levels, sharpness_per_photo=sharp_per_photo,
                checkerboard_per_photo=checker_per_photo, stripes_per_photo=stripes_per_photo,
                colour_per_photo=colour_per_photo)


# ---------------------------------------------------------------------------------------------
# Where a network makes the two-pixel period: its share of a feature map's variance


def period_two_sums(maps, region):
    """(two-pixel-period energy, total energy) of feature maps over the 2x2 blocks at even
    positions that lie entirely in `region`: the sum of (a - b - c + d)^2 / 4 over the blocks
    and channels (the [[1, -1], [-1, 1]] component of each block, in an orthonormal split of
    its four pixels), and the sum of squared deviations of those blocks' pixels from each map's
    mean over them (per image and channel). maps: (N, H, W, C); region: (N, H, W) bool."""
    maps = np.asarray(maps, np.float64)
    region = np.asarray(region, bool)
    height, width = maps.shape[1] // 2 * 2, maps.shape[2] // 2 * 2
    corners = [maps[:, dy:height:2, dx:width:2] for dy in (0, 1) for dx in (0, 1)]
    inside = np.logical_and.reduce([region[:, dy:height:2, dx:width:2]
                                    for dy in (0, 1) for dx in (0, 1)])
    weights = inside[..., None].astype(np.float64)
    count = np.maximum(4 * weights.sum(axis=(1, 2), keepdims=True), 1)
    mean = sum((c * weights).sum(axis=(1, 2), keepdims=True) for c in corners) / count
    total = sum((((c - mean) ** 2) * weights).sum() for c in corners)
    top_left, top_right, bottom_left, bottom_right = corners
    checker = (((top_left - top_right - bottom_left + bottom_right) ** 2 / 4) * weights).sum()
    return float(checker), float(total)


def period_two_share(maps, region):
    """The share of feature maps' variance at the two-pixel period (period_two_sums): 0 for
    smooth maps, about 0.25 for white noise, 1 for a pure checkerboard; nan when the region
    holds no block, or only flat ones."""
    checker, total = period_two_sums(maps, region)
    return checker / total if total > 0 else float("nan")
