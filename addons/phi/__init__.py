"""PHI handling: masking operators, the masking engine, reversible tokens and free-text detection."""
