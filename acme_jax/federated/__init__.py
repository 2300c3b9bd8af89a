"""Federated algorithms over the devices, each a `FederatedAlgorithm`
(`algorithm.py`: `init` and an `apply` per round over explicit state) run
by one driver (`algorithm.run`: rounds, per-client diagnostics, ledger
records, resume): ACME's rounds (`acme.algorithm`, the device side run by a
`Clients`: in this process through the client engine, or on the devices
themselves over the network) and the baselines it is compared with
(`fedavg.py`, `fedper.py`, `heterofl.py`, `fjord.py`, `depthfl.py`, each
`algorithm(model, hp, params, devices)` on the hierarchical rounds of
`hierarchical.py`)."""
