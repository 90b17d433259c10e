"""Inference strategies that spend extra calls where a first answer is uncertain."""
