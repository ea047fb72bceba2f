"""Figures: one module per figure, each a function drawing a PNG plus its data."""
