"""The bootstrap steps, in order. See base.py for what a step is."""
