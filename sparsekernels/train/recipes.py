"""Named settings for the digits proof: the tests and the accuracy table in
the README (``scripts/digits_methods.py``) run exactly these.

Every recipe starts from the same dense ``digits_cnn`` (``DENSE``) and
fine-tunes ``FINETUNE`` epochs unless it says otherwise.
"""
DENSE = dict(arch="digits_cnn", dataset="digits", pretrain_epochs=15, seed=0)
FINETUNE = dict(num_epochs=6, lr=0.01)

DIGITS_RECIPES = {
    "1xn-50": dict(method="1xn", N=4, pr_target=0.5),
    "1xn-75": dict(method="1xn", N=4, pr_target=0.75),
    "1xn-75-rearranged-cubic": dict(method="1xn", N=4, pr_target=0.75, rearrange=True,
                                    inter_func="cubic", end_epoch=4),
    "stripe-50": dict(method="stripe", pr_target=0.5),
    "pattern-70": dict(method="pattern", pr_target=0.7, num_patterns=4),
    # GSM (10x): 15 epochs instead of the paper's hundreds, so the weights it
    # stops feeding need a stronger decay to reach ~0 before the final prune.
    "gsm-90": dict(method="gsm", pr_target=0.9, lr=0.03, weight_decay=5e-2, num_epochs=15),
    "slimming-40": dict(method="slimming", pr_target=0.4),
    "magnitude-90": dict(method="magnitude", pr_target=0.9),
    "l1_filter-50-scratchB": dict(method="l1_filter", pr_target=0.5, scratch="B"),
    "dppnet": dict(method="dppnet", pr_target=0.5),
}


def recipe(name: str, **overrides) -> dict:
    """DENSE + FINETUNE + the named recipe + ``overrides`` (a RunConfig's kwargs)."""
    if name not in DIGITS_RECIPES:
        raise ValueError(f"recipe: unknown {name!r}; known: {sorted(DIGITS_RECIPES)}")
    return {**DENSE, **FINETUNE, **DIGITS_RECIPES[name], **overrides}
