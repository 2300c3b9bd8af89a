"""ACME's loop with the cloud, every edge and every device as separate OS
processes talking over Flower (`experiments/networked.py`).

Each edge runs a SuperLink; its ServerApp (`edge.py`, over `link.py`) drives
its devices and the cloud, which are SuperNodes of that federation and
answer with the in-process stages (`device.py`, `cloud.py`, dispatched by
`handlers.py`). `launcher.py` starts and supervises them on one machine;
`tiers.py` gives the command for each tier on its own machine.
"""
