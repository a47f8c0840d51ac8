"""The daemon process: wiring, lifecycle, sd_notify and metrics."""
