"""Reward functions and verifiers (CPU, pure Python): the plug-in API for users' own rewards."""
