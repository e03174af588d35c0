"""The measurements of benchmarks/gpu_check.py, one module per row of its table: setup.py
(scale, assets, the paper config made runnable), rows.py (a row, the table, a failed row),
paper_step.py (rows 1 and 5, timed from inside the fit by probe.py), simulation.py (2),
precompute.py (3), ddp.py (4), fast_paths.py (6). gpu_check.py is the command line that
runs them in order."""
