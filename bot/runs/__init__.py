"""Runs: schedules (when a chain is due), the run queue and its worker, notifications."""
