"""bfclab from Python: a target, bfc and layerwise, one kernel baseline, their test errors and
per-level feature errors.  ``python examples/api.py`` (about 15 s on 2 cores); the test suite
runs it with ``BFCLAB_EXAMPLE_TINY=1`` (a tiny target, a few seconds)."""
import os

import bfclab

cfg = bfclab.RunConfig()
if os.environ.get("BFCLAB_EXAMPLE_TINY"):
    bfclab.apply_mapping(cfg, {"target": {"d": 8, "widths": [2], "mc_samples": 4000},
                               "data": {"n_train": 2000, "n_test": 1000}, "train": {"steps_per_stage": 150}})
else:
    bfclab.apply_mapping(cfg, {"data": {"n_train": 5000, "n_test": 5000}, "train": {"steps_per_stage": 1500}})
target = bfclab.Target.from_config(cfg.target)
x, y, x_test, y_test = bfclab.make_data(target, cfg.data, cfg.seed)
for method in ("bfc", "layerwise"):
    cfg.method = method
    r = bfclab.train(cfg, target=target, progress=False, log=lambda line: None).result
    print(f"{method:10s} test nMSE {r.error:.3e}  feature error", {l: round(v, 4) for l, v in r.feature_error.items()})
krr = bfclab.make_estimator("krr-poly", device="cpu", seed=cfg.seed, target=target).fit(x, y)
print(f"{'krr-poly':10s} test nMSE {bfclab.nmse(krr.predict(x_test), y_test, target.var_g):.3e}")
