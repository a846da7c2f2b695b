"""The report wing (pandas, matplotlib; no torch): run folders on disk become a report.

settings -> frames (read through `fitscope.rundir`; diagnose, stats) -> charts, layer_charts,
stat_charts -> blocks (effects, stat_blocks) -> render, all driven by build; `diff` compares
two runs, `callback` builds the report when a Hydra multirun ends, `cli` is
`python src/report.py` (and `python -m fitscope.report`).
"""
