"""The edge: a ServerApp driving its devices and the cloud (acme_jax.networked.edge)."""
from flwr.serverapp import ServerApp

app = ServerApp()


@app.main()
def main(grid, context):
  from acme_jax.networked import edge
  edge.serve(grid, context.run_config)
