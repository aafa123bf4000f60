"""The sweep on a cluster: jobs submitted through submitit's AutoExecutor (SLURM where sbatch
exists, else subprocesses on this machine), and found again by the id each job's folder records."""
from __future__ import annotations

import json
from pathlib import Path

from latentlab.cli import UserError
from latentlab.sweep.jobs import Job

SUBMITTED = "submitted.json"  # in a job's folder: the cluster's job id, to find it again
SLURM_ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")


class ClusterJob:
    """A job submitted through submitit (or found again by its id)."""

    def __init__(self, job):
        self.job = job

    def done(self) -> bool:
        return self.job.done()

    def failure(self) -> str:
        try:
            return f"submitit job {self.job.job_id} ({self.job.state}): {str(self.job.exception()).strip().splitlines()[-1]}"
        except Exception as e:
            return f"submitit job {self.job.job_id} ({self.job.state}): {type(e).__name__}: {e}"


def submitit_executor(args, folder: Path):
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher submitit needs submitit: pip install submitit (or use --launcher local)") from None
    executor = submitit.AutoExecutor(folder=folder)
    params = {"timeout_min": args.timeout_min, "gpus_per_node": args.gpus_per_job, "tasks_per_node": 1,
              "name": "latentlab-sweep"}
    if args.cpus_per_job:
        params["cpus_per_task"] = args.cpus_per_job
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    executor.update_parameters(**params)
    return executor


def found_on_cluster(job: Job):
    """The SLURM job a previous sweep submitted for this job, while SLURM still queues or runs it."""
    path = Path(job.folder) / SUBMITTED
    if not path.exists():
        return None
    try:
        import submitit
        sub = json.loads(path.read_text())
        if sub.get("cluster") != "slurm":
            return None  # local submitit jobs hold their folder's lock while they run
        found = submitit.SlurmJob(folder=sub["folder"], job_id=sub["job_id"])
        return found if found.state in SLURM_ACTIVE else None
    except Exception:  # no submitit, no sacct, an unreadable record: treat it as not running
        return None
