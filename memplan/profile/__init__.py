"""Input: machine profiles (TOML), their seeded page populations, the bundled profiles and the profile writer."""
