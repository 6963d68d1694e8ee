"""``dualpt compare``: a resumable grid of real train + eval cells and its aggregation."""
