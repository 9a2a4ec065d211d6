"""Compose search: `python -m aira_jax.compose --config=configs/compose_tiny.py --workdir=DIR`.

    python -m aira_jax.compose --config=configs/compose_tiny.py --workdir=/tmp/compose          # offline, CPU
    python -m aira_jax.compose --config=configs/compose_proxy.py --workdir=runs/c --llm=gemini --workers=1
    python -m aira_jax.compose ... --config.compose.num_patterns=40 --config.ladder.rungs.2.seeds=0,1,2

Stages: search compositions on the narrowed proxy -> aggregate the top-k -> extrapolate the best to the target
depth -> ladder of scales with scaling-law fits and the "scales X% faster" table and plot -> compose.md and
compose.json in DIR (optionally gallery entries). Resumable: rerun the same command to continue. Ctrl-C once
finishes the current training and stops; twice (or SIGTERM) abandons it and still writes the report. Exit status
0 done, 1 failed (a search in which no composition trained counts as failed), 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from aira_jax.discover import BACKENDS, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, \
    _setup_logging, load_config, parse_flags


class _Flags:
    def __init__(self, argv: list[str]):
        fv = flags.FlagValues()
        self.config = config_flags.DEFINE_config_file(
            'config', None, 'Compose config file (e.g. configs/compose_tiny.py); fields are overridable as '
            '--config.section.field=value.', flag_values=fv, sys_argv=argv)
        self.workdir = flags.DEFINE_string('workdir', None, 'Run directory (store, runs, report); rerun to resume.',
                                           flag_values=fv)
        self.llm = flags.DEFINE_enum('llm', None, list(BACKENDS), "Proposer: 'offline' (evolutionary) or an LLM "
                                     'backend (overrides config.llm.backend).', flag_values=fv)
        self.workers = flags.DEFINE_integer('workers', None, 'Training threads (overrides config.compose.workers).',
                                            flag_values=fv, lower_bound=1)
        self.verbose = flags.DEFINE_bool('verbose', False, 'INFO logs on stderr (always in DIR/compose.log).',
                                         flag_values=fv)
        rest = fv(argv)
        if len(rest) > 1:
            raise UsageError(f'unexpected arguments {rest[1:]}')


def _parse(argv: list[str]):
    f = parse_flags(_Flags, argv)
    if not f.workdir.value:
        raise UsageError('--workdir is required')
    cfg = load_config(f.config, ('compose', 'engineer'), 'configs/compose_tiny.py')
    with cfg.unlocked():
        if f.llm.value:
            cfg.llm.backend = f.llm.value
        if f.workers.value:
            cfg.compose.workers = f.workers.value
    return f, cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        f, cfg = _parse(argv)
        workdir = os.path.abspath(os.path.expanduser(f.workdir.value))
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UsageError(f'--workdir {workdir} exists and is not a directory')
        os.makedirs(workdir, exist_ok=True)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(workdir, f.verbose.value, log_name='compose.log')
    from aira_jax.discovery.compose.search import ComposeSearch  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.compose.settings import ComposeConfigError  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.llm import LLMError  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.loop_workers import StopControl  # pylint: disable=import-outside-toplevel

    def say(msg: str) -> None:
        import time  # pylint: disable=import-outside-toplevel
        print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)

    control = StopControl(notify=say)
    try:
        search = ComposeSearch(cfg, workdir, on_event=say, stop=control.abandon,
                               should_stop=lambda: control.requested)
    except (ComposeConfigError, LLMError, ValueError) as e:
        print(f'error: bad config: {e}', file=sys.stderr)
        return EXIT_USAGE
    s = search.s
    say(f'AIRA-JAX compose: proposer {search.composer.name}, primitives {", ".join(search.space.primitives)}, '
        f'proxy {s.proxy_sublayers} sublayers, {s.num_patterns} compositions, target {s.target_sublayers} '
        f'sublayers, workers {s.workers}, workdir {workdir}')
    control.install()
    # A compose run is nearly all training, and train_queue watches control.abandon: SIGTERM or a second Ctrl-C
    # abandons the training under way (its claim is released, it is retrained on resume) and the search still
    # writes compose.md from what the store holds. A third Ctrl-C interrupts at once (the report is then
    # written from the store on the way out).
    control.in_training = True
    try:
        rep = search.run()
    except KeyboardInterrupt:
        _write_partial_report(search)
        print('interrupted; rerun the same command to resume', file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (the store keeps everything recorded so far)
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        control.uninstall()
        search.close()
    from aira_jax.discovery.compose.report import search_table  # pylint: disable=import-outside-toplevel
    print('\nProxy results (best first):')
    print(search_table(rep.history, top=10))
    if rep.ladder is not None and hasattr(rep.ladder, 'format_table'):
        print('\nLadder of scales:')
        print(rep.ladder.format_table())
    print(f'\n{sum(h.ok for h in rep.history)} compositions trained on the proxy; {rep.wall_s:.0f} s. Report: '
          f'{os.path.join(workdir, "compose.md")}')
    if rep.stopped:
        return EXIT_INTERRUPTED
    failed = [h for h in rep.history if not h.ok]
    if rep.history and len(failed) == len(rep.history):  # a search that trained nothing is a failed run
        print(f'error: no composition trained; the first failure ({failed[0].name}): {failed[0].reason[:600]}',
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _write_partial_report(search) -> None:
    """compose.md / compose.json of what the store holds when the run was interrupted mid-stage (best effort)."""
    import time  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.compose import report as report_lib  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.compose.search import ComposeReport  # pylint: disable=import-outside-toplevel
    try:
        rep = ComposeReport(search.history(), [], [], '', None, 'interrupted', time.monotonic() - search.t0)
        print(f'partial report: {report_lib.write(search, rep)}', file=sys.stderr)
    except Exception as e:  # noqa: BLE001  (the store keeps everything; the report can be rebuilt by a rerun)
        print(f'no partial report ({type(e).__name__}: {e}); the store keeps every result', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
