"""`perennial evaluate`: a prequential comparison of continual-learning strategies on labeled streams.

``data`` builds a scenario (the simulator's pattern schedule, or any CSV/Parquet file of labeled
events) and ``scenarios`` names the built-in ones; ``strategies`` holds the alternatives, the
product's own learner among them; ``harness`` replays the stream through one strategy with label
delay; ``scores`` holds the figures (what was served, bootstrap intervals, card precision@k, the R
matrix, forgetting, adaptation time); ``report`` writes markdown and plots.
"""
