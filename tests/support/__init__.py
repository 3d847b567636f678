"""Helpers the tests share: factories, fleets, waiting, blob-store servers."""
