"""Hostile input and faults (issue 11): fuzzed input folders and kill -9 during jobs."""
