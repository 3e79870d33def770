"""phigate: mitmproxy addons that make an identity-aware, PHI-masking, audited gateway."""
