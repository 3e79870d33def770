"""Reading a request: its canonical form, GraphQL bodies, and collection-name lookup."""
