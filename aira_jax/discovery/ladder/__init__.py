"""The ladder of scales (Genesys): verify designs up a ladder of model sizes, tokens proportional to parameters,
then fit scaling laws and report how much faster each architecture scales than the baseline (AIRA-Compose).

    settings = ladder_settings_from_config(cfg)              # cfg.ladder (see settings.py for the shape)
    report = run_ladder(store, designs, settings, engineer_settings, baseline='deltanet', workdir='runs/ladder')
    print(report.format_table())                             # also ladder.md, ladder.json, ladder.png in workdir

Importing this package does not import JAX (parameter counts run in a child process).
"""
from aira_jax.discovery.ladder.promotion import Decision, NoiseFloor, Outcome, decide_promotions, rung_outcomes
from aira_jax.discovery.ladder.report import ArchFit, DesignRow, LadderReport, RungReport
from aira_jax.discovery.ladder.runner import LadderError, LadderEvent, run_ladder
from aira_jax.discovery.ladder.scaling import PowerLawFit, Speedup, compute_speedup, fit_power_law, training_flops
from aira_jax.discovery.ladder.settings import LadderConfigError, LadderSettings, Rung, ladder_settings_from_config

__all__ = [
    'ArchFit', 'Decision', 'DesignRow', 'LadderConfigError', 'LadderError', 'LadderEvent', 'LadderReport',
    'LadderSettings', 'NoiseFloor', 'Outcome', 'PowerLawFit', 'Rung', 'RungReport', 'Speedup', 'compute_speedup',
    'decide_promotions', 'fit_power_law', 'ladder_settings_from_config', 'rung_outcomes', 'run_ladder',
    'training_flops',
]
