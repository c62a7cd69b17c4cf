"""Bench traces in: GSMTAP-SIM captures, apdu4j dumps and hex logs, decoded and stored."""
