"""Free-text Safe Harbor identifier detection: recognisers, check digits and the name lexicon."""
