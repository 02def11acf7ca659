"""Storage: the store protocol, bar aggregation, and the built-in memory and Redis stores."""
