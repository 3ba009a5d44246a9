"""Configuration: TOML + environment -> validated frozen models."""
