"""Reports for people on what a discovery run found: `python -m aira_jax.report --workdir=RUN`.

load (workdir -> store view and run description) -> collect (typed `RunReport`) -> render (report.md,
report.json) with figures (progress and training curves). The discovery loop writes the report when it stops.
"""
from aira_jax.report.collect import DesignRow, RunReport, collect
from aira_jax.report.load import ReportError, RunInfo, fitness_settings, open_run, read_run_info, write_run_info
from aira_jax.report.render import REPORT_FILE, render_markdown, write_report


def report_workdir(workdir: str, *, top: int = 5, out_dir: str | None = None, store: str | None = None,
                   info: RunInfo | None = None) -> str:
    """Writes the report of the discovery run in `workdir`; returns the path of report.md."""
    es, view, info = open_run(workdir, store=store, info=info)
    try:
        return write_report(collect(view, workdir, inferred=info.inferred, store=es.location), top=top,
                            out_dir=out_dir)
    finally:
        es.close()


__all__ = ["DesignRow", "REPORT_FILE", "ReportError", "RunInfo", "RunReport", "collect", "fitness_settings", "open_run",
           "read_run_info", "render_markdown", "report_workdir", "write_report", "write_run_info"]
