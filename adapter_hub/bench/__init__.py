"""Continual-learning benchmark runs: every strategy on the same tasks, model and budget, with
intervals, reports and a demo. The recipes that wire the components below them together.

  config.py        BenchConfig: tasks, strategies, budget; checked before anything is written
  cells.py         the (strategy, seed, order) cells of a run, and their packed per-example results
  driver.py        run_bench: plan, run every cell (here or on Ray), summarise; resumable
  cell.py          CellRunner: one cell trained, then scored in routed passes, sharing scores
  ray_executor.py  cells as Ray tasks, the registry as the one shared truth
  summary.py       metrics per cell and strategy, bootstrap intervals, paired differences
  report.py        Markdown + PNG reports, and the tables the CLI prints
  provenance.py    which code and which machine produced a cell
  demo.py          `adapter-hub demo`

Empty on purpose: `bench show/compare` and the web view read cells, summaries and reports without
importing torch, so nothing here is imported eagerly.
"""
