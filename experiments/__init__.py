"""Studies that reproduce the research toolkit's results on any model, and the datasets they use."""
