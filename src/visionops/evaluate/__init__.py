"""``visionops eval``: scores on a split, figures and ``report.html``."""
