"""The report wing (pandas, matplotlib; no torch): run folders on disk become a report.

settings -> frames (read through `fitscope.rundir`, diagnose) -> charts -> render -> build;
`diff` compares two runs, `callback` builds the report when a Hydra multirun ends, `cli` is
`python src/report.py`.
"""
