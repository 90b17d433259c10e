"""Data recipes: one file each, pure functions from a config to rows."""
