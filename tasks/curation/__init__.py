"""Data curation over any problems table (Dr. SCI, SPECS §6): pure functions over problem rows,
each returning what it kept and, for what it dropped, why. flows/drsci.py runs them as a flow."""
