"""Online reinforcement learning: rollouts, verifiable rewards, prompt data and the RL training loop.

Recipes (`recipes/grpo.py`, `recipes/ppo.py`) bring the update rule; everything else is shared here.
"""
