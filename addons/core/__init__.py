"""What every addon shares: the flow context, refusals, the fail-closed guard, start-up and readiness."""
