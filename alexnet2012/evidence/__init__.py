"""The paper's evidence beyond its error rates: Figures 3 and 4 from a trained run."""
