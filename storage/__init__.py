"""ShaleDB object stores."""
