"""Rule files and what they compile to: profiles, policy, role mapping, masking rules, one JSONPath dialect."""
