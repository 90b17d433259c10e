"""Scheduling: curricula over problems, and (later) the rollout bandit."""
