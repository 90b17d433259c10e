"""Units of work (engines, rewards, recipes, scheduling): plain functions, thin @task wrappers."""
