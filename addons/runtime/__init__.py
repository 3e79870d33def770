"""Running the chain: the lean engine, the launcher and the worker supervisor."""
