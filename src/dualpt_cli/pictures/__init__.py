"""The pictures (PNG through matplotlib's Agg canvas) and the one-page HTML report."""
