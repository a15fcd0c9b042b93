"""Federation: instance identity and keys, signed requests, catalog sync, credentials."""
