"""Write the report of a discovery run (report.md, report.json and figures) and print where it is.

    python -m aira_jax.report --workdir=runs/discover [--top=5] [--out=DIR] [--store=URL]
    python -m aira_jax.report --workdir=OLD_RUN --config=configs/discover_tiny.py   # a run without run.json

Reads the run's store (and run.json, LLM call log); never writes to the store, so it is safe while the loop runs.
Exit status: 0 written, 2 usage error or a workdir that cannot be reported on (one `error:` line says why).
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "The discovery run's workdir (python -m aira_jax.discover --workdir).")
_TOP = flags.DEFINE_integer("top", 5, "How many of the best designs get a full card.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Where to write the report (default: the workdir).")
_STORE = flags.DEFINE_string("store", None, "The store's URL or path when it is not the workdir's store.sqlite.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's discovery config: its seed, scale and fitness "
                                          "rules (default: the workdir's run.json, written by the loop).")

EXIT_USAGE = 2


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        return EXIT_USAGE
    if not _WORKDIR.value:
        print("error: --workdir is required", file=sys.stderr)
        return EXIT_USAGE
    from aira_jax.report import ReportError, report_workdir  # pylint: disable=import-outside-toplevel
    try:
        info = None
        if _CONFIG.value is not None:
            from aira_jax.discovery.loop import run_info_from_config  # pylint: disable=import-outside-toplevel
            from aira_jax.discovery.loop_settings import ConfigError  # pylint: disable=import-outside-toplevel
            try:
                info = run_info_from_config(_CONFIG.value)
            except ConfigError as e:
                raise ReportError(f"bad --config: {e}") from None
        path = report_workdir(_WORKDIR.value, top=_TOP.value, out_dir=_OUT.value, store=_STORE.value, info=info)
    except (ReportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
