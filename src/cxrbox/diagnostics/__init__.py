"""`cxrbox diagnose`: the stall checklist on cxrbox's own model and data."""
