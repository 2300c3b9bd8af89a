"""The cloud-edge-device hierarchy: who sits under whom (`topology`), and
every byte that crosses it (`ledger`, `transfers`)."""
