"""Generation engines behind one interface (see base.py). Importing this package registers the
built-in engines; heavy backends (vLLM, HTTP) import their dependencies only when constructed."""

from reasonloop.tasks.engines import fake, openai_engine, transformers_engine, vllm_engine  # noqa: F401
from reasonloop.tasks.engines.base import Completion, Engine, SamplingParams, make_engine

__all__ = ["Completion", "Engine", "SamplingParams", "make_engine"]
