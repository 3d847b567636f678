"""Assets: what collectors report, normalised into rows with stable keys, and their history."""
