"""`facecast bench`: how fast the real pipeline runs on this machine, as a table and as JSON.

`run.py` measures one run (`run_once`), `command.py` drives the command (one run or
`--compare A B`), `monitor.py` samples CPU, memory and GPU, `system.py` describes the machine,
`report.py` prints, `args.py` declares the options. The JSON keys are documented in
docs/PERFORMANCE.md.
"""
