"""The closing summary of notebook 05, built from the results of its three sections."""

from __future__ import annotations

from tiedlib.experiments.exp5.colour_toy import ColourCheck, ColourRun
from tiedlib.experiments.exp5.lab_pair import ConceptCheck, LabEval
from tiedlib.experiments.exp5.sweep import BenchmarkResult, FixChoice, GridResult, best_per_variant, row_name


def summary_lines(scale: str, bench: BenchmarkResult, fix: FixChoice, lab: LabEval, concepts: ConceptCheck | None,
                  colour_run: ColourRun, colour: ColourCheck, grid: GridResult | None = None) -> list[str]:  # fmt: skip
    """The summary: the sizes of each part; the sweep (standard, write-up tied per eta, the best eta of every other
    variant); the chosen fix; the robustness grid's recommendation (issue 15, when ``grid`` is given); per lab
    crosscoder EV, L0, the loophole and the refusal triple (lab pairs only); per colour crosscoder its blue/green
    triple."""
    size, data = bench.size, lab.run.data
    lines = [f"Scale: {scale}. Synthetic benchmark: {len(bench.seeds)} seed(s), {size.synthetic.d_model}-d rows, "
             f"{size.n_latents} latents/triples, {size.n_steps} steps; lab pair {data.pair_name} (layer {data.layer}), "
             f"{lab.run.n_latents} triples; colour toy on fine-tunes of the {data.pair_name} base model, "
             f"{colour_run.n_latents} triples."]  # fmt: skip
    s = fix.standard
    tied = ", ".join(f"eta {r['eta']:g} {r['timing_one_index']:.2f} (one-sided {r['one_sided_frac']:.2f})"
                     for r in fix.tied)  # fmt: skip
    others = ", ".join(f"{row_name(r)} {r['timing_one_index']:.2f} (EV {r['explained_variance']:.3f})"
                       for r in best_per_variant(bench.agg).values())  # fmt: skip
    lines.append(f"Timing-shifted concepts kept on one index (timing_one_index): standard {s['timing_one_index']:.2f} "
                 f"(EV {s['explained_variance']:.3f}); write-up tied {tied}; best eta of each other variant: {others}.")
    f = fix.fix
    if f["variant"] is not None:
        lines.append(f"Best fix within {fix.ev_tolerance} EV of the standard crosscoder: {row_name(f)} with "
                     f"timing_one_index {f['timing_one_index']:.2f} at an EV cost of {f['ev_cost']:.3f}.")
    else:
        lines.append(f"No fix stays within {fix.ev_tolerance} EV of the standard crosscoder.")
    if grid is not None:
        lines.append(f"Robustness grid (issue 15, {grid.summary()}): " + "; ".join(grid.recommendation.lines()) + ".")
    lines += lab.lines(None if concepts is None else concepts.refusal)
    lines += colour.summary_lines()
    return lines
