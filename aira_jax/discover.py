"""Run the discovery loop: `python -m aira_jax.discover --config=configs/<name>.py --workdir=DIR`.

    python -m aira_jax.discover --config=configs/discover_tiny.py --workdir=/tmp/discover            # offline, CPU
    python -m aira_jax.discover --config=configs/discover_explore.py --workdir=runs/x --llm=gemini --workers=4
    python -m aira_jax.discover ... --config.loop.max_iterations=20 --config.llm.default_model=gemini-2.5-pro

Resumable: rerunning the same command continues where it stopped (the store in the workdir is the state).
Ctrl-C once finishes the current step and stops; twice abandons it (nothing recorded is lost). Progress is shown
live (plain lines when the output is not a terminal); at the end the leaderboard of the top designs is printed
and written to DIR/leaderboard.md and .json, and the run's report to DIR/report.md (`python -m aira_jax.report`
rewrites it at any time). Exit status: 0 done, 1 the loop could not go on, 2 usage error,
130 interrupted.
"""
from __future__ import annotations

import logging as pylogging
import os
import sys
from typing import Any

from absl import flags
from absl import logging
from ml_collections import config_flags

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BACKENDS = ("offline", "gemini", "openai")


class UsageError(Exception):
    pass


class _Flags:
    """Defined on a fresh FlagValues per call: config_flags reads argv for its --config.<field> overrides."""

    def __init__(self, argv: list[str]):
        fv = flags.FlagValues()
        self.config = config_flags.DEFINE_config_file(
            "config", None, "Discovery config file (e.g. configs/discover_tiny.py); fields are overridable as "
            "--config.section.field=value.", flag_values=fv, sys_argv=argv)
        self.workdir = flags.DEFINE_string("workdir", None, "Run directory: the store, training runs, logs, "
                                           "leaderboard. Rerun with the same workdir to resume.", flag_values=fv)
        self.llm = flags.DEFINE_enum("llm", None, list(BACKENDS), "LLM backend (overrides config.llm.backend); "
                                     "'offline' runs the offline agents.", flag_values=fv)
        self.workers = flags.DEFINE_integer("workers", 1, "Training workers: 1 trains in this process; N > 1 "
                                            "starts N worker processes on the same store.", flag_values=fv,
                                            lower_bound=1)
        self.store = flags.DEFINE_string("store", None, "Experiment store: a SQLite file or a database URL "
                                         "(postgresql://user:password@host/db) that workers on other machines "
                                         "join with `python -m aira_jax.discovery.worker --store=URL`. Default: "
                                         "DIR/store.sqlite.", flag_values=fv)
        self.top = flags.DEFINE_integer("top", 10, "Rows of the leaderboard to print.", flag_values=fv,
                                        lower_bound=1)
        self.verbose = flags.DEFINE_bool("verbose", False, "Show INFO logs on stderr (always written to "
                                         "DIR/discover.log).", flag_values=fv)
        rest = fv(argv)
        if len(rest) > 1:
            raise UsageError(f"unexpected arguments {rest[1:]}")


def parse_flags(make, argv: list[str]):
    """`make(argv)` (a flags holder); absl/config_flags errors become UsageError with a readable message."""
    try:
        return make(argv)
    except UsageError:
        raise
    except Exception as e:  # flag errors, a config override naming an unknown field
        text = " ".join(str(e).split())[:400]
        if isinstance(e, (AttributeError, KeyError)):
            text = f"a --config.<field> override names a field that does not exist ({text})"
        raise UsageError(text) from e


def load_config(flag, sections: tuple[str, ...], example: str) -> Any:
    """The loaded --config (config_flags loads lazily: a broken file raises here), with its required sections."""
    if flag.value is None:
        raise UsageError(f"--config is required (e.g. --config={example})")
    try:
        cfg = flag.value
        cfg.keys()
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"could not load --config: {' '.join(str(e).split())[:400]}") from e
    for section in sections:
        if section not in cfg:
            raise UsageError(f"--config has no `{section}` section; start from {example}")
    if any(os.environ.get(v) for v in ("AIRA_JAX_OPS_IMPL", "AIRA_JAX_OPS_TARGET")):  # inherited by every child
        from aira_jax.ops import dispatch  # pylint: disable=import-outside-toplevel
        try:
            dispatch.check_environment()
        except ValueError as e:
            raise UsageError(str(e)) from e
    return cfg


def _config(f: _Flags) -> Any:
    cfg = load_config(f.config, ("seed", "loop", "pool", "fitness", "engineer", "llm"), "configs/discover_tiny.py")
    if f.llm.value:
        with cfg.unlocked():
            cfg.llm.backend = f.llm.value
    return cfg


def _setup_logging(workdir: str, verbose: bool, log_name: str = "discover.log") -> None:
    """INFO and above to DIR/discover.log; only warnings on stderr (INFO too with --verbose), so the progress
    display on stdout stays readable."""
    logging.set_verbosity(logging.INFO)
    root = pylogging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, pylogging.StreamHandler) and not isinstance(h, pylogging.FileHandler):
            root.removeHandler(h)
    stderr = pylogging.StreamHandler(sys.stderr)
    stderr.setLevel(pylogging.INFO if verbose else pylogging.WARNING)
    stderr.setFormatter(pylogging.Formatter("%(levelname)s: %(message)s"))
    file_handler = pylogging.FileHandler(os.path.join(workdir, log_name))
    file_handler.setLevel(pylogging.INFO)
    file_handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    root.addHandler(file_handler)
    absl_logger = pylogging.getLogger("absl")
    absl_logger.propagate = True
    for h in list(absl_logger.handlers):
        absl_logger.removeHandler(h)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        f = parse_flags(_Flags, argv)
        if not f.workdir.value:
            raise UsageError("--workdir is required")
        cfg = _config(f)
        workdir = os.path.abspath(os.path.expanduser(f.workdir.value))
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UsageError(f"--workdir {workdir} exists and is not a directory")
        os.makedirs(workdir, exist_ok=True)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(workdir, f.verbose.value)
    # Imported here so that usage errors stay fast.
    from aira_jax.discovery.llm import LLMError  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.loop import DiscoveryLoop, LoopError  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.loop_settings import ConfigError  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.store import ExperimentStore  # pylint: disable=import-outside-toplevel
    store = None
    if f.store.value:
        try:
            store = ExperimentStore(f.store.value)
        except Exception as e:  # pylint: disable=broad-except  (a bad URL, an unreachable server, no driver)
            print(f"error: cannot open --store={f.store.value}: {type(e).__name__}: "
                  f"{' '.join(str(e).split())[:300]}", file=sys.stderr)
            return EXIT_USAGE
    try:
        loop = DiscoveryLoop(cfg, workdir, workers=f.workers.value, store=store)
    except (ConfigError, LLMError, ValueError) as e:
        if store is not None:
            store.close()
        print(f"error: bad config: {e}", file=sys.stderr)
        return EXIT_USAGE
    backend = loop.client.config.backend
    print(f"AIRA-JAX discovery: seed {loop.seed_name}, {loop.s.max_iterations} iterations, LLM backend {backend}"
          f"{' (offline agents: heuristic, no LLM)' if backend == 'offline' else ''}, workers {f.workers.value}, "
          f"workdir {workdir}", flush=True)
    store_url = loop.store.location
    try:
        summary = loop.run()
        report = loop.report()
    except LoopError as e:
        print(f"error: {e}", file=sys.stderr)
        print(loop.leaderboard(top=f.top.value))
        report = loop.report()
        if report:
            print(f"Report: {report}")
        return EXIT_FAILED
    finally:
        loop.store.close()
    print(f"\nLeaderboard (top {f.top.value}; Δ vs seed in noise-floor units, positive = lower loss):")
    print(summary.leaderboard if f.top.value == 10 else loop.leaderboard(top=f.top.value))
    print(f"\n{summary.trained} trained designs; stopped: {summary.stopped_because}; {summary.wall_s:.0f} s; "
          f"LLM cost ${summary.cost_usd:.4f}. Store: {store_url}")
    if report:
        print(f"Report: {report}")
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
