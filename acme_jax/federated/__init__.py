"""Federated algorithms over the devices: ACME's rounds (`acme.py`), each an
`init` and an `apply` per round over explicit state, with the device side of
a round run by a `Clients` (in this process through the client engine, or
on the devices themselves over the network)."""
