"""vitalwire."""
