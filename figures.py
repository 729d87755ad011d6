"""The figures of a trained session, as in docs/results.md: its held-out curve, and its
completions of held-out photos at chosen iterations side by side.

    python figures.py --session wallpapers --iterations 3000 10000 --out figures/
    python figures.py --model pretrained/wallpapers --data-dir prepared/heldout --rows 0,3,7
    python figures.py --model pretrained/wallpapers pretrained/wallpapers-gan \
        --data-dir prepared/heldout --rows 0,3,7

Writes OUT/NAME_eval.png (the held-out metrics train.py recorded in results/NAME/eval.csv,
against iterations, with the phase boundaries and Telea's line) and OUT/NAME_completions.jpg: a
row per held-out photo (the photos and holes train.py --eval-every and evaluate.py score), the
columns masked input | the network of each iteration | the last one (or --blend N) with the
paper's blending | ground truth. With --model DIR [DIR ...] (exports, such as the pretrained
models), it writes OUT/DIRNAME_model.jpg instead (the names of all joined by "_" for several):
masked input | each export's network | the last one with the paper's blending | ground truth,
for the photos of --data-dir. Beside each grid, the same columns with the holes up close
(_crops.jpg: the hole and 8 pixels around it, enlarged twice by repeating pixels), where blur
and two-pixel patterns show.
"""
import os
import sys

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)

import complete  # noqa: E402
import config as cfg  # noqa: E402
import data_loader  # noqa: E402
import evaluate  # noqa: E402
import exports  # noqa: E402
import report  # noqa: E402
import session  # noqa: E402
import utils  # noqa: E402

HEADER = 22  # pixels above the grid for the column titles
GAP = 2  # white pixels between the cells
ROWS = 6  # held-out photos shown by default


def parse_rows(text):
    """--rows "0,3,7" as [0, 3, 7]; None for the default."""
    if text is None:
        return None
    try:
        rows = [int(r) for r in text.split(",")]
    except ValueError:
        rows = [-1]
    if min(rows) < 0:
        raise utils.UserError(f"--rows {text}: expected photo numbers such as 0,3,7")
    return rows


def phase_of(iteration, config):
    return 1 if iteration <= config.tc else 2 if iteration <= config.tc + config.td else 3


def held_out_files(config, data_dir):
    """The photos train.py evaluates during training: --val-dir, else its validation split."""
    if data_dir:
        return data_loader.find_images(data_dir)
    if config.val_dir:
        return data_loader.find_images([config.val_dir], "--val-dir")
    return data_loader.split_validation(data_loader.photo_files(config.data_dir), config.seed,
                                        config.val_split)[1]


def default_iterations(name, config):
    """The end of phase 1 (when saved, and not the newest) and the newest checkpoint."""
    saved = [session.checkpoint_number(p) for p in session.all_checkpoints(session.folder(name))]
    if not saved:
        raise session.SessionError(f"--session {name}: no checkpoint yet; train longer first")
    newest = max(saved)
    return [config.tc, newest] if config.tc in saved and config.tc < newest else [newest]


def completions(name, iterations, items, mean_pixel):
    """{iteration: [completed photo per item]}, each iteration's network loaded in turn."""
    done = {}
    for iteration in iterations:
        network, _, _ = session.load_completion_network(name, iteration)
        done[iteration] = [complete.complete(network, item["masked"], item["hole"],
                                             mean_pixel)[0] for item in items]
    return done


def grid_figure(path, items, done, config, blended=None, titles=None):
    """The grid with a title above each column, pixel for pixel (no resampling), and beside it
    (PATH_crops, of the same format) the same with the holes up close; `blended`: the iteration whose
    completions the blend column shows (default: the last); `titles`: the columns' titles by
    key of `done` (default: "iteration N (phase P)"). Returns the two paths."""
    last = max(done) if blended is None else blended
    titles = titles or {n: f"iteration {n} (phase {phase_of(n, config)})" for n in done}
    columns = [("masked input", [np.where(i["hole"][..., None], np.uint8(255), i["image"])
                                 for i in items])]
    columns += [(titles[n], done[n]) for n in sorted(done)]
    columns += [(f"{titles[last].split(' (')[0]} + blend",
                 [complete.poisson_blend(i["masked"], c, i["hole"])
                  for i, c in zip(items, done[last])]),
                ("ground truth", [i["image"] for i in items])]
    root, extension = os.path.splitext(path)
    crops = f"{root}_crops{extension}"
    utils.titled_grid(path, columns, GAP, HEADER)
    utils.titled_grid(crops, evaluate.close_ups(columns, [i["hole"] for i in items]), GAP,
                      HEADER)
    return [path, crops]


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--session", help="a session trained by train.py")
    source.add_argument("--model", metavar="DIR", nargs="+",
                        help="instead of a session: exports (complete.py --export, convert.py,"
                             " or the pretrained models), a column each; needs --data-dir")
    parser.add_argument("--iterations", type=int, nargs="+", metavar="N",
                        help="the checkpoints to show (default: the end of phase 1, when it was"
                             " saved, and the newest)")
    parser.add_argument("--rows", metavar="I,J,...",
                        help="which held-out photos, by their place in sorted order (default:"
                             f" the first {ROWS})")
    parser.add_argument("--data-dir", nargs="+", metavar="DIR",
                        help="other held-out photos (default: the session's --val-dir, else its"
                             " validation photos)")
    parser.add_argument("--blend", type=int, metavar="N",
                        help="which of the iterations the blended column shows (default: the"
                             " last)")
    parser.add_argument("--out", default="figures", metavar="DIR",
                        help="folder for the figures (default: figures)")
    args = parser.parse_args(argv)
    if args.model and not args.data_dir:
        parser.error("--model needs --data-dir, the held-out photos to complete")
    if args.model and (args.iterations or args.blend is not None):
        parser.error("--iterations and --blend apply only to --session NAME")
    return args


def model_figure(args, rows):
    """OUT/DIRNAME_model.jpg (and its close-ups) for --model DIR [DIR ...]: masked | each
    network | the last + blend | ground truth. The holes are those of the first export's
    settings; every export must complete images of its size."""
    names = [os.path.basename(os.path.normpath(model)) for model in args.model]
    loaded = [exports.read(model) for model in args.model]
    config = loaded[0][2]
    for model, (_, _, other) in zip(args.model[1:], loaded[1:]):
        if other.image_size != config.image_size:
            raise utils.UserError(f"--model {model}: trained at {other.image_size} px, not"
                                  f" {config.image_size} px as {args.model[0]}")
    items = held_out_items(config, args.data_dir, rows, loaded[0][1])
    done = {k: [complete.complete(network, item["masked"], item["hole"], mean_pixel)[0]
                for item in items] for k, (network, mean_pixel, _) in enumerate(loaded)}
    utils.output_folder(args.out, "--out")
    path = os.path.join(args.out, f"{'_'.join(names)}_model.jpg")
    titles = {0: "model"} if len(names) == 1 else dict(enumerate(names))
    return grid_figure(path, items, done, config, titles=titles)


def held_out_items(config, data_dir, rows, mean_pixel):
    """The held-out photos with evaluate.py's seeded holes; those of `rows`, else the first."""
    files = held_out_files(config, data_dir)
    items = evaluate.held_out(files, config, max(rows or [ROWS - 1]) + 1, config.hole_shape,
                              evaluate.DEFAULT_SEED, mean_pixel)
    if not items or (rows and len(items) <= max(rows)):
        raise data_loader.DataError(f"--rows {','.join(map(str, rows))}: only {len(items)}"
                                    " held-out photos decode" if rows else
                                    "no held-out photo decodes")
    return [items[r] for r in rows] if rows else items


def listed(paths):
    return ", ".join(paths[:-1]) + " and " + paths[-1] if len(paths) > 1 else paths[0]


def main(argv=None):
    args = parse_args(argv)
    try:
        rows = parse_rows(args.rows)
        if args.model:
            print("Wrote " + listed(model_figure(args, rows)))
            return 0
        _, mean_pixel, config = session.load_completion_network(args.session)
        iterations = args.iterations or default_iterations(args.session, config)
        if args.blend is not None and args.blend not in iterations:
            raise utils.UserError(f"--blend {args.blend}: expected one of the iterations shown,"
                                  f" {', '.join(map(str, iterations))}")
        items = held_out_items(config, args.data_dir, rows, mean_pixel)
        done = completions(args.session, iterations, items, mean_pixel)
        utils.output_folder(args.out, "--out")
    except utils.UserError as error:
        return utils.print_error(error)
    written = grid_figure(os.path.join(args.out, f"{args.session}_completions.jpg"), items, done,
                          config, args.blend)
    history = report.read_csv(session.eval_history(args.session))
    if history:
        written.append(os.path.join(args.out, f"{args.session}_eval.png"))
        report.plot_evaluation(history, config, args.out, os.path.basename(written[-1]))
    else:
        print(f"No held-out curve: {session.eval_history(args.session)} is missing (train with"
              " --eval-every N)")
    print("Wrote " + listed(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
