"""Running the sweep's jobs. `local`: one after another in this process (--max_parallel 1), or up to
--max_parallel at once, each in its own process with its share of the cores. `submitit`: each job
through submitit's AutoExecutor: SLURM where sbatch exists, else subprocesses on this machine.

Whatever runs a job, its outcome lands in its folder (metrics.json, or error.json), so the sweep
collects by reading folders, and a later sweep collects jobs that finished while it was away.
Jobs still running at the start (another process holds their folder's lock, or SLURM still has
them) are waited for, not started again. SIGTERM or SIGINT stops the jobs this process started and
leaves them to resume (stop_jobs); jobs submitted through submitit keep running there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from latentlab.store import files
from latentlab.cli import Interrupted, show_progress, usable_cores
from latentlab.sweep.cluster import SUBMITTED, ClusterJob, found_on_cluster, submitit_executor
from latentlab.sweep.jobs import Job, job_state, record_error, run_job

STATES = ("done", "running", "failed", "left")
POLL_SECONDS = 1.0
STOP_SECONDS = 10.0  # how long stopped jobs get to exit on SIGTERM before SIGKILL
ROOT = Path(__file__).resolve().parents[2]  # the repository: where a job's process imports latentlab from
class Progress:
    """Each job's state, the bar over jobs and the done / running / failed / left counts."""

    def __init__(self, states: dict[Job, tuple[str, str | None]], quiet: bool):
        self.states, self.quiet = dict(states), quiet
        self.bar = tqdm(total=len(states), initial=self.counts()["done"], unit="job", desc="sweep",
                        disable=not show_progress(quiet), dynamic_ncols=True)
        self.bar.set_postfix_str(self.summary())

    def counts(self) -> Counter:
        return Counter(s for s, _ in self.states.values())

    def summary(self) -> str:
        c = self.counts()
        return ", ".join(f"{c[s]} {s}" for s in STATES)

    def set(self, job: Job, state: str, error: str | None = None) -> None:
        if state == "done" and self.states[job][0] != "done":
            self.bar.update(1)
        self.states[job] = (state, error)
        if state == "failed" and not self.quiet:
            tqdm.write(f"{job.name}: failed: {error}")
        elif state == "done" and self.bar.disable and not self.quiet:  # piped: a line a job in place of the bar
            tqdm.write(f"{job.name}: done ({self.summary()})")
        self.bar.set_postfix_str(self.summary())

    def failed(self) -> list[tuple[Job, str]]:
        return [(j, e) for j, (s, e) in self.states.items() if s == "failed"]

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------- handles on running jobs
class Finished:
    """A job run in this process: over when start returns."""

    def __init__(self, job: Job):
        self.why = None
        try:
            run_job(job)
        except Exception as e:  # recorded in error.json; the sweep goes on with the other jobs
            self.why = f"{type(e).__name__}: {e}"

    def done(self) -> bool:
        return True

    def failure(self) -> str:
        return self.why or "it stopped without writing its metrics"


class ChildProcess:
    """A job in its own Python process on this machine (a plain subprocess: nothing of this process
    is shared with it, so killing it leaves this one clean)."""

    def __init__(self, job: Job):
        spec = files.save_json(dataclasses.asdict(job), Path(job.folder) / "job.json")
        code = ("import json, sys; from latentlab.sweep.jobs import Job, run_job\n"
                "try: run_job(Job(**json.load(open(sys.argv[1]))))\n"
                "except Exception: sys.exit(1)  # its error is in error.json\n"
                "except KeyboardInterrupt: sys.exit(130)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        # a process group of its own: signal() reaches whatever the job starts, and a Ctrl-C in the
        # terminal reaches the sweep alone, which stops its jobs itself
        self.process = subprocess.Popen([sys.executable, "-c", code, str(spec)], env=env, cwd=ROOT,
                                        start_new_session=True)

    def done(self) -> bool:
        return self.process.poll() is not None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def failure(self) -> str:
        code = self.process.returncode
        return f"its process was killed by signal {-code}" if code < 0 else f"its process exited with status {code}"


class HeldElsewhere:
    """A job that another process runs: over when its folder's lock is free."""

    def __init__(self, job: Job):
        self.job = job

    def done(self) -> bool:
        return job_state(self.job)[0] != "running"

    def failure(self) -> str:
        return "the process that ran it stopped without writing its metrics"


@contextlib.contextmanager
def stop_on_signals(in_process: bool):
    """SIGTERM and SIGINT, while the sweep runs its jobs: the number of the first one in the list
    this yields (in_process: raised at once as Interrupted, which stops the job this process runs)."""
    caught = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield caught
        return

    def handler(signum, frame):
        caught.append(signum)
        if in_process:
            raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name}: stopped the running job; "
                                      f"re-run the same command to resume")
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_jobs(active: dict, progress: Progress, signum: int, cluster: bool) -> None:
    """Stop the jobs this sweep started (each process group: SIGTERM, then SIGKILL after
    STOP_SECONDS) and leave them to resume: no error is recorded. Jobs on a cluster keep running
    there; so do those another process runs."""
    name = signal.Signals(signum).name
    ours = {job: h for job, h in active.items() if isinstance(h, ChildProcess)}
    for handle in ours.values():
        handle.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while any(not h.done() for h in ours.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for handle in ours.values():
        handle.signal(signal.SIGKILL)  # the group: also what a job started and left behind
        handle.process.wait()
    for job in ours:
        progress.set(job, job_state(job)[0])  # done if it finished meanwhile, else left: the next call resumes it
    on_cluster = len(active) - len(ours) if cluster else 0
    elsewhere = (f"; {on_cluster} submitted job{'s' * (on_cluster != 1)} keep running under submitit (SLURM's "
                 f"scancel stops them)" if on_cluster else "")
    raise Interrupted(signum, f"interrupted by {name}: stopped {len(ours)} running job{'s' * (len(ours) != 1)}"
                              f"{elsewhere}; re-run the same command to resume")


def run_jobs(to_run: list[Job], progress: Progress, args) -> None:
    """Run to_run with the launcher args name, wait for the jobs that were running already; every
    outcome goes to progress. SIGTERM or SIGINT stops the jobs this process started (stop_jobs)."""
    limit = args.max_parallel or (1 if args.launcher == "local" else len(to_run) or 1)
    active = {}
    for job, (state, _) in progress.states.items():
        if state == "running":
            active[job] = HeldElsewhere(job)
    if args.launcher == "submitit":
        executor = submitit_executor(args, Path(args.output_dir) / "submitit")
        for job in list(to_run):
            found = found_on_cluster(job)
            if found is not None:  # submitted by an earlier sweep and still on the cluster
                to_run.remove(job)
                active[job] = ClusterJob(found)
                progress.set(job, "running")
        def start(job):
            submitted = executor.submit(run_job, dataclasses.replace(job, threads=args.cpus_per_job))
            files.save_json({"cluster": executor.cluster, "job_id": str(submitted.job_id),
                                 "folder": str(executor.folder)}, Path(job.folder) / SUBMITTED)
            return ClusterJob(submitted)
    elif limit == 1:
        start = Finished
    else:  # each process its share of the cores
        threads = max(1, usable_cores() // limit)
        def start(job):
            return ChildProcess(dataclasses.replace(job, threads=threads))
    pending = list(to_run)
    started = 0
    with stop_on_signals(in_process=start is Finished) as caught:
        while pending or active:
            while pending and started < limit and not caught:
                job = pending.pop(0)
                Path(job.folder).mkdir(parents=True, exist_ok=True)
                progress.set(job, "running")
                active[job], started = start(job), started + 1
            if caught:
                stop_jobs(active, progress, caught[0], cluster=args.launcher == "submitit")
            for job, handle in list(active.items()):
                if handle.done():
                    del active[job]
                    started -= job in to_run
                    finish(job, handle, progress)
            if active and not caught:
                time.sleep(POLL_SECONDS)


def finish(job: Job, handle, progress: Progress) -> None:
    state, error = job_state(job)
    if state in ("left", "running"):  # stopped without an outcome (killed, timed out): record why
        error = handle.failure()
        record_error(job, error)
        state = "failed"
    progress.set(job, state, error)
