"""Federated algorithms over the devices, each an `init` and an `apply` per
round over explicit state: ACME's rounds (`acme.py`, the device side run by
a `Clients`: in this process through the client engine, or on the devices
themselves over the network) and the baselines it is compared with
(`fedavg.py`, `fedper.py`, `heterofl.py`, `fjord.py`, `depthfl.py`, on the
hierarchical rounds of `hierarchical.py`)."""
