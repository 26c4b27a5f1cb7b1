"""Prefect flows, deployments and tasks that schedule the salesml jobs."""
