"""Policy models: load any Hugging Face causal LM, or build the tiny local one."""
