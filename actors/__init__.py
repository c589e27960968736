"""Ray actors, one role per class: rollout, learner, reward, weight sync, and the group helper."""
