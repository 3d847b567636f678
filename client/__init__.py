"""The parts of the operator's tools that need no Django: rendering, the thin client."""
