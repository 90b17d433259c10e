"""Reward functions (a registry by name) and the composite weighted reward."""

from reasonloop.tasks.rewards import (  # noqa: F401 - registration
    answers,
    ccvr,
    math_verify_reward,
    safety,
    science,
    self_correction,
    shaping,
    units,
    veritime,
)
from reasonloop.tasks.rewards.composite import CompositeReward, RewardResult
from reasonloop.tasks.rewards.registry import REWARDS, get_reward, register_reward

__all__ = ["REWARDS", "CompositeReward", "RewardResult", "get_reward", "register_reward"]
