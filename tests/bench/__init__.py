"""On-demand performance benchmarks of promptdrop: `python -m tests.bench [--quick] [--only NAME]`.

Not part of the test suite (no test_*.py names here, so pytest collects nothing). Every figure is
measured against the emulator over loopback, with the daemon as a real `promptdrop watch`
subprocess, and printed beside its limit or baseline from the same run.
"""
