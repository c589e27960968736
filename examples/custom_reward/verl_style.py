"""A reward written for verl (``custom_reward_function``), used by rlft as written (``foreign.yaml``).

rlft recognises verl's form by its ``solution_str`` parameter and calls it once per sample, by
keyword: ``data_source`` (the row's ``data_source`` column when ``data.metadata_fields`` lists it,
else ``""``), ``solution_str`` (the completion), ``ground_truth`` (the answer), ``extra_info`` (the
other fields and ``prompt``, updated with the row's own ``extra_info`` dict) and the config's
``params`` (verl's ``reward_kwargs``). A dict's ``score`` is the reward; its other keys are logged.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, format_score=0.0, score=1.0):
    """GSM8K-style: ``score`` for the right answer, ``format_score`` for a wrong number, else 0."""
    first = solution_str.strip().split("\n")[0].strip()
    if first == ground_truth:
        return {"score": score, "acc": 1.0}
    return {"score": format_score if first.lstrip("-").isdigit() else 0.0, "acc": 0.0}
