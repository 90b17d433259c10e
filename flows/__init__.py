"""Prefect flows, deployments and the `reasonloop` command line."""
