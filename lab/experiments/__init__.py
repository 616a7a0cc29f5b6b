"""The papers' experiments.

- `growth_table1`, `reference_runs`: Table 1 at toy scale and the reference runs of data/runs
  (`python -m lab.experiments.NAME`);
- seeded experiments (`python -m lab experiments run NAME --seeds N --out DIR`): `table1`, `table2`,
  `upcycle`, `pipeline` (AquilaMoE's claims), `balance`, `msg`, `llama_pro` (aux-loss-free balancing, masked
  structural growth, LLaMA-Pro's block training), each a `Settings` dataclass, its runs per seed and its
  measurements; `catalog` names them, `runner` runs them resumably, `settings`, `training`, `evaluation`
  and `readings` are what they share;
- `claims`: the claims C1-C18, the fixed rule that judges them, the claims file
  (`python -m lab experiments claims DIR... --json OUT`); `export`: an experiment without its weights.
"""
