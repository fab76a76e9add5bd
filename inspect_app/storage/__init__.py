"""Persistence: the database is the only state shared by service processes, workers and the UI."""
