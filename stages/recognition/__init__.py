"""Recognition protocols of the evaluate stage (the tasks other than t2v / v2t retrieval).

    action.py            zero-shot accuracy by class-name prompts; the linear probe (pure numpy / scikit-learn)
    segment_accuracy.py  CrossTask scored as VT-TWINS reports it (segment accuracy, CTR; pure numpy)
"""
