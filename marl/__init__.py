"""marlshare: multi-agent reinforcement learning built around parameter sharing."""

__version__ = "0.1.0"
