"""One adaptation end to end: calibrate, score, mask, train only the chosen part, evaluate, export."""
