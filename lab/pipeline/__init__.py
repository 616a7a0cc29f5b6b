"""The EfficientScale pipeline (AquilaMoE 2.2): Preparation -> Scale-Up -> Scale-Out, with continued
pretraining after each step, from one recipe, and a from-scratch baseline of the final size.

- `recipe`: the pipeline recipe's schema and every check, made before any work (`load_pipeline`);
- `run`: the stages in order, growth and upcycling between them, resume (`run_pipeline`);
- `merge`: one metrics file for the whole pipeline, with cumulative steps, tokens and FLOPs;
- `report`: loss across each transition, steps to recover, final loss against the baseline.

`lab.flops.run_phases` turns a run's measured stages into the paper's Table 6 (`python -m lab savings --run`).

Layout of a pipeline run directory OUT:

    OUT/meta.json              the pipeline recipe, each stage's plan and (once done) its summary
    OUT/metrics.jsonl          every stage's records, merged (lab.pipeline.merge: `stage` label,
                               cumulative step/tokens/flops, `stage_step`, a `transition` record
                               at each stage boundary)
    OUT/pipeline_state.json    which stages are done (resume reads it)
    OUT/init/NAME/             the grown or upcycled model a later stage starts from (Hugging Face)
    OUT/stages/NAME/           each stage's own training run (lab.train: meta.json, metrics.jsonl,
                               checkpoints/, final/ = the stage's Hugging Face checkpoint)
    OUT/baseline/              the baseline's training run, with its own metrics.jsonl

    python -m lab pipeline --recipe recipes/efficientscale-tiny.yaml --out runs/efficientscale-tiny [--resume]
"""

from lab.pipeline.recipe import STAGE_KINDS, Pipeline, Stage, load_pipeline
from lab.pipeline.report import PipelineReport, pipeline_report
from lab.pipeline.run import run_pipeline

__all__ = ["STAGE_KINDS", "Pipeline", "PipelineReport", "Stage", "load_pipeline", "pipeline_report",
           "run_pipeline"]
