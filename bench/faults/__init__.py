"""The fault-injection suite (issue 14): real processes, one fault at a time, counted."""
