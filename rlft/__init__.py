"""rlft: reinforcement-learning fine-tuning of language models.

The core package holds the algorithm maths (``rlft.algorithms``) and the run configuration
(``rlft.config``). It depends on torch, numpy, pydantic and PyYAML only: it never imports ray or
vllm, so every function here runs and is tested without a cluster or an inference engine.
"""

__version__ = "0.1.0"
