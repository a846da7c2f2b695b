"""The training wing (torch): from a composed config to a finished run folder.

settings (validated, typed trainer settings) -> data -> models -> steps/graph (one optimizer
step) -> loop (the epochs) -> runner (one run, writing through `fitscope.rundir`).
"""
