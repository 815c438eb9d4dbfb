"""Notebook 05: does the tied crosscoder tie? The synthetic eta sweep, the variants, the lab pair and the colour toy.

The notebook imports only this package: its settings (:mod:`.presets`), the sections' pipelines (:mod:`.sweep`,
:mod:`.lab_pair`, :mod:`.colour_toy`, issue 16's :mod:`.planting` and :mod:`.positive_control`), the summary
(:mod:`.summary`), the figures (:mod:`.figures`), and the core functions it calls directly (:func:`load_pair`,
:func:`build_colour_toy`, :func:`firing_ratios`, :func:`recommended_tied`).
"""

from tiedlib.analysis.firing import firing_ratios
from tiedlib.crosscoders.crosscoder import recommended_tied
from tiedlib.experiments.exp5.colour_toy import (
    COLOUR_GROUPS,
    ColourCheck,
    ColourRun,
    colour_activations,
    colour_unembeddings,
    find_colour_triples,
    finetune_lines,
    train_colour_crosscoders,
)
from tiedlib.experiments.exp5.figures import (
    auroc_heatmap,
    control_firing_bars,
    firing_ratio_scatter,
    plot_grid,
    plot_tying_benchmark,
    triple_firing_bars,
)
from tiedlib.experiments.exp5.lab_pair import (
    ConceptCheck,
    LabData,
    LabEval,
    LabRun,
    concept_check,
    evaluate_lab,
    lab_samples,
    lab_training_data,
    ratio_points,
    ratio_summary,
    train_lab_crosscoders,
)
from tiedlib.experiments.exp5.planting import ControlData, control_data, pair_control_rows
from tiedlib.experiments.exp5.positive_control import (
    ControlResult,
    ControlRun,
    measure_control,
    run_control,
    train_control_crosscoders,
)
from tiedlib.experiments.exp5.presets import TABLE, ControlSettings, Exp5Settings
from tiedlib.experiments.exp5.summary import summary_lines
from tiedlib.experiments.exp5.sweep import (
    BenchmarkResult,
    FixChoice,
    GridResult,
    choose_fix,
    run_benchmark,
    run_robustness,
)
from tiedlib.pairs import load_pair
from tiedlib.pairs.colours import build_colour_toy, colour_token_ids


def quiet() -> None:
    """Silence what would clutter the executed notebook: the trainer's "starting epoch" warnings of in-memory
    batches and the Hugging Face progress bars."""
    from tiedlib.environment import quiet_notebook_logs

    quiet_notebook_logs()


__all__ = [
    "COLOUR_GROUPS", "BenchmarkResult", "ColourCheck", "ColourRun", "ConceptCheck", "Exp5Settings", "FixChoice",
    "GridResult", "plot_grid", "recommended_tied", "run_robustness",
    "LabData", "LabEval", "LabRun", "TABLE", "auroc_heatmap", "build_colour_toy", "choose_fix", "colour_activations",
    "colour_token_ids", "colour_unembeddings", "concept_check", "evaluate_lab", "find_colour_triples",
    "finetune_lines", "firing_ratio_scatter", "firing_ratios", "lab_samples", "lab_training_data", "load_pair",
    "plot_tying_benchmark", "quiet", "ratio_points", "ratio_summary", "run_benchmark", "summary_lines",
    "train_colour_crosscoders", "train_lab_crosscoders", "triple_firing_bars",
    "ControlData", "ControlResult", "ControlRun", "ControlSettings", "control_data", "control_firing_bars",
    "measure_control", "pair_control_rows", "run_control", "train_control_crosscoders",
]  # fmt: skip
