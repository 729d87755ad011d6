"""Shrink a photo collection once, so that training reads small files instead of large ones.

    python prepare.py --data-dir /usr/share/backgrounds /usr/share/wallpapers --out prepared/wallpapers --image-size 128
    python train.py --data-dir prepared/wallpapers --image-size 128 ...

Each training crop resizes its photo's shorter edge to a random size in [S, 1.5 S] (S: the
--image-size), so a photo larger than that is decoded and shrunk again for every crop it gives:
a multi-megapixel PNG costs the input pipeline far more than the crop. This writes each photo,
upright and in RGB, with its shorter edge shrunk to 1.5 S (never enlarged), as a lossless PNG in
a folder tree that mirrors the input folders; that folder is then an ordinary --data-dir. Photos
already written are skipped, so an interrupted run goes on where it stopped. Undecodable files
are skipped with one warning line each.
"""
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from PIL import Image

import config as cfg
import data_loader
import utils


def target(path, data_dirs, out):
    """out/<index>_<folder name>/<path relative to its folder>.png (photo.jpg: photo.jpg.png,
    so that photo.jpg and photo.png stay two files)"""
    for index, folder in enumerate(data_dirs):
        relative = os.path.relpath(path, folder)
        if not relative.startswith(os.pardir):
            name = f"{index}_{os.path.basename(os.path.normpath(folder)) or 'root'}"
            return os.path.join(out, name, relative + ".png")
    raise ValueError(f"{path} is in none of {data_dirs}")


def intact(path):
    """Whether a PNG written earlier reads back whole (a disk error can truncate a file that
    was renamed into place)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # any decoder failure means: write it again
        return False


def shrink(job):
    """Write one photo shrunk to shorter edge `side`; returns (path, bytes read, bytes written,
    None) or (path, 0, 0, the reason it could not be read)."""
    source, destination, side = job
    if os.path.exists(destination) and intact(destination):
        return source, os.path.getsize(source), os.path.getsize(destination), None
    try:
        image = Image.fromarray(data_loader.load_rgb(source, side))
    except Exception as error:  # any decoder failure means: skip this file
        return source, 0, 0, f"cannot decode it ({type(error).__name__}: {error})"
    scale = side / min(image.size)
    if scale < 1:
        size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS, reducing_gap=3.0)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = destination + ".partial"
    image.save(partial, format="PNG", compress_level=1)
    os.replace(partial, destination)
    return source, os.path.getsize(source), os.path.getsize(destination), None


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", nargs="+", required=True, metavar="DIR",
                        help="folder(s) of photos, searched recursively (as train.py reads them)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the folder to write; give it to train.py as --data-dir")
    cfg.add_flag(parser, "image_size", default=256,
                 help="the --image-size you will train with: shorter edges are shrunk to 1.5"
                      " times it (default: 256, the paper's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="processes decoding in parallel (default: one per CPU core)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if not cfg.multiple_of_4(args.image_size):
            raise cfg.ConfigError(f"--image-size: expected a positive multiple of 4, got"
                                  f" {args.image_size}")
        if args.workers < 1:
            raise utils.UserError(f"--workers {args.workers}: expected at least 1")
        files = data_loader.find_images(args.data_dir)
        out = os.path.abspath(args.out)
        if any((out + os.sep).startswith(os.path.abspath(f) + os.sep) for f in args.data_dir):
            raise utils.UserError(f"--out {args.out}: inside a --data-dir; choose another folder")
    except utils.UserError as error:
        return utils.print_error(error)
    side = args.image_size * 3 // 2
    jobs = [(path, target(path, args.data_dir, args.out), side) for path in files]
    start, read, written, done = time.perf_counter(), 0, 0, 0
    with ProcessPoolExecutor(args.workers) as pool:
        for path, size_in, size_out, problem in pool.map(shrink, jobs, chunksize=4):
            if problem:
                data_loader.BAD_FILES.report(path, problem)
                continue
            read, written, done = read + size_in, written + size_out, done + 1
    print(f"Prepared {done} photos (shorter edge at most {side} px) in"
          f" {time.perf_counter() - start:.0f} s: {read / 1e6:.0f} MB -> {written / 1e6:.0f} MB"
          f" in {args.out}")
    skipped = len(files) - done
    if skipped:
        print(f"Skipped {skipped} undecodable file(s): see the warnings above")
    if not done:
        return 2
    print(f"Train on them: python train.py --data-dir {args.out} --image-size {args.image_size}"
          " ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
