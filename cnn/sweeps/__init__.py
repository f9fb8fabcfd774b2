"""Sweeps (`python -m cnn.sweep`): many `cnn.train` runs over a grid or a random search of flags.

space.py: the --grid syntax and the trials; store.py: the sweep directory; slots.py: each running
trial's share of the machine; runner.py: the trial processes; table.py: the results table;
slurm.py: a Slurm job-array script; driver.py: a whole sweep.
"""
