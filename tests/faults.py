"""Fault injection for train.py: kill -9 at random moments, undecodable photos, then finish.

    python -m tests.faults [--kills 20] [--seed 0] [--workdir DIR] [--keep]

In a temporary folder (or an empty --workdir): six small good photos plus four bad files (a
zero-byte .jpg, a truncated JPEG, a text file named .jpg, a .png of random bytes). Then train.py
runs as a user runs it (a subprocess, same command every time, stdout and stderr kept in
runs/NN.stdout and runs/NN.stderr) and is killed with SIGKILL N times. The kills cycle through
three kinds, their delays drawn from a seeded numpy generator:

  startup     2-8 s after launch: TensorFlow importing, the session and networks being built;
  step        0-10 s after the run reports its first training step (here the first step comes
              11-25 s after launch, later in phases 2 and 3, which trace a new step function);
  checkpoint  when the run's 1st or 2nd checkpoint write starts (a new file appears in a
              ckpt-N_temp folder in the session's checkpoints/ or phase_ends/ folder), plus
              0-0.4 s: inside the write, which takes about 0.5-1.3 s here.
Whatever the kind, a run whose progress bar reaches the last iteration is killed within 0-1.5 s
(in the last step or the final checkpoint write), so that the session never ends during the
kills.

Before each restart the newest checkpoint on disk is recorded (the largest N of a
ckpt-N.index under checkpoints/ or phase_ends/). When the next run says where it resumed
("Resuming session 'faults' at iteration N", or its first progress bar without that line: a
fresh start at 0), each kill since the last resume is checked:
  (a) the run resumed at the newest checkpoint on disk, or at an older one while warning about
      the newer one on stderr (a corrupt checkpoint: counted as a lost checkpoint). Only (a)
      counts as a survived kill.
  (b) when it resumed at the newest one, at most checkpoint-every + 1 iterations were lost
      since the kill (unless the kill came before the first checkpoint); otherwise an issue.
A run that exits by itself with a status other than 0 (or -9), or prints a Traceback, is a
crash. After the kills, the same command runs to the end ("Finished T iterations", status 0),
then once more ("already finished"). One summary line is printed; the exit status is 0 only
when everything was perfect.

tests/test_train_lifecycle.py runs this with 3 kills (and 20 in a soak run: -m soak).
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import runtime  # noqa: E402,F401
import session  # noqa: E402
from photos import smooth_photo  # noqa: E402

SESSION = "faults"
KINDS = ("startup", "step", "checkpoint")
RESUME_RE = re.compile(r"Resuming session '" + SESSION + r"' at iteration (\d+)")
ITER_RE = re.compile(r"iter=(\d+)/")
SKIP_RE = re.compile(r"warning: skipping (.+?): ")
CKPT_RE = re.compile(r"ckpt-(\d+)")
STARTED = []  # every Run, so that none outlives run() (Ctrl-C, an error in this script)
BAD_FILES = ("bad_empty.jpg", "bad_random.png", "bad_text.jpg", "bad_truncated.jpg")


# ---------------------------------------------------------------------------------------------
# Photos


def make_photos(folder, seed=0):
    """Six good photos (JPEG and PNG, 48x64) and the four BAD_FILES; returns the bad names.
    (Sorted, the held-out validation photo of train.py's seed 0 is a good one: photo4.jpg.)"""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(6):
        ext = ".jpg" if i % 2 == 0 else ".png"
        Image.fromarray(smooth_photo(rng, 48, 64)).save(os.path.join(folder, f"photo{i}{ext}"))
    open(os.path.join(folder, "bad_empty.jpg"), "wb").close()
    with open(os.path.join(folder, "photo0.jpg"), "rb") as f:
        jpeg = f.read()
    with open(os.path.join(folder, "bad_truncated.jpg"), "wb") as f:
        f.write(jpeg[:len(jpeg) // 2])
    with open(os.path.join(folder, "bad_text.jpg"), "w") as f:
        f.write("This is a text file, not a photo.\n")
    with open(os.path.join(folder, "bad_random.png"), "wb") as f:
        f.write(rng.bytes(3000))
    return list(BAD_FILES)


# ---------------------------------------------------------------------------------------------
# Checkpoints on disk


def checkpoint_indexes(workdir):
    """{path prefix: mtime} of every complete checkpoint (ckpt-N.index) of the session."""
    found = {}
    for sub in (session.ROLLING, session.PHASE_ENDS):
        for path in glob.glob(os.path.join(workdir, session.folder(SESSION), sub, "ckpt-*.index")):
            if "_temp" in path:
                continue
            try:
                found[os.path.relpath(path, workdir)[:-len(".index")]] = os.stat(path).st_mtime
            except FileNotFoundError:  # deleted by the rolling manager meanwhile
                pass
    return found


def number(prefix):
    match = re.search(r"ckpt-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def newest_checkpoint(workdir):
    """The largest N of a complete ckpt-N, or None."""
    numbers = [number(p) for p in checkpoint_indexes(workdir)]
    return max(numbers) if numbers else None


def temp_files(workdir):
    """{path: mtime} of the files of checkpoint writes in progress or abandoned by a kill
    (TensorFlow writes ckpt-N_temp/part-....tempstateNNNN, then renames it to ckpt-N.data-...)."""
    found = {}
    for sub in (session.ROLLING, session.PHASE_ENDS):
        pattern = os.path.join(workdir, session.folder(SESSION), sub, "*_temp*", "*")
        for path in glob.glob(pattern):
            try:
                found[os.path.relpath(path, workdir)] = os.stat(path).st_mtime
            except FileNotFoundError:  # renamed meanwhile: that write has just ended
                pass
    return found


# ---------------------------------------------------------------------------------------------
# One run of train.py


class Run:
    """train.py in a subprocess with its output in files, read back incrementally."""

    def __init__(self, index, workdir, args):
        self.index, self.workdir = index, workdir
        os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
        self.paths = {name: os.path.join(workdir, "runs", f"{index:02d}.{name}")
                      for name in ("stdout", "stderr")}
        self.offsets = {"stdout": 0, "stderr": 0}
        self.text = {"stdout": "", "stderr": ""}
        self.resumed = None        # iteration it said it resumed at (0: a fresh start)
        self.progress = None       # the largest iteration its progress bar reported
        self.returncode = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        files = {name: open(path, "wb") for name, path in self.paths.items()}
        self.started, self.wall_started = time.monotonic(), time.time()
        self.process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args],
                                        cwd=workdir, stdout=files["stdout"],
                                        stderr=files["stderr"], stdin=subprocess.DEVNULL, env=env)
        for f in files.values():
            f.close()
        STARTED.append(self)

    @property
    def elapsed(self):
        return time.monotonic() - self.started

    def read(self, final=False):
        """Take in what the run has written since the last call."""
        for name, path in self.paths.items():
            with open(path, "rb") as f:
                f.seek(self.offsets[name])
                data = f.read()
            if not final:  # keep a partial last line (or character) for the next call
                data = data[:max(data.rfind(b"\n"), data.rfind(b"\r")) + 1]
            self.offsets[name] += len(data)
            self.text[name] += data.decode("utf-8", "replace")
        match = RESUME_RE.search(self.text["stdout"])
        iters = [int(m) for m in ITER_RE.findall(self.text["stderr"])]
        if iters:
            self.progress = max(iters)
        if match:
            self.resumed = int(match.group(1))
        elif self.resumed is None and ("%|" in self.text["stderr"] or iters):
            self.resumed = 0  # a progress bar without a Resuming line: started from scratch

    def alive(self):
        return self.process.poll() is None

    def kill(self):
        """SIGKILL unless it already ended; True if the kill is what ended it."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.returncode = self.process.wait()
        self.read(final=True)
        return self.returncode == -signal.SIGKILL

    def wait(self, timeout):
        try:
            self.returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.returncode = self.process.wait()
            self.read(final=True)
            return False
        self.read(final=True)
        return True

    def lines(self, name):
        return self.text[name].replace("\r", "\n").splitlines()

    def checkpoint_warnings(self):
        """stderr lines that warn about a checkpoint (skipped, unreadable, damaged...)."""
        return [line for line in self.lines("stderr") if "warning" in line.lower()
                and ("ckpt-" in line or "checkpoint" in line.lower())]

    def skipped_files(self):
        return {os.path.basename(m.group(1)) for line in self.lines("stderr")
                for m in [SKIP_RE.search(line)] if m and "checkpoint" not in m.group(1)
                and "ckpt-" not in m.group(1)}

    def crashed(self):
        """Ended by itself with a bad status, or printed a Traceback."""
        return ((self.returncode not in (0, -signal.SIGKILL, None))
                or "Traceback" in self.text["stderr"])

    def tail(self, name, count=6):
        return "\n".join("      " + line for line in self.lines(name)[-count:])


# ---------------------------------------------------------------------------------------------
# The experiment


def run(kills=20, seed=0, workdir=None, total_iters=60, tc=30, td=10, checkpoint_every=3,
        log=print):
    """Kill train.py `kills` times in `workdir` (a new temporary folder if None, left in place),
    then let it finish. Returns a dict: kills, kills_requested, survived, checkpoints_lost,
    corrupt_checkpoints, final_iteration, total_iters, bad_files_tried, bad_files_reported,
    crashes, issues (what went wrong, in words), kill_records (one dict per kill), workdir,
    summary (the one-line summary) and perfect (what the exit status of main() reflects)."""
    try:
        return _run(kills, seed, workdir, total_iters, tc, td, checkpoint_every, log)
    finally:
        for current in STARTED:
            if current.alive():
                current.kill()
        STARTED.clear()


def _run(kills, seed, workdir, total_iters, tc, td, checkpoint_every, log):
    campaign = Campaign(kills, seed, workdir, total_iters, tc, td, checkpoint_every, log)
    campaign.kill_loop()
    final = campaign.final_run()
    campaign.run_after_end()
    return campaign.result(final)


class Plan:
    """What one kill waits for, drawn from the seeded generator (always in the same order)."""

    def __init__(self, kind, rng):
        self.kind = kind
        # All three delays are drawn whatever the kind (as they always have been): drawing only
        # the one used would change every later draw, hence the kill plan, of a given seed.
        self.delay = {"startup": rng.uniform(2, 8), "step": rng.uniform(0, 10),
                      "checkpoint": rng.uniform(0, 0.4)}[kind]
        self.nth_write = int(rng.integers(1, 3)) if kind == "checkpoint" else 0
        # Never let the session finish during the kills: once the last step has begun, kill
        # within 0-1.5 s (during that step or the final checkpoint write) whatever the kind.
        self.guard_delay = rng.uniform(0, 1.5)


class Campaign:
    """One run(): the settings, every Run started, and what the checks have found so far."""

    def __init__(self, kills, seed, workdir, total_iters, tc, td, checkpoint_every, log):
        self.kills, self.total_iters, self.checkpoint_every, self.log = (
            kills, total_iters, checkpoint_every, log)
        self.rng = np.random.default_rng(seed)
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="glcic-faults-"))
        os.makedirs(self.workdir, exist_ok=True)
        self.bad = make_photos(os.path.join(self.workdir, "photos"))
        self.args = [
            "--data-dir", "photos", "--session", SESSION, "--preset", "quick",
            "--image-size", "32", "--local-size", "16", "--hole-min", "6", "--hole-max", "12",
            "--batch-size", "2", "--tc", str(tc), "--td", str(td),
            "--total-iters", str(total_iters), "--checkpoint-every", str(checkpoint_every),
            "--summary-every", "1", "--sample-every", "10"]
        log(f"faults: work dir {self.workdir}")
        log(f"faults: command (cwd = work dir): {sys.executable} {os.path.join(REPO, 'train.py')}"
            f" {' '.join(self.args)}")
        self.runs, self.issues, self.kill_records = [], [], []
        self.pending = []          # kills whose next resume has not been seen yet
        self.lost_checkpoints, self.crashes, self.corrupt = 0, 0, set()
        self.done_kills, self.consecutive_crashes = 0, 0

    def start(self):
        """A new Run, with the newest checkpoint number and the complete checkpoints on disk
        when it started (newest_at_start, snapshot): what resolve() checks its resume against."""
        newest, snapshot = newest_checkpoint(self.workdir), checkpoint_indexes(self.workdir)
        current = Run(len(self.runs), self.workdir, self.args)
        current.newest_at_start, current.snapshot = newest, snapshot
        self.runs.append(current)
        return current

    def record_crash(self, current, what):
        self.crashes += 1
        self.issues.append(f"run {current.index} ({what}) crashed: status {current.returncode}")
        self.log(f"  run {current.index} CRASHED ({what}): status {current.returncode}\n"
                 f"    stdout tail:\n{current.tail('stdout')}\n    stderr tail:\n"
                 f"{current.tail('stderr', 12)}")

    # -- checking the resumes --------------------------------------------------------------

    def resolve(self, current):
        """Check every pending kill against where `current` resumed."""
        if not self.pending or current.resumed is None:
            return
        resumed, newest_at_start, snapshot = (current.resumed, current.newest_at_start,
                                              current.snapshot)
        expected = newest_at_start if newest_at_start is not None else 0
        warned = current.checkpoint_warnings()
        warned_numbers = {int(n) for line in warned for n in CKPT_RE.findall(line)}
        fell_back = resumed < expected
        if fell_back:
            self.lost_checkpoints += 1
            newer = {p for p in snapshot if number(p) > resumed}
            if not {number(p) for p in newer} & warned_numbers:
                # Resumed from an older checkpoint without naming the newer ones it skipped.
                self.corrupt.update((p, snapshot[p]) for p in newer)
        for record in self.pending:
            lost = record["at_kill"] - resumed
            record.update(resumed=resumed, expected=expected, lost_iterations=lost,
                          resumed_by_run=current.index)
            verdict = self.judge(record, current, expected, fell_back, warned)
            self.log(f"    kill {record['kill']}: run {current.index} resumed at {resumed}"
                     f" (newest on disk {newest_at_start}), {lost} iteration(s) lost since the"
                     f" kill: {verdict}")
        self.pending.clear()

    def judge(self, record, current, expected, fell_back, warned):
        """Set record["survived"] (noting an issue if need be); returns the verdict in words."""
        resumed, lost = record["resumed"], record["lost_iterations"]
        if resumed == expected:
            record["survived"] = True
            limit = self.checkpoint_every + 1
            if lost > limit and not record["before_first_checkpoint"]:
                self.issues.append(f"kill {record['kill']}: {lost} iterations lost (at most"
                                   f" {limit} expected): killed at ~{record['at_kill']},"
                                   f" resumed at {resumed}")
            return "ok" if lost <= limit or record["before_first_checkpoint"] else "TOO MUCH LOST"
        if fell_back and warned:
            record["survived"] = True
            return (f"fell back past a corrupt checkpoint ({len(warned)} warning(s):"
                    f" {warned[0].strip()[:200]})")
        record["survived"] = False
        why = ("resumed from an older checkpoint without any warning about the newer one"
               if fell_back else "resumed past the newest checkpoint on disk")
        self.issues.append(f"kill {record['kill']}: run {current.index} {why}:"
                           f" resumed at {resumed}, newest complete checkpoint on disk"
                           f" {expected}")
        return "NOT SURVIVED: " + why

    # -- the kills -------------------------------------------------------------------------

    def kill_loop(self):
        max_attempts = 2 * self.kills + 3
        attempt = 0
        while (self.done_kills < self.kills and attempt < max_attempts
               and self.consecutive_crashes < 3):
            attempt += 1
            if not self.kill_cycle():
                break
        if self.done_kills < self.kills:
            self.issues.append(f"only {self.done_kills} of {self.kills} kills were made")

    def kill_cycle(self):
        """Start a run and kill it (one attempt); False when no further kill is possible."""
        kind = KINDS[self.done_kills % len(KINDS)]
        current = self.start()
        temp_at_start = set(temp_files(self.workdir))
        deadline = current.elapsed + 240
        plan = Plan(kind, self.rng)
        reason = self.watch(current, plan, temp_at_start, deadline)
        at_kill_time = current.elapsed
        if reason == "timeout" and current.alive():
            self.issues.append(f"run {current.index} ({kind} kill): what the kill waits for did"
                               f" not happen within {at_kill_time:.0f} s; killed anyway")
        killed = current.kill()
        newest_after = newest_checkpoint(self.workdir)
        if current.resumed is not None:
            self.resolve(current)
        if not killed:
            return self.ended_by_itself(current, kind, at_kill_time)
        if "Traceback" in current.text["stderr"]:
            self.record_crash(current, f"kill {self.done_kills + 1}, Traceback before the kill")
        self.consecutive_crashes = 0
        self.done_kills += 1
        self.record_kill(current, kind, reason, at_kill_time, temp_at_start, newest_after)
        return True

    def watch(self, current, plan, temp_at_start, deadline):
        """Follow `current` until the moment `plan` kills it (or it ends, or the deadline);
        returns why it stopped watching, in words ("timeout" if nothing happened)."""
        kind, delay, nth_write = plan.kind, plan.delay, plan.nth_write
        guard, writes = None, []
        trigger, reason = None, "timeout"
        while current.alive() and current.elapsed < deadline:
            current.read()
            if current.resumed is not None and self.pending:
                self.resolve(current)
            now = current.elapsed
            if guard is None and current.progress is not None and \
                    current.progress >= self.total_iters - 1:
                guard = now
            if guard is not None and now >= guard + plan.guard_delay:
                return f"the last step had begun {plan.guard_delay:.1f} s before"
            if kind == "startup":
                if now >= delay:
                    return "delay"
            elif kind == "step":
                if trigger is None and current.progress is not None:
                    trigger = now
                if trigger is not None and now >= trigger + delay:
                    return "delay"
            else:
                if trigger is None and current.resumed is not None:
                    started = set(temp_files(self.workdir)) - temp_at_start - set(writes)
                    writes += sorted(p for p in started if ".tempstate" in p)  # one a write
                    if len(writes) >= nth_write:
                        trigger = now
                        reason = f"write {nth_write}: {os.path.dirname(writes[nth_write - 1])}"
                if trigger is not None and now >= trigger + delay:
                    return reason
            time.sleep(0.005 if kind == "checkpoint" and current.resumed is not None else 0.05)
        return reason

    def ended_by_itself(self, current, kind, at_kill_time):
        """A run that ended before the kill; False when the session has finished."""
        if current.crashed():
            self.record_crash(current, f"kill attempt {self.done_kills + 1}, {kind}")
            self.consecutive_crashes += 1
            return True
        self.consecutive_crashes = 0
        self.log(f"  run {current.index} ended by itself with status {current.returncode} after"
                 f" {at_kill_time:.1f} s: {current.lines('stdout')[-1:] or ''}")
        if "Finished" in current.text["stdout"] or "already finished" in current.text["stdout"]:
            self.issues.append(f"the session finished during the kill loop after"
                               f" {self.done_kills} kills; no further kills possible")
            return False
        return True

    def record_kill(self, current, kind, reason, at_kill_time, temp_at_start, newest_after):
        unfinished = sorted({os.path.dirname(p) for p, m in temp_files(self.workdir).items()
                             if m >= current.wall_started - 0.5 and p not in temp_at_start})
        if unfinished:
            landed = "checkpoint write (left " + ", ".join(unfinished) + ")"
        elif current.progress is not None:
            landed = "training steps"
        elif current.resumed is not None:
            landed = "startup, after the restore"
        else:
            landed = "startup, before the restore"
        seen = [v for v in (current.progress, current.resumed, newest_after) if v is not None]
        at_kill = max(seen) if seen else 0
        record = dict(kill=self.done_kills, run=current.index, kind=kind,
                      seconds=round(at_kill_time, 2), landed=landed, at_kill=at_kill,
                      newest_on_disk=newest_after, before_first_checkpoint=newest_after is None,
                      survived=None)
        self.kill_records.append(record)
        self.pending.append(record)
        self.log(f"  kill {self.done_kills}/{self.kills} ({kind}, {reason}): run {current.index}"
                 f" after {at_kill_time:.1f} s, during {landed}; progress ~{at_kill}, newest"
                 f" checkpoint on disk {newest_after}")

    # -- the end ---------------------------------------------------------------------------

    def final_run(self):
        """Let it finish; returns the final iteration."""
        final_run = self.start()
        self.log(f"  run {final_run.index}: to the end (no kill)")
        finished_in_time = final_run.wait(timeout=1800)
        self.resolve(final_run)
        final = None
        match = re.search(r"Finished (\d+) iterations", final_run.text["stdout"])
        if match:
            final = int(match.group(1))
        if not finished_in_time:
            self.issues.append(f"run {final_run.index} did not end within 30 minutes")
        if final_run.crashed() or not finished_in_time:
            self.record_crash(final_run, "final run")
        elif not match or final_run.returncode != 0:
            self.issues.append(f"run {final_run.index} (final) did not report 'Finished"
                               f" {self.total_iters} iterations' with status 0 (status"
                               f" {final_run.returncode})")
        if final is None:
            final = newest_checkpoint(self.workdir) or 0
        if final != self.total_iters:
            self.issues.append(f"final iteration {final}, expected {self.total_iters}")
        self.log(f"  run {final_run.index} ended with status {final_run.returncode} after"
                 f" {final_run.elapsed:.1f} s: {(final_run.lines('stdout') or [''])[-2:]}")
        return final

    def run_after_end(self):
        """Once more after the end: it must know the session has finished."""
        again = self.start()
        again.wait(timeout=600)
        if again.crashed():
            self.record_crash(again, "run after the end")
        if "already finished" not in again.text["stdout"] or again.returncode != 0:
            self.issues.append(f"run {again.index} (after the end) did not say 'already"
                               f" finished' with status 0 (status {again.returncode}):"
                               f" {again.lines('stdout')[-2:]}")
        self.log(f"  run {again.index} ended with status {again.returncode} after"
                 f" {again.elapsed:.1f} s: {(again.lines('stdout') or [''])[-1]}")

    def result(self, final):
        """The dict run() returns, with the summary line and the verdict."""
        for record in self.pending:  # never resumed: not survived
            record["survived"] = False
            self.issues.append(f"kill {record['kill']}: no later run said where it resumed")
        for current in self.runs:  # checkpoints named in a warning, told apart by their mtime
            for line in current.checkpoint_warnings():
                for path in re.findall(r"(\S*ckpt-\d+)", line):
                    prefix = os.path.normpath(path)
                    self.corrupt.add((prefix, current.snapshot.get(prefix)))
        bad, issues, lost, crashes = self.bad, self.issues, self.lost_checkpoints, self.crashes
        kills, done_kills, total_iters = self.kills, self.done_kills, self.total_iters
        skipped = set().union(*(r.skipped_files() for r in self.runs))
        reported = sorted(skipped & set(bad))
        if skipped - set(bad):
            issues.append(f"good files reported as undecodable: {sorted(skipped - set(bad))}")
        survived = sum(1 for r in self.kill_records if r["survived"])
        result = dict(
            kills=done_kills, kills_requested=kills, survived=survived,
            checkpoints_lost=lost, corrupt_checkpoints=len(self.corrupt),
            final_iteration=final, total_iters=total_iters, bad_files_tried=len(bad),
            bad_files_reported=len(reported), reported_files=reported, crashes=crashes,
            runs=len(self.runs), kill_records=self.kill_records, issues=issues,
            workdir=self.workdir, corrupt=sorted(str(c[0]) for c in self.corrupt))
        result["summary"] = (
            f"faults: kills survived {survived}/{done_kills}, checkpoints lost {lost},"
            f" corrupt checkpoints {len(self.corrupt)}, final iteration {final}/{total_iters},"
            f" bad files tried {len(bad)} (reported {len(reported)}), crashes {crashes}")
        result["perfect"] = (done_kills == kills and survived == done_kills and lost == 0
                             and crashes == 0 and final == total_iters
                             and len(reported) == len(bad) and not issues)
        return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="how many times to SIGKILL train.py")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--workdir", help="an empty or new folder to work in (default: a"
                        " temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder, print its path")
    args = parser.parse_args(argv)
    if args.workdir:
        if os.path.exists(args.workdir) and os.listdir(args.workdir):
            parser.error(f"--workdir {args.workdir}: not empty")
        workdir, own = args.workdir, False
    else:
        workdir, own = tempfile.mkdtemp(prefix="glcic-faults-"), True
    try:
        result = run(args.kills, args.seed, workdir)
    finally:
        if own and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for issue in result["issues"]:
        print(f"  issue: {issue}")
    if args.keep or not own:
        print(f"faults: work dir kept: {os.path.abspath(workdir)}")
    print(result["summary"])
    return 0 if result["perfect"] else 1


if __name__ == "__main__":
    sys.exit(main())
