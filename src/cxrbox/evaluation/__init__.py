"""Scoring predictions: IoU and RSNA metrics, the score-threshold sweep, model evaluation."""
