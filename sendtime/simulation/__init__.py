"""Simulated worlds with known truth, real people's rhythms and replayed trials, and the judges
that score the product on them (``sendtime simulate``, ``suite``, ``replay``, ``evaluate
--world``). Beside the product, not in it: features, training, serving and the nightly never
import this package (checked by .importlinter)."""
