"""XManager launch script for AIRA-JAX jobs: local machine, a GPU VM, or a TPU pod slice.

    xmanager launch xm_launch/launch.py -- --platform=gpu --accelerator=H100 --count=8 \
        --entry=train --config=configs/explore.py:deltanet --workdir=gs://bucket/run1

Flags are absl flags. The command each job runs is built by `job_command` (plain Python, tested without
xmanager); xmanager itself is imported only when launching, with a clear message if it is not installed.
"""
from __future__ import annotations

import os
import shlex

from absl import app, flags

ENTRIES = {"train": "aira_jax.train", "discover": "aira_jax.discover", "evaluate": "aira_jax.evaluate"}
PLATFORMS = ("local", "gpu", "tpu")

_PLATFORM = flags.DEFINE_enum("platform", "local", PLATFORMS, "Where the job runs.")
_ENTRY = flags.DEFINE_enum("entry", "train", list(ENTRIES), "Which AIRA-JAX entry point to run.")
_CONFIG = flags.DEFINE_string("config", "configs/tiny.py", "Config file (with :variant) for the entry point.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (local path or gs://).", required=True)
_ACCELERATOR = flags.DEFINE_string("accelerator", "H100", "GPU type (gpu) or TPU type, e.g. TPU_V5_LITEPOD.")
_COUNT = flags.DEFINE_integer("count", 1, "Accelerators per host.")
_HOSTS = flags.DEFINE_integer("hosts", 1, "Hosts (> 1 turns on --config.multihost for jax.distributed).")
_IMAGE = flags.DEFINE_string("base_image", "python:3.12", "Base container image.")
_EXTRA = flags.DEFINE_multi_string("override", [], "Extra --config.x=y overrides passed to the entry point.")
_TITLE = flags.DEFINE_string("title", "aira-jax", "Experiment title.")


def job_command(entry: str, config: str, workdir: str, hosts: int = 1, overrides=()) -> list[str]:
    """The argv of the job, e.g. ['python', '-m', 'aira_jax.train', '--config=...', ...]."""
    if entry not in ENTRIES:
        raise ValueError(f"unknown entry {entry!r}; choose from {sorted(ENTRIES)}")
    args = ["python", "-m", ENTRIES[entry], f"--config={config}", f"--workdir={workdir}"]
    if hosts > 1:
        args.append("--config.multihost=True")
    for ov in overrides:
        args.append(ov if ov.startswith("--") else f"--config.{ov}")
    return args


def pip_extra(platform: str) -> str:
    return {"local": "", "gpu": "[cuda]", "tpu": "[tpu]"}[platform]


def main(argv):
    del argv
    try:
        from xmanager import xm, xm_local
    except ImportError as e:  # pragma: no cover - depends on the user's install
        raise SystemExit(f"xmanager is not installed ({e}); `pip install xmanager` to launch with XManager, or run "
                         f"directly: {shlex.join(job_command(_ENTRY.value, _CONFIG.value, _WORKDIR.value))}")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv_job = job_command(_ENTRY.value, _CONFIG.value, _WORKDIR.value, _HOSTS.value, _EXTRA.value)
    with xm_local.create_experiment(experiment_title=_TITLE.value) as experiment:
        spec = xm.PythonContainer(
            path=repo, base_image=_IMAGE.value,
            docker_instructions=[f"COPY {os.path.basename(repo)}/ aira_jax_src",
                                 "WORKDIR aira_jax_src",
                                 f"RUN pip install -e '.{pip_extra(_PLATFORM.value)}'"],
            entrypoint=xm.CommandList([shlex.join(argv_job)]))
        if _PLATFORM.value == "local":
            executor, executor_spec = xm_local.Local(), xm_local.Local.Spec()
        else:
            requirements = xm.JobRequirements(**{_ACCELERATOR.value: _COUNT.value})
            executor, executor_spec = xm_local.Vertex(requirements=requirements), xm_local.Vertex.Spec()
        [executable] = experiment.package([xm.Packageable(executable_spec=spec, executor_spec=executor_spec)])
        for _ in range(_HOSTS.value):
            experiment.add(xm.Job(executable=executable, executor=executor))


if __name__ == "__main__":
    app.run(main)
