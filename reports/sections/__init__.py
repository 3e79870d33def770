"""The packet's sections: each runs its queries over the ledger and returns facts and tables."""
