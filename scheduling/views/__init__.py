"""HTML views of schedules and runs, split by area: schedules.py and runs.py."""
