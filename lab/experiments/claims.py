"""The claims the seeded experiments test, the fixed rule that judges each one, and the claims file.

A claim compares two measured scalars per seed, `a` and `b`, read by name from an experiment's
`measurements.json` (lab.experiments.runner): `lower` claims a < b, `equal` claims a = b within a
tolerance, `not_above` claims a is no worse than b: a <= b + tolerance ("at a loss no worse", where a
claim is about something else, such as balance, and the loss must merely not suffer). The rule (RULE,
`verdict`) is fixed in advance and sees only the per-seed values, so anyone can recompute a verdict from
the claims file alone:

    lower:     d_s = b_s - a_s per seed. Holds when d_s > 0 on every seed and mean(d) > 2 stdev(d) / sqrt(n);
               contradicted when d_s < 0 on every seed and -mean(d) > 2 stdev(d) / sqrt(n); else inconclusive.
    equal:     holds when |a_s - b_s| <= tolerance on every seed; contradicted when |a_s - b_s| > tolerance
               on every seed; else inconclusive.
    not_above: e_s = a_s - b_s per seed. Holds when e_s <= tolerance on every seed; contradicted when
               e_s > tolerance on every seed and mean(e) > 2 stdev(e) / sqrt(n); else inconclusive. The
               tolerance of a loss is NOT_ABOVE_TOLERANCE nats unless a claim says otherwise.

stdev is the sample standard deviation (n - 1 in the denominator); at least 3 seeds per claim.

The claims file (`python -m lab experiments claims DIR... --json OUT`):

    {"rule": RULE, "experiments": {name: [dirs]},
     "claims": [{"id", "text", "paper", "kind", "tolerance" (equal and not_above), "a", "b", "experiment",
                 "a_measurement", "b_measurement", "seeds", "a_values", "b_values", "verdict",
                 "same_on_every_seed"}]}
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

MIN_SEEDS = 3
KINDS = ("lower", "equal", "not_above")
VERDICTS = ("holds", "inconclusive", "contradicted")
# How much higher a loss may be and still count as "no worse" (a not_above claim's tolerance): a hundredth
# of a nat. In the upcycle experiment (seeds 0-2) a trained loss spreads over seeds by a sample stdev of
# 0.001-0.007 nats, and the variants that differ do so by 0.007 (C11) to 0.03 (C10, C12): 0.01 lets seed
# noise through and still calls a C10-sized loss a loss.
NOT_ABOVE_TOLERANCE = 0.01
# The rule of each kind in words. A claims file written before a kind existed holds the rule without it;
# the words of the older kinds are unchanged, so such a file is still judged by the rule it holds.
KIND_RULES = {
    "lower": ("lower: with d_s = b_s - a_s per seed, the claim holds when d_s > 0 on every seed and "
              "mean(d) > 2 * stdev(d) / sqrt(n); it is contradicted when d_s < 0 on every seed and "
              "-mean(d) > 2 * stdev(d) / sqrt(n); otherwise it is inconclusive."),
    "equal": ("equal: the claim holds when |a_s - b_s| <= tolerance on every seed; it is contradicted when "
              "|a_s - b_s| > tolerance on every seed; otherwise it is inconclusive."),
    "not_above": ("not_above: with e_s = a_s - b_s per seed, the claim holds when e_s <= tolerance on every "
                  "seed; it is contradicted when e_s > tolerance on every seed and mean(e) > 2 * stdev(e) / "
                  "sqrt(n); otherwise it is inconclusive."),
}
RULE_FOOTER = "stdev is the sample standard deviation (n - 1); n >= 3 seeds per claim."
RULE = " ".join([*KIND_RULES.values(), RULE_FOOTER])
TOLERANCE_KINDS = ("equal", "not_above")  # the kinds whose claims carry a tolerance


def _values(values, what: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise LabError(f"{what}: every value must be a finite number, got {out}")
    return out


def verdict(a_values, b_values, kind: str, tolerance: float | None = None) -> str:
    """The verdict of RULE on per-seed values (a_s, b_s): "holds", "inconclusive" or "contradicted".

    Refuses (LabError) fewer than MIN_SEEDS seeds, lists of different lengths, non-finite values, an
    unknown kind, and an `equal` or `not_above` claim without a tolerance >= 0.
    """
    a, b = _values(a_values, "a_values"), _values(b_values, "b_values")
    if len(a) != len(b):
        raise LabError(f"a_values and b_values differ in length ({len(a)} and {len(b)})")
    if len(a) < MIN_SEEDS:
        raise LabError(f"{len(a)} seeds: a claim needs at least {MIN_SEEDS}")
    if kind not in KINDS:
        raise LabError(f"kind {kind!r}: must be one of {', '.join(KINDS)}")
    if kind in TOLERANCE_KINDS and (tolerance is None or not tolerance >= 0):
        raise LabError(f"a claim of kind {kind} needs a tolerance >= 0, got {tolerance!r}")
    if kind == "equal":
        gaps = [abs(x - y) for x, y in zip(a, b)]
        if all(g <= tolerance for g in gaps):
            return "holds"
        return "contradicted" if all(g > tolerance for g in gaps) else "inconclusive"
    if kind == "not_above":
        excess = [x - y for x, y in zip(a, b)]
        if all(e <= tolerance for e in excess):
            return "holds"
        if all(e > tolerance for e in excess) and statistics.fmean(excess) > _margin(excess):
            return "contradicted"
        return "inconclusive"
    d = [y - x for x, y in zip(a, b)]
    mean, margin = statistics.fmean(d), _margin(d)
    if all(x > 0 for x in d) and mean > margin:
        return "holds"
    if all(x < 0 for x in d) and -mean > margin:
        return "contradicted"
    return "inconclusive"


def _margin(values: list[float]) -> float:
    """Two standard errors of the mean: 2 stdev / sqrt(n), the sample stdev."""
    return 2 * statistics.stdev(values) / math.sqrt(len(values))


@dataclass(frozen=True)
class Claim:
    """One claim: what it says, where it comes from, and which two measurements of which experiment it compares."""

    id: str
    text: str
    paper: str
    kind: str
    experiment: str
    a_measurement: str
    b_measurement: str
    a: str  # what is claimed lower (or equal, or no higher), in words
    b: str  # what it is compared with
    tolerance: float | None = None  # equal and not_above claims only


AQUILA = "AquilaMoE (arXiv 2408.06567)"
HE = "He et al. 2024, Upcycling LLMs into MoE (arXiv 2410.07524)"
AUX_FREE = ("DeepSeek-V3 (arXiv 2412.19437) 2.1.2; Wang et al. 2024, Auxiliary-Loss-Free Load Balancing "
            "(arXiv 2408.15664)")
MSG = "Yao et al. 2024, Masked Structural Growth (ICLR 2024, arXiv 2305.02869)"
LLAMA_PRO = "LLaMA Pro, Wu et al. 2024 (arXiv 2401.02415)"
CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "FPI width-only with integer ratios keeps the source's validation loss.", f"{AQUILA} Table 1",
          "equal", "table1", "fpi-width/grown_loss", "source/loss",
          "FPI width-only (2x) right after growth", "the source", tolerance=1e-4),
    Claim("C2", "Right after growth, FPI + interpolation is below FPI + stacking.", f"{AQUILA} Table 1",
          "lower", "table1", "fpi-interpolate/grown_loss", "fpi-stack/grown_loss",
          "FPI + interpolation right after growth", "FPI + stacking right after growth"),
    Claim("C3", "Right after growth, AKI-Pro (interpolation) is below AKI + stacking.", f"{AQUILA} Table 1",
          "lower", "table1", "aki-pro/grown_loss", "aki-stack/grown_loss",
          "AKI-Pro (interpolation) right after growth", "AKI + stacking right after growth"),
    Claim("C4", "Right after growth, the worst growth method is below random initialisation.", f"{AQUILA} Table 1",
          "lower", "table1", "worst-growth/grown_loss", "random/grown_loss",
          "the highest loss of FPI/AKI with stacking/interpolation right after growth",
          "random initialisation of the same shape"),
    Claim("C5", "After equal continued training, AKI-Pro is below FPI with the same depth rule.",
          f"{AQUILA} Figure 3; bert2BERT", "lower", "table1", "aki-pro/trained_loss", "fpi-interpolate/trained_loss",
          "AKI-Pro after continued training", "FPI + interpolation after the same training"),
    Claim("C6", "A grown model trained N steps is below the same shape trained N steps from scratch.",
          f"{AQUILA} Figure 3", "lower", "table1", "aki-pro/trained_loss", "random/trained_loss",
          "AKI-Pro after N steps", "the same shape after N steps from scratch"),
    Claim("C7", "Right after growth, a non-integer width ratio is above an integer one (1.96 vs 1.85).",
          f"{AQUILA} Table 2", "lower", "table2", "width-integer/grown_loss", "width-noninteger/grown_loss",
          "FPI with an integer width ratio right after growth", "FPI with a non-integer width ratio"),
    Claim("C8", "Right after growth, width plus depth is above width alone (2.24 vs 1.96).", f"{AQUILA} Table 2",
          "lower", "table2", "width-noninteger/grown_loss", "width-depth/grown_loss",
          "width growth alone right after growth", "the same width growth plus depth"),
    Claim("C9", "The upcycled MoE (top-k then softmax, no noise, no drop) starts at the dense model's loss.",
          f"{AQUILA} 2.2.2; {HE}", "equal", "upcycle", "topk-softmax/start_loss", "dense/start_loss",
          "the upcycled MoE before its first step", "the dense source", tolerance=1e-4),
    Claim("C10", "At equal training FLOPs, the upcycled MoE is below the dense model trained on.", HE,
          "lower", "upcycle", "topk-softmax/trained_loss", "dense/trained_loss",
          "the upcycled MoE (top-k then softmax) after continued training",
          "the dense source trained on for the same FLOPs"),
    Claim("C11", "After equal continued training, softmax-then-top-k is below top-k-then-softmax.", HE,
          "lower", "upcycle", "softmax-topk/trained_loss", "topk-softmax/trained_loss",
          "softmax then top-k", "top-k then softmax"),
    Claim("C12", "After equal continued training, granularity 2 (virtual groups, weight scaling) is below "
          "granularity 1.", HE, "lower", "upcycle", "granularity-2/trained_loss", "topk-softmax/trained_loss",
          "granularity 2", "granularity 1"),
    Claim("C13", "Without the load-balancing loss, the load is less balanced than with it.",
          f"{HE}; Switch Transformers", "lower", "upcycle", "topk-softmax/load_cv", "no-aux-loss/load_cv",
          "coefficient of variation of tokens per expert with the load-balancing loss", "the same without it"),
    Claim("C14", "After each transition, the loss at a quarter of the stage's steps is below the loss just before "
          "the transition (quick recovery).", f"{AQUILA} 2.2; this lab's README", "lower", "pipeline",
          "recovery/worst_quarter_loss", "recovery/worst_before_loss",
          "the loss at a quarter of the new stage (the slower of the two transitions)",
          "the loss just before that transition"),
    Claim("C15", "The pipeline ends below the from-scratch baseline at equal training FLOPs.",
          f"{AQUILA} 2.2 and Table 6", "lower", "pipeline", "pipeline/final_loss", "baseline/best_loss",
          "dense -> grown -> MoE at the end", "the final shape from scratch on the same FLOPs, best of its "
          "learning rates"),
    Claim("C16", "With aux-free balancing, the load is more balanced than with the load-balancing loss.", AUX_FREE,
          "lower", "balance", "aux-free/load_cv", "aux-loss/load_cv",
          "coefficient of variation of tokens per expert with aux-free balancing (expert biases)",
          "the same with the load-balancing loss"),
    Claim("C16b", "With aux-free balancing, the LM loss is no worse than with the load-balancing loss.", AUX_FREE,
          "not_above", "balance", "aux-free/trained_loss", "aux-loss/trained_loss",
          "the upcycled MoE trained with aux-free balancing", "the same trained with the load-balancing loss",
          tolerance=NOT_ABOVE_TOLERANCE),
    Claim("C17", "MSG growth keeps the source's loss at init.", MSG, "equal", "msg", "msg/grown_loss", "source/loss",
          "MSG (2x width) right after growth, masks at 0", "the source", tolerance=1e-4),
    Claim("C17b", "After equal continued training, MSG is below FPI with the same shape.", MSG, "lower", "msg",
          "msg/trained_loss", "fpi/trained_loss", "MSG after continued training",
          "FPI (2x width) after the same training"),
    Claim("C18", "Continuing on code, training only the new blocks keeps the other domains' validation loss below "
          "full training of the same grown model.", LLAMA_PRO, "lower", "llama_pro", "new-blocks/other_loss",
          "all/other_loss", "the other domains' loss after training only the inserted blocks on code",
          "the same after training every parameter on code"),
)


def read_measurements(directories: list[Path], report=print) -> dict[str, dict[int, dict]]:
    """{experiment: {seed: values}} from experiment directories (several of one experiment are joined;
    a seed found twice is refused). A seed without measurements.json (unfinished) is left out, and said."""
    from lab.experiments.runner import MEASUREMENTS_FILE, read_json
    from lab.experiments.settings import read_settings

    found: dict[str, dict[int, dict]] = {}
    for directory in map(Path, directories):
        name = read_settings(directory)["experiment"]
        seeds = sorted(p for p in directory.glob("seed-*") if p.is_dir())
        if not seeds:
            raise LabError(f"{directory}: no seed-* directories")
        for seed_path in seeds:
            measured = read_json(seed_path / MEASUREMENTS_FILE)
            if measured is None or not isinstance(measured.get("values"), dict):
                report(f"{seed_path}: no {MEASUREMENTS_FILE} (unfinished), left out")
                continue
            seed = measured.get("seed")
            if seed in found.setdefault(name, {}):
                raise LabError(f"{seed_path}: seed {seed} of {name} is also in another directory")
            found[name][seed] = measured["values"]
    return found


def evaluate_claim(claim: Claim, seeds: dict[int, dict]) -> dict:
    """The claims-file entry of `claim` on the measurements of its experiment ({seed: values})."""
    order = sorted(seeds)
    missing = [f"seed {s}: {k}" for s in order for k in (claim.a_measurement, claim.b_measurement)
               if not isinstance(seeds[s].get(k), (int, float))]
    if missing:
        raise LabError(f"{claim.id}: measurements missing ({'; '.join(missing[:3])})")
    a_values = [float(seeds[s][claim.a_measurement]) for s in order]
    b_values = [float(seeds[s][claim.b_measurement]) for s in order]
    try:
        result = verdict(a_values, b_values, claim.kind, claim.tolerance)
    except LabError as e:
        raise LabError(f"{claim.id} ({claim.experiment}): {e}") from None
    entry = {"id": claim.id, "text": claim.text, "paper": claim.paper, "kind": claim.kind}
    if claim.kind in TOLERANCE_KINDS:
        entry["tolerance"] = claim.tolerance
    entry.update(a=claim.a, b=claim.b, experiment=claim.experiment, a_measurement=claim.a_measurement,
                 b_measurement=claim.b_measurement, seeds=order, a_values=a_values, b_values=b_values,
                 verdict=result)
    # Growth with the cyclic map and no noise has nothing random in it: every seed measures the same pair,
    # and the verdict is the sign of one deterministic gap, not a mean over replicates. Said, not hidden.
    entry["same_on_every_seed"] = len(set(a_values)) == 1 and len(set(b_values)) == 1
    return entry


def evaluate(directories: list[Path], report=print) -> dict:
    """The claims file's content for the experiments in `directories` (claims of experiments not given are
    left out, and said)."""
    measured = read_measurements(directories, report)
    absent = sorted({c.experiment for c in CLAIMS} - set(measured))
    if absent:
        ids = [c.id for c in CLAIMS if c.experiment in absent]
        report(f"not evaluated: {', '.join(ids)} (no directory of {', '.join(absent)})")
    from lab.experiments.settings import read_settings, stored_path

    claims = [evaluate_claim(c, measured[c.experiment]) for c in CLAIMS if c.experiment in measured]
    where: dict[str, list[str]] = {}
    for directory in map(Path, directories):
        where.setdefault(read_settings(directory)["experiment"], []).append(stored_path(str(directory)))
    return {"rule": RULE, "experiments": where, "claims": claims}


def summary_row(entry: dict) -> dict:
    """Mean a, mean b, mean difference d = b - a and its standard error, n: what the table prints."""
    a, b = entry["a_values"], entry["b_values"]
    d = [y - x for x, y in zip(a, b)]
    return {"id": entry["id"], "verdict": entry["verdict"], "mean_a": statistics.fmean(a),
            "mean_b": statistics.fmean(b), "mean_d": statistics.fmean(d),
            "se_d": statistics.stdev(d) / math.sqrt(len(d)), "n": len(d)}


def format_table(entries: list[dict]) -> str:
    lines = [f"{'claim':<6}{'verdict':<14}{'mean a':>11}{'mean b':>11}{'mean b-a':>12}{'s.e.':>11}{'n':>4}"]
    for e in entries:
        r = summary_row(e)
        lines.append(f"{r['id']:<6}{r['verdict']:<14}{r['mean_a']:>11.5f}{r['mean_b']:>11.5f}{r['mean_d']:>12.5f}"
                     f"{r['se_d']:>11.5f}{r['n']:>4}")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def format_markdown(entries: list[dict]) -> str:
    """The claims as a Markdown table (the README's): each side's mean ± sample standard deviation over
    seeds, and the paired difference b - a as mean ± standard error, which is what the rule judges."""
    lines = ["| claim | source | verdict | a: claimed lower (or equal) | b: compared with | b − a (mean ± s.e.) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        r = summary_row(e)
        seeds = e["seeds"]
        span = f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
        claim = f"{e['id']}: {e['text']}"
        if e["kind"] == "equal":
            claim += f" (within {e['tolerance']:g})"
        elif e["kind"] == "not_above":
            claim += f" (a at most {e['tolerance']:g} above b)"
        difference = f"{r['mean_d']:+.4f} ± {r['se_d']:.4f}"
        if e.get("same_on_every_seed"):
            difference = f"{r['mean_d']:+.4f} (the same on every seed: nothing random)"
        lines.append(f"| {claim} | {e['paper']} | **{e['verdict']}** | {e['a']}: {_spread(e['a_values'])} "
                     f"| {e['b']}: {_spread(e['b_values'])} | {difference} | {span} |")
    return "\n".join(lines)
