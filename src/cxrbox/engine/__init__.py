"""The training loop and what it owns: schedule, EMA, monitors, checkpoints, resume, run log."""
